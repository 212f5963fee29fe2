"""The simulator's file contracts: band names and units of every GeoTIFF it writes, and class codes.

The stack, static and class bands are the ones a real run reads (:mod:`ssm_spark.sources.stacks`);
the truth and hidden bands are kept apart under ``truth/``. The units go into each band's GDAL
metadata (:func:`ssm_spark.sources.simulate.writers.write_tif`).
"""

from __future__ import annotations

__all__ = ["STACK_BANDS", "STATIC_BANDS", "CLASS_BANDS", "TRUTH_BANDS", "HIDDEN_BANDS", "UNITS",
           "MASKED_LANDCOVER", "KOPPEN_CODES"]

STACK_BANDS: tuple[str, ...] = ("vv_db", "vh_db", "incidence_deg", "ndvi", "lst_k", "precip_mm")
STATIC_BANDS: tuple[str, ...] = ("clay_pct", "sand_pct", "bulk_density", "elevation_m", "slope_deg")
CLASS_BANDS: tuple[str, ...] = ("landcover", "climate")
TRUTH_BANDS: tuple[str, ...] = ("ssm",)
HIDDEN_BANDS: tuple[str, ...] = ("porosity", "residual", "field_capacity", "wilting_point", "ks")
UNITS: dict[str, str] = {
    "vv_db": "dB", "vh_db": "dB", "incidence_deg": "degree", "ndvi": "1", "lst_k": "K", "precip_mm": "mm",
    "clay_pct": "%", "sand_pct": "%", "bulk_density": "g/cm3", "elevation_m": "m", "slope_deg": "degree",
    "landcover": "ESA WorldCover code", "climate": "Koppen-Geiger class (Beck et al. 2018)",
    "ssm": "m3/m3", "porosity": "m3/m3", "residual": "m3/m3", "field_capacity": "m3/m3",
    "wilting_point": "m3/m3", "ks": "1",
}

#: Land cover with no retrieval (masked).
MASKED_LANDCOVER: dict[int, str] = {50: "built-up", 70: "snow/ice", 80: "water"}
#: Koppen-Geiger classes 1-30 in the numbering of Beck et al. (2018); index 0 is nodata.
KOPPEN_CODES: tuple[str, ...] = (
    "", "Af", "Am", "Aw", "BWh", "BWk", "BSh", "BSk", "Csa", "Csb", "Csc", "Cwa", "Cwb", "Cwc", "Cfa",
    "Cfb", "Cfc", "Dsa", "Dsb", "Dsc", "Dsd", "Dwa", "Dwb", "Dwc", "Dwd", "Dfa", "Dfb", "Dfc", "Dfd",
    "ET", "EF",
)
