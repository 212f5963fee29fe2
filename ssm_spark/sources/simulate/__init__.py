"""The built-in simulator: a deterministic, physically based synthetic region with known truth.

:func:`simulate` writes, for the configured region of the configured grid, the same files a real run
would read (feature stacks per date and tile, static layers, ISMN station files), plus the truth kept
apart (``truth/``) for tests and evaluation. Everything comes from one seed
(``np.random.default_rng``): the same configuration gives byte-identical files.

Output layout under ``output/``::

    stacks/<YYYY-MM-DD>/<grid>_<tile_row>_<tile_col>.tif   float32, NaN nodata:
                                                            vv_db, vh_db, incidence_deg, ndvi, lst_k, precip_mm
    static/<grid>_<tr>_<tc>.tif                             float32, NaN nodata:
                                                            clay_pct, sand_pct, bulk_density, elevation_m, slope_deg
    static/<grid>_<tr>_<tc>_classes.tif                     uint8, nodata 0: landcover, climate
    insitu/<NETWORK>/<STATION>/*.stm, *_static_variables.csv   ISMN "header_values" format
    truth/<YYYY-MM-DD>/<grid>_<tr>_<tc>.tif                 float32 ssm (m3/m3) at the overpass time
    truth/static/<grid>_<tr>_<tc>.tif                       float32 hidden soil and surface parameters:
                                                            porosity, residual, field_capacity, wilting_point, ks
    truth/stations.csv                                      each station's true cell, environment and errors
    simulation.json                                         provenance: config hash, seed, grid, window,
                                                            dates, overpasses, counts

The model, one region-wide numpy step per day (the region is a window of the grid; its climate and
terrain gradients span the window whatever its size, so a 64 x 64 test region holds the same classes
as the 512 x 512 demo), one module per role:

* :mod:`.world` -- the **static fields**: terrain, Koppen-Geiger climate, ESA WorldCover land cover,
  soil texture and bulk density, the hidden roughness ``ks`` and the per-cell model parameters; the
  random streams and random-field helpers.
* :mod:`.water` -- the daily bucket **water balance** of the 0-5 cm layer (storms, snow, irrigation,
  evaporation, drainage, the deep layer) and the **vegetation** (NDVI seasons, VWC).
* :mod:`.radar` -- the **backscatter** of each date: Dobson permittivity, Oh (2002) at the local
  incidence angle, a Water Cloud Model, clutter, speckle and the noise floor; the pass geometry.
* :mod:`.stations` -- **stations** stratified by environment and their hourly ISMN files with
  offsets, noise, flags and gaps; ``truth/stations.csv``.
* :mod:`.writers` -- the tile GeoTIFFs; :mod:`.contracts` -- band names, units and class codes.
* :mod:`.run` -- :func:`simulate` (the daily loop and the manifest), :func:`iter_dates`,
  :func:`truth_table`.

References
----------
Oh, Y., Sarabandi, K. and Ulaby, F. T. (2002), IEEE TGRS 40(6), 1348-1355. Dobson, M. C. et al.
(1985), IEEE TGRS GE-23(1), 35-46. Attema, E. P. W. and Ulaby, F. T. (1978), Radio Science 13(2),
357-364. Jackson, T. J. et al. (2004), Remote Sens. Environ. 92, 475-482. Beck, H. E. et al. (2018),
Present and future Koppen-Geiger climate classification maps at 1-km resolution, Sci. Data 5, 180214
(class numbering 1-30). Dorigo, W. A. et al. (2013), Vadose Zone J. 12(3) (ISMN quality flags).
"""

from __future__ import annotations

from ssm_spark.environments import LANDCOVER_GROUPS
from ssm_spark.environments import climate_main as koppen_main
from ssm_spark.sources.simulate.contracts import (
    CLASS_BANDS,
    HIDDEN_BANDS,
    KOPPEN_CODES,
    MASKED_LANDCOVER,
    STACK_BANDS,
    STATIC_BANDS,
    TRUTH_BANDS,
)
from ssm_spark.sources.simulate.radar import overpass
from ssm_spark.sources.simulate.run import SimulationSummary, iter_dates, simulate, truth_table
from ssm_spark.sources.simulate.world import environment, porosity, residual_water

__all__ = [
    "simulate",
    "SimulationSummary",
    "STACK_BANDS",
    "STATIC_BANDS",
    "CLASS_BANDS",
    "TRUTH_BANDS",
    "HIDDEN_BANDS",
    "LANDCOVER_GROUPS",
    "MASKED_LANDCOVER",
    "KOPPEN_CODES",
    "koppen_main",
    "environment",
    "porosity",
    "residual_water",
    "overpass",
    "iter_dates",
    "truth_table",
]
