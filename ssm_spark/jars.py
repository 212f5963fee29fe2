"""The Sedona jars: their Maven coordinates (the one place they are named), fetching and verification.

``ssm-spark jars fetch [DIR]`` (or ``python -m ssm_spark.jars fetch [--dir DIR]``) copies the Sedona shaded jar for the pinned Spark and
the matching GeoTools wrapper from Maven Central with ``mvn dependency:copy`` (strict checksums) into
the jars folder (:func:`jars_dir`: ``spark.jars.dir``, else ``$SSM_SPARK_JARS``, else the checkout's
git-ignored ``jars/`` or, for an installed wheel, a per-user cache folder), once; ``python -m ssm_spark.jars verify`` checks them.
A ``jars/SHA256SUMS`` file records what was verified, so a later run checks in milliseconds.

Why Sedona 1.8.0 on Spark 4.0 and not 1.9.1 on Spark 4.1: the Maven Central that this project's
machines reach serves ``sedona-spark-shaded-4.0_2.13`` up to 1.8.0 and no ``sedona-spark-shaded-4.1``
at all (HTTP 404 for its maven-metadata.xml, checked 2026-11-23), and the GeoTools wrapper up to
1.8.1-33.1. The Python package and the jar must come from the same Sedona release, so the whole set
moves together: change :data:`SEDONA_VERSION`, :data:`SPARK_COMPAT`, :data:`GEOTOOLS_WRAPPER_VERSION`
here and the pins in ``requirements/constraints.txt`` (the test ``test_versions_agree`` holds them
together).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ssm_spark.errors import SparkSetupError
from ssm_spark.io import write_text_atomic

log = logging.getLogger(__name__)

SEDONA_VERSION = "1.8.0"
SPARK_COMPAT = "4.0"  # Spark major.minor the Sedona jar is built for
SCALA_COMPAT = "2.13"
GEOTOOLS_WRAPPER_VERSION = "1.8.0-33.1"

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FETCH_COMMAND = "ssm-spark jars fetch [DIR]   (or: python -m ssm_spark.jars fetch --dir DIR; in a checkout: make setup)"


def default_jars_dir() -> Path:
    """The project's ``jars/`` in a checkout; for an installed wheel a per-user cache folder,
    ``$XDG_CACHE_HOME/ssm-spark/jars-<sedona version>`` (``~/.cache/...``), never ``site-packages``."""
    if (PROJECT_ROOT / "setup.py").is_file():
        return PROJECT_ROOT / "jars"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "ssm-spark" / f"jars-{SEDONA_VERSION}"


DEFAULT_JARS_DIR = default_jars_dir()


@dataclass(frozen=True)
class Artifact:
    group: str
    artifact: str
    version: str
    marker_class: str  # a class the jar must contain

    @property
    def coordinate(self) -> str:
        return f"{self.group}:{self.artifact}:{self.version}"

    @property
    def filename(self) -> str:
        return f"{self.artifact}-{self.version}.jar"


ARTIFACTS = (
    Artifact("org.apache.sedona", f"sedona-spark-shaded-{SPARK_COMPAT}_{SCALA_COMPAT}", SEDONA_VERSION,
             "org/apache/sedona/spark/SedonaContext.class"),
    Artifact("org.datasyslab", "geotools-wrapper", GEOTOOLS_WRAPPER_VERSION,
             "org/geotools/gce/geotiff/GeoTiffReader.class"),
)


def maven_packages() -> str:
    """Comma-separated coordinates for ``spark.jars.packages``."""
    return ",".join(a.coordinate for a in ARTIFACTS)


def jars_dir(configured: str | os.PathLike | None = None) -> Path:
    """The jars folder: the configured one (``spark.jars.dir``, ``--dir``), else ``$SSM_SPARK_JARS``,
    else :func:`default_jars_dir` (the checkout's ``jars/``, or a per-user cache for a wheel)."""
    if configured:
        return Path(configured).expanduser().resolve()
    env = os.environ.get("SSM_SPARK_JARS")
    return Path(env).expanduser().resolve() if env else default_jars_dir()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_jar(path: Path, art: Artifact) -> None:
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
    except (OSError, zipfile.BadZipFile) as exc:
        raise SparkSetupError(f"{path}: not a readable jar ({exc}); delete it and run {FETCH_COMMAND}") from exc
    if art.marker_class not in names:
        raise SparkSetupError(f"{path}: does not contain {art.marker_class}; is it the right artifact ({art.coordinate})?")


def verify(directory: str | os.PathLike | None = None) -> list[Path]:
    """Check that every jar is present and intact; return their paths in classpath order.

    A jar is intact when its SHA-256 matches ``SHA256SUMS`` (written by :func:`fetch` after a full
    check: Maven's strict checksums, then the jar opened as a zip and its marker class found).

    Raises
    ------
    SparkSetupError
        Naming the missing or damaged jar and the command that fetches it.
    """
    d = jars_dir(directory)
    sums_file = d / "SHA256SUMS"
    sums = {}
    if sums_file.exists():
        for line in sums_file.read_text().splitlines():
            digest, _, name = line.partition("  ")
            sums[name.strip()] = digest.strip()
    paths = []
    for art in ARTIFACTS:
        p = d / art.filename
        if not p.exists():
            raise SparkSetupError(f"Sedona jar missing: {p} ({art.coordinate}). Fetch it with: {FETCH_COMMAND}")
        if art.filename not in sums:
            _check_jar(p, art)
        elif _sha256(p) != sums[art.filename]:
            raise SparkSetupError(f"{p}: SHA-256 differs from {sums_file}; the jar is damaged. Delete it and run {FETCH_COMMAND}")
        paths.append(p)
    return paths


def fetch(directory: str | os.PathLike | None = None, mvn: str = "mvn") -> list[Path]:
    """Copy the jars from Maven Central with ``mvn dependency:copy`` (idempotent) and verify them.

    Raises
    ------
    SparkSetupError
        If Maven is missing or cannot fetch an artifact.
    """
    d = jars_dir(directory)
    try:
        return verify(d)
    except SparkSetupError:
        pass
    if shutil.which(mvn) is None:
        raise SparkSetupError(f"'{mvn}' not found: install Maven (Debian: apt-get install maven) to fetch the Sedona jars")
    d.mkdir(parents=True, exist_ok=True)
    lines = []
    for art in ARTIFACTS:
        target = d / art.filename
        if not target.exists():
            cmd = [mvn, "-q", "-B", "-C", "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy",
                   f"-Dartifact={art.coordinate}", f"-DoutputDirectory={d}", "-Dmdep.overWriteReleases=false"]
            log.info("fetching %s", art.coordinate)
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0 or not target.exists():
                tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-8:])
                raise SparkSetupError(f"mvn could not fetch {art.coordinate} from Maven Central:\n{tail}")
        _check_jar(target, art)
        lines.append(f"{_sha256(target)}  {art.filename}")
    write_text_atomic(d / "SHA256SUMS", "\n".join(lines) + "\n")
    return verify(d)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ssm_spark.jars", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["fetch", "verify", "packages", "jars"],
                        help="fetch, verify, or print for spark-submit: packages (--packages) or jars (--jars)")
    parser.add_argument("--dir", default=None, help="jars folder (default: $SSM_SPARK_JARS, else the checkout's jars/ or ~/.cache/ssm-spark/jars-VERSION)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.action == "packages":
            print(maven_packages())
            return 0
        paths = fetch(args.dir) if args.action == "fetch" else verify(args.dir)
    except SparkSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.action == "jars":
        print(",".join(str(p) for p in paths))
        return 0
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
