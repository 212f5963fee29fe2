"""Environments: (land-cover group from ESA WorldCover, Koppen-Geiger main class), and the masks.

An environment key is ``"<group>_<climate>"`` (e.g. ``"cropland_C"``), or the group alone where no
climate is known (a user table without it). Groups (DESIGN.md):

=============  ====================  =========================================
group          WorldCover codes      classes
=============  ====================  =========================================
forest         10, 95                tree cover, mangroves
shrubgrass     20, 30, 100           shrubland, grassland, moss and lichen
cropland       40                    cropland
bare           60                    bare / sparse vegetation
wetland        90                    herbaceous wetland
=============  ====================  =========================================

Masked, no retrieval: built-up (50), snow and ice (70), permanent water (80), and frozen soil
(LST < 273.15 K), each with its QC bit. Koppen-Geiger classes 1-30 (Beck et al. 2018 legend) map to
main classes: 1-3 A (tropical), 4-7 B (arid), 8-16 C (temperate), 17-28 D (cold), 29-30 E (polar).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ssm_spark.physics.qc import QC, QC_DTYPE

LANDCOVER_GROUPS: dict[int, str] = {10: "forest", 95: "forest", 20: "shrubgrass", 30: "shrubgrass", 100: "shrubgrass",
                                    40: "cropland", 60: "bare", 90: "wetland"}
MASKED_LANDCOVER: dict[int, QC] = {50: QC.MASKED_URBAN, 70: QC.MASKED_SNOW_ICE, 80: QC.MASKED_WATER}
FROZEN_LST_K = 273.15
GROUPS = ("forest", "shrubgrass", "cropland", "bare", "wetland")
CLIMATE_MAIN = ("A", "B", "C", "D", "E")

# Koppen-Geiger class (1..30) -> main class letter; index 0 (nodata) -> "".
_KG_MAIN = np.array([""] + ["A"] * 3 + ["B"] * 4 + ["C"] * 9 + ["D"] * 12 + ["E"] * 2, dtype=object)


def climate_main(climate: npt.ArrayLike) -> np.ndarray:
    """Main Koppen-Geiger class letter of classes 1-30 ("" for 0/nodata or out of range)."""
    c = np.asarray(climate)
    c = np.where(np.isfinite(c.astype("f8")), c, 0).astype(np.int64)
    c = np.where((c >= 1) & (c <= 30), c, 0)
    return _KG_MAIN[c]


def landcover_group(landcover: npt.ArrayLike) -> np.ndarray:
    """Land-cover group of WorldCover codes ("" for masked classes, nodata and unknown codes)."""
    lc = np.asarray(landcover).astype("f8")
    out = np.full(lc.shape, "", dtype=object)
    for code, group in LANDCOVER_GROUPS.items():
        out[lc == code] = group
    return out


def environment(landcover: npt.ArrayLike, climate: npt.ArrayLike | None = None) -> np.ndarray:
    """Environment keys ``"<group>_<climate main>"`` (or the group alone without climate).

    Cells with no group (masked classes, nodata) get None.
    """
    group = landcover_group(landcover)
    if climate is None:
        env = group.copy()
    else:
        main = climate_main(climate)
        env = np.where(main != "", group + "_" + main, group)
    return np.where(group == "", None, env).astype(object)


def mask_bits(landcover: npt.ArrayLike, lst_k: npt.ArrayLike | None = None, slope_deg: npt.ArrayLike | None = None,
              max_slope_deg: float | None = None) -> np.ndarray:
    """QC mask bits of cells: water, built-up, snow/ice, frozen (LST < 273.15 K), steep slope.

    Missing LST or slope (NaN) sets no bit: absence of evidence is not a mask.
    """
    lc = np.asarray(landcover).astype("f8")
    bits = np.zeros(lc.shape, dtype=QC_DTYPE)
    for code, flag in MASKED_LANDCOVER.items():
        bits |= np.where(lc == code, int(flag), 0).astype(QC_DTYPE)
    if lst_k is not None:
        with np.errstate(invalid="ignore"):
            bits |= np.where(np.asarray(lst_k, dtype="f8") < FROZEN_LST_K, int(QC.FROZEN), 0).astype(QC_DTYPE)
    if slope_deg is not None and max_slope_deg is not None:
        with np.errstate(invalid="ignore"):
            bits |= np.where(np.asarray(slope_deg, dtype="f8") > max_slope_deg, int(QC.STEEP_SLOPE), 0).astype(QC_DTYPE)
    return bits


#: QC bits that mean "no retrieval here".
MASK_BITS = int(QC.MASKED_WATER | QC.MASKED_URBAN | QC.MASKED_SNOW_ICE | QC.FROZEN | QC.STEEP_SLOPE)
