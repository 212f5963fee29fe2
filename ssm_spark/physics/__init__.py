"""Radar physics of ssm-spark: plain numpy kernels, no Spark.

Modules
-------
dielectric
    Topp (1980) and Dobson (1985) / Peplinski (1995) mixing models, Fresnel reflectivity.
wcm
    Water Cloud Model (Attema and Ulaby 1978): forward, vegetation correction, VWC from NDVI,
    default C-band parameters.
oh
    Oh (2002, 2004) bare-soil model and its closed-form VV+VH inversion.
qc
    The QC bit flags (one ``enum.IntFlag``, ``uint16`` arrays).
calibrate
    Bounded robust least-squares calibration of the WCM per environment and polarisation, with the
    environment -> land-cover group -> global fallback.
features
    :func:`~ssm_spark.physics.features.coupled_features`, the DataFrame-in, DataFrame-out transform
    that the Spark layer wraps.

Conventions: numpy arrays or scalars in and out (broadcasting), angles in degrees, backscatter in dB
at the API and linear power inside the formulas, soil moisture in m3/m3. The models and their
references: docs/radar.md; the chain and the model selection: docs/physics.md.
"""

from __future__ import annotations

from ssm_spark.physics import dielectric, oh, qc, wcm

__all__ = ["dielectric", "wcm", "oh", "qc", "calibrate", "features"]


def __getattr__(name: str):  # pragma: no cover - trivial lazy import
    # calibrate needs scipy and features needs pandas: import them on first use only, so that the
    # numpy kernels stay importable with numpy alone.
    if name in ("calibrate", "features"):
        import importlib

        return importlib.import_module(f"ssm_spark.physics.{name}")
    raise AttributeError(f"module 'ssm_spark.physics' has no attribute {name!r}")
