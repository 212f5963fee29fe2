"""The ``earthengine:`` configuration section (typed; collection ids, bands, scale factors, windows).

Every Earth Engine asset the request builders use is named here, with the band read and the factor
that turns its stored values into the unit of our band (``value * scale + offset``), so a catalogue
change (a new collection version) is a configuration change, not a code change.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["EarthEngineConfig", "Layer"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class Layer(_Strict):
    """One Earth Engine asset and band: ``collection`` is an ImageCollection id, or an Image id when
    ``image`` is true; stored values become our unit as ``value * scale + offset``."""

    collection: str
    band: str
    scale: float = 1.0
    offset: float = 0.0
    image: bool = False
    native_m: Optional[float] = Field(None, gt=0, description="pixel size (m) of the asset: a composite of a "
                                      "collection (which has no fixed projection) is given it in the grid's CRS "
                                      "before reduceResolution averages it into grid cells")


class S1Settings(_Strict):
    """COPERNICUS/S1_GRD: IW, VV + VH, the angle band; dB values, averaged in linear power."""

    collection: str = "COPERNICUS/S1_GRD"
    instrument_mode: str = "IW"
    orbit_pass: Optional[Literal["ASCENDING", "DESCENDING"]] = Field(
        None, description="keep one orbit pass; null: both")
    resolution_m: float = Field(10.0, gt=0, description="the GRD product's pixel spacing (selects the IW GRDH "
                                "10 m scenes)")
    window_days: int = Field(0, ge=0, description="scenes within +- this many days of the date are averaged "
                             "(0: that UTC day only)")
    border_noise_db: Optional[float] = Field(-30.0, description="GRD border noise: sigma0 below this (dB) is "
                                             "masked; null: no mask")
    angle_range_deg: tuple[float, float] = Field((30.0, 46.0), description="scene-edge pixels with an "
                                                 "incidence angle outside this range are masked")
    speckle: Literal["none", "focal_median", "temporal_mean"] = Field(
        "none", description="speckle filtering before resampling to the grid: focal median (radius below), or "
        "the multi-temporal mean of +- temporal_days (a cell of 1 km already averages ~10^4 looks)")
    speckle_radius_m: float = Field(50.0, gt=0)
    temporal_days: int = Field(12, ge=1)


class NdviSettings(_Strict):
    """NDVI at the radar date: Sentinel-2 SR (SCL cloud mask) interpolated in time, or MODIS."""

    source: Literal["s2", "modis"] = "s2"
    s2_collection: str = "COPERNICUS/S2_SR_HARMONIZED"
    s2_nir: str = "B8"
    s2_red: str = "B4"
    s2_scl_band: str = "SCL"
    s2_scl_masked: list[int] = Field([0, 1, 3, 8, 9, 10, 11], description="SCL classes masked: no data, "
                                     "saturated, cloud shadow, cloud (medium, high), cirrus, snow")
    s2_max_cloud_pct: float = Field(80.0, ge=0, le=100, description="scenes with CLOUDY_PIXEL_PERCENTAGE above "
                                    "this are skipped")
    modis: Layer = Layer(collection="MODIS/061/MOD13Q1", band="NDVI", scale=0.0001, native_m=250.0)
    s2_native_m: float = Field(10.0, gt=0, description="pixel size of the NDVI bands (m)")
    window_days: int = Field(16, ge=1, description="clear observations within this many days before and after "
                             "the date are linearly interpolated to it (the nearest one alone on one side)")


class LstSettings(_Strict):
    layer: Layer = Layer(collection="MODIS/061/MOD11A1", band="LST_Day_1km", scale=0.02, native_m=1000.0)
    window_days: int = Field(1, ge=0, description="mean of the daily values within +- this many days")


class PrecipSettings(_Strict):
    """Antecedent precipitation: the sum over the ``window_days`` days ending on the date (mm)."""

    source: Literal["chirps", "gpm", "era5_land"] = "chirps"
    chirps: Layer = Layer(collection="UCSB-CHG/CHIRPS/DAILY", band="precipitation", native_m=5566.0)
    gpm: Layer = Field(Layer(collection="NASA/GPM_L3/IMERG_V07", band="precipitation", scale=0.5, native_m=11132.0),
                       description="mm/h per half hour: x 0.5 gives mm")
    era5_land: Layer = Field(Layer(collection="ECMWF/ERA5_LAND/DAILY_AGGR", band="total_precipitation_sum",
                                   scale=1000.0, native_m=11132.0), description="m per day: x 1000 gives mm")
    window_days: int = Field(5, ge=1, description="days summed, the date included (simulate.precip_window_days "
                             "for the demo)")


class StaticSettings(_Strict):
    clay: Layer = Field(Layer(collection="projects/soilgrids-isric/clay_mean", band="clay_0-5cm_mean", scale=0.1,
                              image=True), description="SoilGrids g/kg: x 0.1 gives %")
    sand: Layer = Layer(collection="projects/soilgrids-isric/sand_mean", band="sand_0-5cm_mean", scale=0.1,
                        image=True)
    bulk_density: Layer = Field(Layer(collection="projects/soilgrids-isric/bdod_mean", band="bdod_0-5cm_mean",
                                      scale=0.01, image=True), description="SoilGrids cg/cm3: x 0.01 gives g/cm3")
    dem: Layer = Field(Layer(collection="COPERNICUS/DEM/GLO30", band="DEM"),
                       description="elevation (m); slope_deg is ee.Terrain.slope of it at its native resolution")
    landcover: Layer = Layer(collection="ESA/WorldCover/v200", band="Map", native_m=10.0)
    climate: Layer = Field(Layer(collection="projects/sat-io/open-datasets/KG_CLIMATE/KG_1991_2020", band="b1",
                                 image=True), description="Koppen-Geiger classes 1-30 (Beck et al. legend); a "
                           "community asset: check the id for your project")


class ExportSettings(_Strict):
    destination: Literal["gcs", "drive"] = "gcs"
    bucket: Optional[str] = Field(None, description="Cloud Storage bucket (destination gcs)")
    drive_folder: str = Field("ssm-spark", description="Drive folder (destination drive)")
    prefix: str = Field("ssm-spark", description="object prefix: <prefix>/stacks/<date>/<grid>_<tr>_<tc>.tif, "
                        "<prefix>/static/<grid>_<tr>_<tc>[_classes].tif: the layout the stack reader reads")
    max_pixels: float = Field(1e10, gt=0, description="maxPixels of each export")
    max_in_flight: int = Field(8, ge=1, description="tasks running at once (Earth Engine queues the rest anyway)")
    poll_seconds: float = Field(30.0, gt=0)
    max_attempts: int = Field(4, ge=1, description="submissions of one task (quota and transient errors)")
    backoff_seconds: float = Field(5.0, gt=0, description="first retry wait, doubled each time (with jitter)")
    max_backoff_seconds: float = Field(300.0, gt=0)
    timeout_hours: float = Field(24.0, gt=0, description="give up polling after this long")


class SampleSettings(_Strict):
    max_points_per_request: int = Field(1000, ge=1, le=5000, description="points in one reduceRegions request "
                                        "(Earth Engine returns at most 5000 features per request)")
    max_dates_per_request: int = Field(10, ge=1, description="dates stacked in one matchup request")


class EarthEngineConfig(_Strict):
    """Earth Engine: the project, credentials, the collections of every band, exports and sampling."""

    project: Optional[str] = Field(None, description="Google Cloud project with Earth Engine enabled")
    credentials: Optional[str] = Field(None, description="path of a service-account key file (JSON); null: "
                                       "GOOGLE_APPLICATION_CREDENTIALS, else the default credentials "
                                       "('earthengine authenticate' / gcloud). Never logged or written anywhere")
    reduce_max_pixels: int = Field(65536, ge=1, description="input pixels averaged into one grid cell at most "
                                   "(reduceResolution): native 10 m to 1 km is 10^4")
    s1: S1Settings = S1Settings()
    ndvi: NdviSettings = NdviSettings()
    lst: LstSettings = LstSettings()
    precip: PrecipSettings = PrecipSettings()
    static: StaticSettings = StaticSettings()
    export: ExportSettings = ExportSettings()
    sample: SampleSettings = SampleSettings()
