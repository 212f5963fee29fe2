"""Environments and masks: known answers from the tables of docs/contracts.md (Environments)."""

import numpy as np

from ssm_spark.environments import MASK_BITS, climate_main, environment, landcover_group, mask_bits
from ssm_spark.physics.qc import QC


def test_environment_keys():
    lc = np.array([10, 95, 20, 30, 100, 40, 60, 90, 50, 70, 80, 0, 11])
    cl = np.array([14, 14, 5, 20, 29, 8, 0, 8, 8, 8, 8, 8, 8])
    assert environment(lc, cl).tolist() == ["forest_C", "forest_C", "shrubgrass_B", "shrubgrass_D", "shrubgrass_E",
                                            "cropland_C", "bare", "wetland_C", None, None, None, None, None]
    assert environment([40, 60]).tolist() == ["cropland", "bare"]  # no climate: the group alone
    assert climate_main([0, 1, 3, 4, 7, 8, 16, 17, 28, 29, 30, 31, np.nan]).tolist() == \
        ["", "A", "A", "B", "B", "C", "C", "D", "D", "E", "E", "", ""]
    assert landcover_group([10, 40, 50, np.nan]).tolist() == ["forest", "cropland", "", ""]


def test_mask_bits():
    bits = mask_bits([80, 50, 70, 40, 40, 40], lst_k=[290, 290, 290, 272.0, np.nan, 290],
                     slope_deg=[0, 0, 0, 0, 0, 30], max_slope_deg=20)
    assert bits.tolist() == [QC.MASKED_WATER, QC.MASKED_URBAN, QC.MASKED_SNOW_ICE, QC.FROZEN, 0, QC.STEEP_SLOPE]
    assert all(int(b) & MASK_BITS for b in bits[[0, 1, 2, 3, 5]])
    assert mask_bits([40], slope_deg=[30]).tolist() == [0]  # no threshold, no slope mask
