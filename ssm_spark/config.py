"""Typed configuration: pydantic models loaded from YAML files in ``conf/`` plus ``--set`` overrides.

Files are deep-merged in the order given (a later file overrides an earlier one), then each
``key=value`` override is applied (the value is parsed as YAML, so ``--set spark.master='local[1]'``,
``--set simulate.n_stations=40`` and ``--set region.bbox='[1, 2, 3, 4]'`` do what they look like).
Unknown keys and bad values fail at start-up with a :class:`~ssm_spark.errors.ConfigError` naming
the key and the file (or the override) it came from.

:meth:`Config.hash` is a stable hash of the resolved configuration for provenance: equal resolved
configurations hash equally, whatever files and overrides produced them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer,
                      model_validator)

from ssm_spark.errors import ConfigError
from ssm_spark.grid import Grid
from ssm_spark.sources.earthengine.settings import EarthEngineConfig

log = logging.getLogger(__name__)

#: Repository root when running from a checkout (editable install); conf/ and jars/ live there.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: The same file as package data (``ssm_spark/conf/``, copied from ``conf/`` when the wheel is built).
PACKAGED_CONFIG = Path(__file__).resolve().parent / "conf" / "default.yaml"


def in_checkout() -> bool:
    """True when running from the project's source tree (``setup.py`` and ``conf/`` beside the package)."""
    return (PROJECT_ROOT / "setup.py").is_file() and (PROJECT_ROOT / "conf" / "default.yaml").is_file()


#: ``conf/default.yaml`` of the checkout, else the installed package's copy: the same defaults and
#: config hash either way (tests/test_packaging.py).
DEFAULT_CONFIG = PROJECT_ROOT / "conf" / "default.yaml" if in_checkout() else PACKAGED_CONFIG


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class GridConfig(_Strict):
    """The product grid: ``ease2_<1|3|9|36>km`` or ``geo_<deg>deg``, and the tile size in cells."""

    name: str = "ease2_1km"
    tile_size: int = Field(256, ge=16, le=4096)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        Grid.from_name(v)  # raises GridError (a ValueError) with the accepted forms
        return v

    def build(self) -> Grid:
        return Grid.from_name(self.name, self.tile_size)


class RegionConfig(_Strict):
    """A region of the grid: either ``center`` + ``size_km`` or a lon/lat ``bbox``.

    ``center`` + ``size_km`` gives a window of whole cells centred on the point, snapped to tile
    corners when ``snap_to_tiles`` (the demo region: 512 x 512 km on EASE-Grid 2.0 1 km = 2 x 2 tiles).
    """

    name: str = "demo"
    center: Optional[tuple[float, float]] = (2.5, 44.0)
    size_km: Optional[tuple[float, float]] = (512.0, 512.0)
    bbox: Optional[tuple[float, float, float, float]] = None
    snap_to_tiles: bool = True

    @model_validator(mode="after")
    def _one_way(self) -> "RegionConfig":
        if self.bbox is not None:
            lon0, lat0, lon1, lat1 = self.bbox
            if not (-180 <= lon0 < lon1 <= 180 and -90 <= lat0 < lat1 <= 90):
                raise ValueError(f"bbox must be [lon_min, lat_min, lon_max, lat_max] in degrees, got {self.bbox}")
        elif self.center is None or self.size_km is None:
            raise ValueError("give either bbox or both center and size_km")
        else:
            lon, lat = self.center
            if not (-180 <= lon <= 180 and -90 <= lat <= 90):
                raise ValueError(f"center must be [lon, lat] in degrees, got {self.center}")
            if min(self.size_km) <= 0:
                raise ValueError(f"size_km must be positive, got {self.size_km}")
        return self

    def window(self, grid: Grid):
        """The region's window (global cells) on ``grid``."""
        if self.bbox is not None:
            return grid.window_for_bbox(*self.bbox)
        cell_km = grid.cell / 1000.0 if not grid.is_geographic else grid.cell * 111.32
        n_rows = max(1, int(round(self.size_km[1] / cell_km)))
        n_cols = max(1, int(round(self.size_km[0] / cell_km)))
        return grid.window_around(self.center[0], self.center[1], n_rows, n_cols, self.snap_to_tiles)


class JarsConfig(_Strict):
    """Where the Sedona jars come from.

    ``local``: the jars fetched by ``python -m ssm_spark.jars fetch`` into ``dir`` (default: the
    project's ``jars/``), passed with ``spark.jars``. ``packages``: Maven coordinates passed with
    ``spark.jars.packages`` (the cluster resolves them). ``cluster``: the jars are already installed
    on the cluster (Databricks libraries, ``$SPARK_HOME/jars``); nothing is added.
    """

    mode: Literal["local", "packages", "cluster"] = "local"
    dir: Optional[str] = None


class SparkConfig(_Strict):
    """Spark session settings. Resources (memory, cores) belong to spark-submit or the cluster."""

    master: Optional[str] = "local[2]"
    app_name: str = "ssm-spark"
    log_level: Literal["ALL", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF"] = "WARN"
    arrow_batch_size: int = Field(50_000, ge=100)
    shuffle_partitions: int = Field(8, ge=1)
    jars: JarsConfig = JarsConfig()
    conf: dict[str, str] = Field(default_factory=dict)

    @field_validator("conf", mode="before")
    @classmethod
    def _stringify(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): (str(x).lower() if isinstance(x, bool) else str(x)) for k, x in v.items()}
        return v


class SimulateConfig(_Strict):
    """The built-in physically based simulator (the embedded demo region).

    See :mod:`ssm_spark.sources.simulate` for the model behind each setting.
    """

    seed: int = 20250615
    start: dt.date = dt.date(2024, 4, 1)
    end: dt.date = dt.date(2024, 9, 30)
    revisit_days: int = Field(6, ge=1)
    n_stations: int = Field(150, ge=0)
    looks: float = Field(4.4, gt=0, description="equivalent number of looks of the speckle of one native "
                         "GRD pixel (Sentinel-1 IW GRDH: 4.4); a grid cell averages (cell / "
                         "grd_resolution_m)^2 of them")
    noise_floor_db: float = Field(-25.0, le=0, description="noise-equivalent sigma0 (NESZ), added as power")
    grd_resolution_m: float = Field(20.0, gt=0, description="spatial resolution of the native GRD product (m): "
                                    "sets how many independent looks a grid cell averages")
    clutter_db: float = Field(0.5, ge=0, description="standard deviation (dB) of unmodelled multiplicative "
                              "variability per cell and date (sub-cell heterogeneity, dew, wind, row "
                              "direction), lognormal, partly correlated between VV and VH")
    precip_window_days: int = Field(5, ge=1, description="days summed into the antecedent precip_mm band "
                                    "(the date itself and the days before it)")
    spinup_days: int = Field(30, ge=0, description="days the soil water balance runs before 'start' so that "
                             "the first date does not depend on the initial state")
    networks: tuple[str, ...] = Field(("SIMNET_A", "SIMNET_B"), min_length=1,
                                      description="in-situ network names (stations split west to east)")
    min_stations_per_env: int = Field(10, ge=1, description="stations wanted in every retrievable "
                                      "environment (enough for station-grouped 5-fold CV); environments "
                                      "too small for it get none")

    @field_validator("networks")
    @classmethod
    def _network_names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        import re

        for name in v:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
                raise ValueError(f"network name {name!r}: use letters, digits, '_' and '-' only (it names "
                                 "folders and ISMN file names)")
        if len(set(v)) != len(v):
            raise ValueError(f"network names must be unique, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _dates(self) -> "SimulateConfig":
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self


class IngestConfig(_Strict):
    """Reading feature stacks."""

    band_aliases: dict[str, str] = Field(default_factory=dict, description="other band names -> the stack band names of docs/contracts.md, e.g. {VV: vv_db}")
    max_slope_deg: Optional[float] = Field(20.0, ge=0, le=90, description="steeper cells get the STEEP_SLOPE mask; null: no slope mask")


class InSituConfig(_Strict):
    """Reading ISMN in-situ data."""

    max_depth_m: float = Field(0.05, gt=0, description="keep sensors with depth_to <= this")
    depth_tolerance_m: float = Field(0.0008, ge=0, description="SCAN's 0.0508 m sensors count as 0.05 m")
    good_flags: list[str] = Field(default_factory=lambda: ["G"])


class MatchupsConfig(_Strict):
    """Stations x cells x dates."""

    window_days: int = Field(0, ge=0, description="in-situ days within this many days of the acquisition are averaged")
    tolerance_m: float = Field(0.0, ge=0, description="> 0: nearest usable cell within this distance when the own cell is masked")


class TableConfig(_Strict):
    """A user's own matchup table: column mapping (ours -> theirs) and units."""

    columns: dict[str, str] = Field(default_factory=dict, description="our column name -> the table's, e.g. {ssm: sm}")
    backscatter_unit: Literal["db", "linear"] = "db"
    ssm_unit: Literal["fraction", "percent"] = "fraction"
    texture_unit: Literal["percent", "fraction"] = "percent"
    nominal_incidence_deg: Optional[float] = Field(39.0, gt=0, lt=90, description="used when the table has no incidence angle")
    network: str = "user"
    default_env: str = Field("all", description="environment of rows without land cover")
    date_format: Optional[str] = Field(None, description="strftime format of the dates (e.g. '%d.%m.%Y'); "
                                       "null: ISO dates, YYYYMMDD, or D/M/Y-like dates where a day above 12 "
                                       "tells the order (ambiguous ones are refused)")
    encoding: Optional[str] = Field(None, description="text encoding of a CSV; null: UTF-8 (with or without a "
                                    "BOM), anything else is refused with the offending byte")
    delimiter: Optional[str] = Field(None, description="CSV field separator; null: whichever of , ; tab splits "
                                     "the header and the first rows consistently")
    decimal: Literal[".", ","] = Field(".", description="decimal mark of the CSV's numbers")


class XGBConfig(_Strict):
    """XGBoost hyper-parameters shared by the tree candidates (native Booster, ``hist``)."""

    n_estimators: int = Field(100, ge=1, description="boosting rounds of the point models (100 x depth 5 x "
                              "0.15: as accurate as 150 x 6 x 0.1 under station-grouped CV on the demo, Hawaii "
                              "and Poland at 0.56x the node visits; docs/physics.md section 7, "
                              "benchmarks/bench_trees.py)")
    max_depth: int = Field(5, ge=1, le=16)
    learning_rate: float = Field(0.15, gt=0, le=1)
    quantile_n_estimators: Optional[int] = Field(
        40, ge=1, description="boosting rounds of the 5/95 % quantile models (two trees per round); null: "
        "half of n_estimators (rounded up). Their learning rate is learning_rate * n_estimators / "
        "quantile_n_estimators (at most 1): the same total step. benchmarks/bench_trees.py measures rounds "
        "against accuracy and speed")
    quantile_max_depth: Optional[int] = Field(
        4, ge=1, le=16, description="depth of the quantile models' trees; null: max_depth "
        "(benchmarks/bench_serving.py measures depth and rounds against coverage and speed)")
    quantile_multi_strategy: Literal["one_output_per_tree", "multi_output_tree"] = Field(
        "one_output_per_tree", description="the two quantiles as two trees per round (one_output_per_tree) or "
        "as one tree with a 2-vector leaf (multi_output_tree, XGBoost's vector-leaf trees)")
    subsample: float = Field(0.8, gt=0, le=1)
    colsample_bytree: float = Field(0.8, gt=0, le=1)
    min_child_weight: float = Field(3.0, ge=0)
    reg_lambda: float = Field(1.0, ge=0)
    max_bin: int = Field(256, ge=2, description="histogram bins per feature (tree_method='hist')")
    nthread: int = Field(0, ge=0, description="threads per model; 0: the cores of the task (spark.task.cpus)")


class TrainConfig(_Strict):
    """Training, model selection and uncertainty."""

    k_folds: int = Field(5, ge=2, description="station-grouped cross-validation folds")
    seed: int = 42
    candidates: list[Literal["physics", "change_detection", "xgb_raw", "xgb_coupled", "xgb_residual", "global"]] = Field(
        default_factory=lambda: ["physics", "change_detection", "xgb_raw", "xgb_coupled", "xgb_residual", "global"])
    min_stations: int = Field(8, ge=2, description="fewer stations in an environment: fall back to its land-cover group, then global")
    min_samples: int = Field(150, ge=1, description="fewer matchups in an environment: fall back likewise")
    calib_min_samples: int = Field(30, ge=1, description="WCM calibration: minimum matchups per environment")
    calib_min_stations: int = Field(3, ge=1, description="WCM calibration: minimum stations per environment")
    quantiles: tuple[float, float] = (0.05, 0.95)
    interval_calibration: Literal["none", "conformal"] = Field(
        "conformal", description="'conformal': shift each quantile bound by the split-conformal correction "
        "measured on out-of-fold predictions so that held-out tail rates match the nominal ones; "
        "'none': raw XGBoost quantiles")
    conformal_scope: Literal["unit", "pooled"] = Field(
        "pooled", description="'pooled': one conformal correction from every environment's served "
        "out-of-fold rows together (cross-fitted by fold), the same for every unit (demo: held-out "
        "coverage 0.899 under CV, against 0.870 with 'unit'); 'unit': each unit's bounds shifted by the "
        "correction of its own out-of-fold rows (~10 stations)")
    group_models: bool = Field(True, description="also train a pooled model per qualifying land-cover group "
                               "(serves under-sampled and unseen environments before the global model)")
    min_prediction_coverage: float = Field(0.95, ge=0, le=1, description="a candidate predicting (non-NaN) "
                                           "fewer than this fraction of an environment's matchups cannot be "
                                           "selected (the physics candidate is NaN where vegetation dominates)")
    tie_tolerance: float = Field(1e-4, ge=0, description="ubRMSE differences (m3/m3) below this are ties, "
                                 "broken by the higher R")
    nominal_incidence_deg: Optional[float] = Field(None, gt=0, lt=90, description="incidence angle used "
                                                   "when the matchups have no incidence_deg column")
    selection: Literal["shrink", "blend", "paired", "best"] = Field(
        "shrink", description="'best': the lowest-ubRMSE candidate wins; 'paired': an environment's best own "
        "candidate replaces the global model only when a paired test over stations says it is better; "
        "'blend': the same test on the best mix w own + (1 - w) global (w in 0, 0.1, ..., 1); 'shrink': every "
        "environment's best own model mixed with the global one by one weight pooled over all environments")
    selection_z: float = Field(1.64, ge=0, description="paired test threshold (mean over stations of the "
                               "drop in squared error / its standard error) for 'paired' and 'blend'")
    shrink_z: Optional[float] = Field(
        1.64, ge=0, description="'shrink': the pooled mix is served only when it beats the global model "
        "alone in a paired test over stations (mean drop in squared error / its standard error above "
        "shrink_z; cross-fitted like the weight), else the global model alone (half the trees per cell); "
        "null: no test, the mix with the lowest squared error is served")
    cv_group: str = Field("station_id", description="column whose values are the cross-validation groups "
                          "(station_id; or e.g. a field id when a field holds several sampling points)")
    exclude_features: list[str] = Field(default_factory=list, description="features no tree may use "
                                        "(e.g. static inputs that identify stations)")
    xgb: XGBConfig = XGBConfig()

    @model_validator(mode="after")
    def _quantiles_ordered(self) -> "TrainConfig":
        lo, hi = self.quantiles
        if not 0 < lo < hi < 1:
            raise ValueError(f"quantiles must be (low, high) with 0 < low < high < 1, got {self.quantiles}")
        return self


class ProduceConfig(_Strict):
    """Regional products (``ssm-spark produce``): named regions, COG/VRT/quicklook settings.

    Every setting here except ``nthread``, ``tile_grouping``, ``min_files_per_task``,
    ``keep_tile_memory``, ``dates_in_flight`` and ``regions`` changes the product's bytes, so it enters the product hash that decides whether a finished date is skipped on re-run.
    ``aggregate`` and ``aggregate_min_fraction`` are left out of the dump (so of both hashes) while
    ``aggregate`` is empty: configurations from before multi-scale products hash as they did.
    """

    regions: dict[str, tuple[float, float, float, float] | str] = Field(
        default_factory=dict, description="named regions for --region: name -> "
        "[lon_min, lat_min, lon_max, lat_max] or a GeoJSON file path")
    cog: bool = Field(True, description="write one Cloud-Optimized GeoTIFF per tile and a VRT mosaic per date")
    cog_bands: list[Literal["ssm", "ssm_p05", "ssm_p95", "qc"]] = Field(
        default_factory=lambda: ["ssm", "qc"], description="bands of the COGs (float32; qc holds the uint16 "
        "bits exactly)")
    cog_compress: Literal["deflate", "zstd", "lzw", "none"] = "deflate"
    cog_blocksize: int = Field(0, ge=0, description="internal tile size (multiple of 16); 0: half the grid "
                               "tile (at most 512), so every COG has at least one overview")
    overview_resampling: Literal["nearest", "average", "mode"] = Field(
        "nearest", description="one resampling for every band: 'nearest' keeps the QC bits valid")
    quicklook: bool = Field(True, description="a PNG of each date's SSM with a colour bar (needs cog)")
    quicklook_max_px: int = Field(1024, ge=64, le=8192, description="longest side of the quicklook image")
    quicklook_range: tuple[float, float] = Field((0.0, 0.5), description="colour bar range (m3/m3)")
    stac: bool = Field(True, description="a STAC catalogue of the product (OUTPUT/stac/: a collection, an item "
                       "per committed date), updated at each commit")
    tile_grouping: Literal["auto", "shuffle"] = Field(
        "auto", description="auto: when every stack file lies in one grid tile (one file per tile and date), "
        "read, predict and write a tile in one task; shuffle: always regroup the rows by tile")
    nthread: int = Field(0, ge=0, description="XGBoost threads per task; 0: the task's cores (spark.task.cpus)")
    min_files_per_task: int = Field(4, ge=1, le=64, description="stack files a Spark task takes (fewer where a "
                                    "core would get no task): each task costs Spark ~13 ms, and smaller tasks "
                                    "balance uneven tiles at the end of a date; 1: one file a task")
    keep_tile_memory: bool = Field(True, description="the Python workers' C heap (glibc malloc) kept between "
                                   "tiles instead of faulted in again for each (ssm_spark.allocator): ~5-14 "
                                   "CPU-ms less a 256 x 256 tile; false: the allocator's defaults")
    dates_in_flight: int = Field(2, ge=1, le=8, description="dates whose Spark jobs run at once (the next date "
                                 "fills cores the older one leaves idle) while the driver finishes the previous "
                                 "one (VRT, quicklook, aggregates, commit); commits stay in date order; 1: one "
                                 "date after the other")
    aggregate: list[str] = Field(
        default_factory=list, description="coarser nested grids to aggregate each date onto (multi-scale "
        "products): grid names (ease2_3km, ease2_9km, ease2_36km, geo_<deg>deg) or EASE-Grid 2.0 km numbers "
        "(3, 9, 36); each must nest in the product grid (checked when produce starts); empty: off")
    aggregate_min_fraction: float = Field(
        0.5, ge=0.0, le=1.0, description="a coarse cell has an ssm value when at least this fraction of its "
        "f x f fine cells has one (at least one cell always)")
    climatology_dir: Optional[str] = Field(
        None, description="folder of the change-detection climatology stacks (<dir>/<key>/, built once and "
        "reused; see ssm_spark.product.climatology); null: OUTPUT/climatology. Not in the product hash (the "
        "stack's own digest is)")

    @field_validator("aggregate", mode="before")
    @classmethod
    def _grid_names(cls, v: Any) -> Any:
        if not isinstance(v, (list, tuple)):
            return v
        out = []
        for item in v:
            name = str(item).strip()
            if isinstance(item, int) and not isinstance(item, bool) or name.isdigit():
                name = f"ease2_{int(name)}km"
            elif isinstance(item, float):
                name = f"ease2_{int(item)}km" if item.is_integer() else f"ease2_{item}km"
            elif name.endswith("km") and name[:-2].isdigit():
                name = f"ease2_{name}"
            try:
                Grid.from_name(name)
            except ValueError as exc:
                raise ValueError(f"{item!r} is not a grid: {exc} (EASE-Grid 2.0 km: 3, 9, 36)") from None
            if name in out:
                raise ValueError(f"{name} is listed twice")
            out.append(name)
        return sorted(out, key=lambda n: Grid.from_name(n).cell)  # finest first, whatever order given

    @model_serializer(mode="wrap")
    def _omit_unused_aggregate(self, handler: Any) -> dict:
        # off (the default) is not written, so configurations and product hashes from before these
        # keys existed are unchanged
        data = handler(self)
        if not self.aggregate:
            data.pop("aggregate", None)
            data.pop("aggregate_min_fraction", None)
        return data

    @field_validator("cog_blocksize")
    @classmethod
    def _multiple_of_16(cls, v: int) -> int:
        if v % 16:
            raise ValueError(f"cog_blocksize must be a multiple of 16 (GeoTIFF tiles), got {v}")
        return v

    @model_validator(mode="after")
    def _range(self) -> "ProduceConfig":
        lo, hi = self.quicklook_range
        if not lo < hi:
            raise ValueError(f"quicklook_range must be (low, high) with low < high, got {self.quicklook_range}")
        return self


class ChangeDetectionConfig(_Strict):
    """Per-cell change detection (Wagner et al. 1999) from the backscatter time series."""

    enabled: bool = Field(True, description="compute the per-cell climatology, the relative wetness and "
                          "anomaly features and the change_detection candidate")
    window_start: Optional[dt.date] = Field(None, description="first date of the reference window (null: "
                                            "the first date available)")
    window_end: Optional[dt.date] = Field(None, description="last date of the reference window (null: the last)")
    dry_percentile: float = Field(5.0, ge=0, lt=50, description="dry reference: this percentile of the cell's "
                                  "angle-normalised backscatter")
    wet_percentile: float = Field(95.0, gt=50, le=100, description="wet reference percentile")
    min_dates: int = Field(10, ge=3, description="fewer dates in the window: no change-detection features "
                           "(QC CHANGE_DETECTION_MISSING)")
    min_spread_deg: float = Field(3.0, ge=0, description="a cell's own angle slope is fitted where its angles "
                                  "span at least this (multi-orbit); elsewhere the default slope")
    table_group: str = Field("station_id", description="user tables: the rows sharing one climatology (a "
                             "station's own rows; or e.g. group_id for a field sampled at a few points per date)")


class PhysicsConfig(_Strict):
    """Physics coupled to the models: angle normalisation, vegetation descriptor, change detection."""

    reference_angle_deg: float = Field(40.0, gt=0, lt=90, description="backscatter is normalised to this "
                                       "incidence angle before the WCM inversion")
    angle_slope: Literal["environment", "cell", "none"] = Field(
        "environment", description="slope of the normalisation (dB/deg): 'environment' fitted per environment "
        "on the training matchups (within-station, moisture as covariate), 'cell' the cell's own multi-orbit "
        "slope where it has one (else the environment's), 'none' no normalisation")
    vegetation: Literal["auto", "ndvi", "radar"] = Field(
        "auto", description="vegetation descriptor of the WCM: 'ndvi', or 'radar' = the dual-pol radar "
        "vegetation index 4 vh / (vv + vh) (linear); 'auto' = NDVI where the table has it, else radar")
    bound_to_porosity: bool = Field(True, description="bound the physics and change_detection estimates to "
                                    "[0, porosity] (flagged in qc where bounded)")
    change_detection: ChangeDetectionConfig = ChangeDetectionConfig()


class WatchConfig(_Strict):
    """``ssm-spark watch``: near-real-time production as stacks land (:mod:`ssm_spark.watch`)."""

    trigger_seconds: float = Field(10.0, gt=0, description="the stream's micro-batch interval (continuous mode)")
    manifest: str = Field("MANIFEST.json", description="a date's manifest, beside its stacks, written last: "
                          '{"files": [names]}; the date is complete when they have all landed')
    quiet_seconds: Optional[float] = Field(300.0, gt=0, description="a date folder without a manifest is "
                                           "complete when none of its files changed for this long; null: a "
                                           "manifest is required")
    max_files_per_trigger: int = Field(1000, ge=1, description="files a micro-batch takes at most")
    max_attempts: int = Field(3, ge=1, description="produce attempts of a date before it is marked failed")
    retry_seconds: float = Field(60.0, ge=0, description="wait before a failed date is retried (continuous mode)")

    @field_validator("manifest")
    @classmethod
    def _visible(cls, v: str) -> str:
        if not v or v[0] in "_." or "/" in v:
            raise ValueError(f"{v!r}: a file name not starting with '_' or '.' (Spark's file source skips those)")
        return v


class DemoConfig(_Strict):
    """``ssm-spark demo``: the end-to-end run on the simulated region."""

    holdout_stations: float = Field(0.2, ge=0, lt=1, description="fraction of the stations kept out of "
                                    "training (chosen by a hash of the station id) to validate the product "
                                    "against; 0: validate on the training stations only (in-sample)")
    produce: bool = Field(True, description="produce the region's product for every simulated date and "
                          "validate it against the held-out stations and the simulated truth")


class Config(_Strict):
    """The resolved configuration of a run."""

    grid: GridConfig = GridConfig()
    region: RegionConfig = RegionConfig()
    spark: SparkConfig = SparkConfig()
    simulate: SimulateConfig = SimulateConfig()
    ingest: IngestConfig = IngestConfig()
    insitu: InSituConfig = InSituConfig()
    matchups: MatchupsConfig = MatchupsConfig()
    table: TableConfig = TableConfig()
    train: TrainConfig = TrainConfig()
    physics: PhysicsConfig = PhysicsConfig()
    produce: ProduceConfig = ProduceConfig()
    demo: DemoConfig = DemoConfig()
    watch: WatchConfig = WatchConfig()
    earthengine: EarthEngineConfig = EarthEngineConfig()

    def hash(self) -> str:
        """Stable 16-hex-digit hash of the resolved configuration (sorted-key JSON, sha256)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# -- loading --------------------------------------------------------------------------------------
def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration file ({exc.strerror or exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def _merge(base: dict, new: dict, source: str, origin: dict[str, str], prefix: str = "") -> dict:
    out = dict(base)
    for k, v in new.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v, source, origin, key + ".")
        else:
            out[k] = v
            origin.pop(key, None)  # re-inserted: origin's order is the order of the latest setting
            origin[key] = source
            if isinstance(v, dict):
                for sub in _flatten_keys(v, key + "."):
                    origin.pop(sub, None)
                    origin[sub] = source
    return out


def _flatten_keys(d: dict, prefix: str) -> list[str]:
    keys = []
    for k, v in d.items():
        keys.append(prefix + str(k))
        if isinstance(v, dict):
            keys.extend(_flatten_keys(v, f"{prefix}{k}."))
    return keys


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into (["a", "b", "c"], parsed value).

    Raises
    ------
    ConfigError
        If the override has no ``=`` or an empty key.
    """
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: expected key=value with a dotted key, e.g. spark.master=local[1]")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _mapping_key(keys: list[str]) -> list[str]:
    """Dotted override keys with the part inside a free-form mapping joined back into one key.

    ``spark.conf.spark.driver.memory`` sets the key ``spark.driver.memory`` of the ``spark.conf``
    mapping (its keys are Spark's own dotted names), not a nested ``spark`` mapping; the same for
    every ``dict`` field (``table.columns``, ``ingest.band_aliases``, ``produce.regions``).
    """
    model: Any = Config
    for i, k in enumerate(keys):
        fields = getattr(model, "model_fields", None)
        if fields is None or k not in fields:
            return keys  # not a known section or key: validation names it
        ann = fields[k].annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
            continue
        if getattr(ann, "__origin__", None) is dict and len(keys) > i + 2:
            return keys[:i + 1] + [".".join(keys[i + 1:])]
        return keys
    return keys


def _where(loc: tuple, origin: dict[str, str]) -> str:
    """The source of the value at ``loc``: the key itself, else the latest source of a key under it
    (a section's own check, e.g. a reversed region.bbox, blames the override that set the bbox, not
    the file that made the section), else the nearest section above."""
    parts = [str(p) for p in loc]
    key = ".".join(parts)
    latest = [src for k, src in origin.items() if key and (k == key or k.startswith(key + "."))]
    if latest:
        return latest[-1]
    for n in range(len(parts) - 1, 0, -1):
        src = origin.get(".".join(parts[:n]))
        if src:
            return src
    return "defaults"


def load_config(paths: Optional[list[str | Path]] = None, overrides: Optional[list[str]] = None) -> Config:
    """Load, merge and validate configuration files and overrides.

    Parameters
    ----------
    paths : list of paths, optional
        YAML files merged in order. Default: ``conf/default.yaml`` of the checkout, else the copy
        packaged in the installed wheel, else the built-in defaults alone.
    overrides : list of str, optional
        ``key=value`` items applied after the files.

    Returns
    -------
    Config

    Raises
    ------
    ConfigError
        Naming the key and the file or override for unknown keys and bad values.
    """
    if paths is None:
        paths = [DEFAULT_CONFIG] if DEFAULT_CONFIG.exists() else []
    origin: dict[str, str] = {}
    data: dict = {}
    for p in paths:
        p = Path(p)
        data = _merge(data, _read_yaml(p), str(p), origin)
    for item in overrides or []:
        keys, value = parse_override(item)
        keys = _mapping_key(keys)
        nested: Any = value
        for k in reversed(keys):
            nested = {k: nested}
        data = _merge(data, nested, f"--set {item}", origin)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "<top level>"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key (misspelt, or in the wrong section?)"
            lines.append(f"{_where(err['loc'], origin)}: {key}: {msg}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
