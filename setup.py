"""ssm-spark: surface soil moisture from Sentinel-1, radar physics and XGBoost on Spark + Sedona."""

import re
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent


class BuildPyWithConf(build_py):
    """Copy ``conf/**/*.yaml`` into the built package as ``ssm_spark/conf/``: one source of truth (the
    repository's ``conf/``), and an installed wheel resolves the same defaults and config hash."""

    def run(self):
        super().run()
        for src in sorted((HERE / "conf").rglob("*.yaml")):
            dst = Path(self.build_lib) / "ssm_spark" / "conf" / src.relative_to(HERE / "conf")
            dst.parent.mkdir(parents=True, exist_ok=True)
            self.copy_file(str(src), str(dst))

VERSION = re.search(r'^__version__ = "([^"]+)"', (HERE / "ssm_spark" / "__init__.py").read_text(), re.M).group(1)

setup(
    name="ssm-spark",
    version=VERSION,
    description="Surface soil moisture from Sentinel-1 SAR: WCM/Oh physics + per-environment XGBoost on Spark and Sedona",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["ssm_spark", "ssm_spark.*"]),
    include_package_data=True,
    # the quiet log4j2 profile of local Spark sessions and of deploy/spark-submit (ssm_spark/spark.py)
    # ... and the product browser's page, script, styles and vendored Leaflet (ssm_spark/browser/static)
    package_data={"ssm_spark": ["log4j2.properties", "browser/static/*", "browser/static/vendor/*",
                                "browser/static/vendor/leaflet/*", "browser/static/vendor/leaflet/images/*"]},
    cmdclass={"build_py": BuildPyWithConf},
    install_requires=[
        # exact versions live in requirements/constraints.txt; these are the supported ranges.
        # pyspark is the extra [spark]: a managed runtime (Databricks, EMR, Dataproc) keeps its own.
        "apache-sedona>=1.8.0,<1.9",
        "pandas>=2.2,<3",
        "numpy>=1.26",
        "pyarrow>=15",
        "xgboost>=2.1",
        "rasterio>=1.4",
        "pyproj>=3.6",
        "shapely>=2.0",
        "scipy>=1.11",
        "pydantic>=2.5,<3",
        "PyYAML>=6",
        "matplotlib>=3.8",
        "tqdm>=4.60",
        "ismn>=1.5",
        "pystac[validation]>=1.14,<1.15",  # the STAC catalogue (ssm_spark.stac); validation: jsonschema
        "fastapi>=0.110",  # ssm-spark serve: the HTTP API (ssm_spark.serve) ...
        "uvicorn>=0.29",   # ... on uvicorn
        "rio-tiler>=7",    # the product browser's map tiles, rendered from the COGs/VRT
    ],
    extras_require={
        "spark": ["pyspark>=4.0,<4.1"],
        "ee": ["earthengine-api>=1.7"],
        # object storage (ssm_spark.storage): s3:// with s3fs; gs:// with gcsfs; abfss:// / az:// with adlfs
        "s3": ["s3fs>=2024.6", "fsspec>=2024.6"],
        "gcs": ["gcsfs>=2024.6", "fsspec>=2024.6"],
        "azure": ["adlfs>=2024.4", "fsspec>=2024.6"],
        "test": ["pytest>=8", "hypothesis>=6.100", "pytesmo>=0.18",
                 "databricks-bundles>=1.22",  # validates deploy/databricks/ offline
                 "selenium>=4.20"],  # tests/test_browser.py: Debian's chromium through chromedriver
    },
    entry_points={"console_scripts": ["ssm-spark=ssm_spark.cli:main"]},
)
