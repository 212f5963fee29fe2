"""Environments: (land-cover group from ESA WorldCover, Koppen-Geiger main class), and the masks.

An environment key is ``"<group>_<climate>"`` (e.g. ``"cropland_C"``), or the group alone where no
climate is known (a user table without it). Groups (docs/contracts.md, "Environments"):

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



# Lookup tables: WorldCover code (0..255) -> group index (0 = none); Koppen class (0..30) -> main index.
_GROUP_INDEX = np.zeros(256, dtype=np.int64)
for _code, _group in LANDCOVER_GROUPS.items():
    _GROUP_INDEX[_code] = GROUPS.index(_group) + 1
_MAIN_INDEX = np.array([0] + [1] * 3 + [2] * 4 + [3] * 9 + [4] * 12 + [5] * 2, dtype=np.int64)
_MAIN_LETTER = np.array([""] + list(CLIMATE_MAIN), dtype=object)
# environment key of (group index, main index); None where there is no group
_ENV_KEYS = np.array([None] + [None] * len(CLIMATE_MAIN) + [
    g if m == "" else f"{g}_{m}" for g in GROUPS for m in ("",) + CLIMATE_MAIN], dtype=object)


def _codes(a: npt.ArrayLike, n: int) -> np.ndarray:
    """Integer codes of an array that may hold NaN or out-of-range values (-> 0)."""
    f = np.asarray(a, dtype="f8")
    c = np.where(np.isfinite(f), f, 0).astype(np.int64)
    return np.where((c >= 0) & (c < n), c, 0)


def climate_main(climate: npt.ArrayLike) -> np.ndarray:
    """Main Koppen-Geiger class letter of classes 1-30 ("" for 0/nodata or out of range)."""
    return _MAIN_LETTER[_MAIN_INDEX[_codes(climate, 31)]]


def landcover_group(landcover: npt.ArrayLike) -> np.ndarray:
    """Land-cover group of WorldCover codes ("" for masked classes, nodata and unknown codes)."""
    return np.array([""] + list(GROUPS), dtype=object)[_GROUP_INDEX[_codes(landcover, 256)]]


def environment(landcover: npt.ArrayLike, climate: npt.ArrayLike | None = None) -> np.ndarray:
    """Environment keys ``"<group>_<climate main>"`` (or the group alone without climate).

    Cells with no group (masked classes, nodata) get None. Vectorised through lookup tables (this
    runs on every pixel of every tile).
    """
    g = _GROUP_INDEX[_codes(landcover, 256)]
    m = _MAIN_INDEX[_codes(climate, 31)] if climate is not None else np.zeros_like(g)
    return _ENV_KEYS[np.where(g > 0, g * (len(CLIMATE_MAIN) + 1) + m, 0)]


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
