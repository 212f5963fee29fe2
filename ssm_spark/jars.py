"""The Sedona jars: their Maven coordinates (the one place they are named), fetching and verification.

``ssm-spark jars fetch [DIR]`` (or ``python -m ssm_spark.jars fetch [--dir DIR]``) copies the Sedona shaded jar for the pinned Spark and
the matching GeoTools wrapper from Maven Central with ``mvn dependency:copy`` (strict checksums) into
the jars folder (:func:`jars_dir`: ``spark.jars.dir``, else ``$SSM_SPARK_JARS``, else the checkout's
git-ignored ``jars/`` or, for an installed wheel, a per-user cache folder), once; ``python -m ssm_spark.jars verify`` checks them.
A ``jars/SHA256SUMS`` file records what was verified, so a later run checks in milliseconds.

Hadoop's S3A (``s3a://`` paths in Spark), opt-in: ``ssm-spark jars fetch --s3a`` (``scripts/setup.sh
--test`` runs it) adds ``hadoop-aws`` of the Hadoop that pyspark ships (:data:`HADOOP_VERSION`) and
the AWS SDK v2 modules S3A loads (:data:`S3A_ARTIFACTS`, 34 jars, about 10 MB) instead of the SDK's
``bundle`` (558 MB for the 2.24.6 that hadoop-aws 3.4.1 names). The modules are those of SDK
:data:`AWS_SDK_VERSION` (the Maven Central reached here serves no 2.24.6 ``s3-transfer-manager``);
netty, Apache HttpClient 4 and SLF4J come from Spark's own jars. :func:`s3a_jars` gives them when
all are there (:func:`ssm_spark.spark.spark_conf` then puts them on ``spark.jars``); an ``s3a://``
read against SeaweedFS's S3 gateway is tested (tests/test_object_storage.py).

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

#: pyspark 4.0.1's Hadoop (its jars/hadoop-client-api-3.4.1.jar): hadoop-aws must be the same release
HADOOP_VERSION = "3.4.1"
AWS_SDK_VERSION = "2.57.8"

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


_SDK = "software/amazon/awssdk/"
#: hadoop-aws and the AWS SDK v2 modules S3A needs (a class each must contain), without the SDK's
#: netty, HttpClient 4 and SLF4J, which Spark's own jars provide
S3A_ARTIFACTS = (
    Artifact("org.apache.hadoop", "hadoop-aws", HADOOP_VERSION, "org/apache/hadoop/fs/s3a/S3AFileSystem.class"),
    Artifact("org.reactivestreams", "reactive-streams", "1.0.4", "org/reactivestreams/FlowAdapters.class"),
    *(Artifact("software.amazon.awssdk", name, AWS_SDK_VERSION, _SDK + cls) for name, cls in (
        ("annotations", "annotations/Mutable.class"),
        ("apache-client", "http/apache/ApacheHttpClient.class"),
        ("arns", "arns/ArnResource.class"),
        ("auth", "auth/credentials/EnvironmentVariableCredentialsProvider.class"),
        ("aws-core", "awscore/AwsRequest.class"),
        ("aws-query-protocol", "protocols/query/AwsEc2ProtocolFactory.class"),
        ("aws-xml-protocol", "protocols/xml/AwsXmlProtocolFactory.class"),
        ("checksums", "checksums/DefaultChecksumAlgorithm.class"),
        ("checksums-spi", "checksums/spi/ChecksumAlgorithm.class"),
        ("crt-core", "crtcore/CrtProxyConfiguration.class"),
        ("endpoints-spi", "endpoints/EndpointUrl.class"),
        ("eventstream", "eventstream/Message.class"),
        ("http-auth", "http/auth/signer/BearerHttpSigner.class"),
        ("http-auth-aws", "http/auth/aws/signer/AwsV4HttpSigner.class"),
        ("http-auth-aws-eventstream", "http/auth/aws/eventstream/HttpAuthAwsEventStream.class"),
        ("http-auth-spi", "http/auth/spi/signer/SignRequest.class"),
        ("http-client-spi", "http/SdkHttpClient.class"),
        ("identity-spi", "identity/spi/IdentityProvider.class"),
        ("json-utils", "protocols/jsoncore/JsonWriter.class"),
        ("metrics-spi", "metrics/SdkMetric.class"),
        ("netty-nio-client", "http/nio/netty/NettyNioAsyncHttpClient.class"),
        ("profiles", "profiles/ProfileFile.class"),
        ("protocol-core", "protocols/core/OperationInfo.class"),
        ("regions", "regions/Region.class"),
        ("retries", "retries/LegacyRetryStrategy.class"),
        ("retries-spi", "retries/api/RetryStrategy.class"),
        ("s3", "services/s3/S3Client.class"),
        ("s3-transfer-manager", "transfer/s3/S3TransferManager.class"),
        ("sdk-core", "core/SdkBytes.class"),
        ("third-party-jackson-core", "thirdparty/jackson/core/JsonFactory.class"),
        ("utils", "utils/SystemSetting.class"),
        ("utils-lite", "utilslite/SdkInternalThreadLocal.class"),
    )),
)
S3A_FETCH_COMMAND = "ssm-spark jars fetch --s3a [DIR]   (or: python -m ssm_spark.jars fetch --s3a --dir DIR)"


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


def _sums(d: Path) -> dict[str, str]:
    sums = {}
    sums_file = d / "SHA256SUMS"
    if sums_file.exists():
        for line in sums_file.read_text().splitlines():
            digest, _, name = line.partition("  ")
            sums[name.strip()] = digest.strip()
    return sums


def _verify(d: Path, arts: tuple[Artifact, ...], missing: str) -> list[Path]:
    sums, sums_file = _sums(d), d / "SHA256SUMS"
    paths = []
    for art in arts:
        p = d / art.filename
        if not p.exists():
            raise SparkSetupError(f"{missing} jar missing: {p} ({art.coordinate}). Fetch it with: "
                                  f"{FETCH_COMMAND if arts is ARTIFACTS else S3A_FETCH_COMMAND}")
        if art.filename not in sums:
            _check_jar(p, art)
        elif _sha256(p) != sums[art.filename]:
            raise SparkSetupError(f"{p}: SHA-256 differs from {sums_file}; the jar is damaged. Delete it and run "
                                  f"{FETCH_COMMAND if arts is ARTIFACTS else S3A_FETCH_COMMAND}")
        paths.append(p)
    return paths


def verify(directory: str | os.PathLike | None = None, s3a: bool = False) -> list[Path]:
    """Check that every jar is present and intact; return their paths in classpath order.

    A jar is intact when its SHA-256 matches ``SHA256SUMS`` (written by :func:`fetch` after a full
    check: Maven's strict checksums, then the jar opened as a zip and its marker class found).
    ``s3a``: the S3A jars too (:data:`S3A_ARTIFACTS`, after the Sedona ones).

    Raises
    ------
    SparkSetupError
        Naming the missing or damaged jar and the command that fetches it.
    """
    d = jars_dir(directory)
    paths = _verify(d, ARTIFACTS, "Sedona")
    return paths + _verify(d, S3A_ARTIFACTS, "S3A (hadoop-aws / AWS SDK)") if s3a else paths


def s3a_jars(directory: str | os.PathLike | None = None) -> list[Path]:
    """The S3A jars when every one of them was fetched (``--s3a``); ``[]`` when none was.

    Raises
    ------
    SparkSetupError
        Some but not all of them there, or one damaged (named, with the command that fetches them).
    """
    d = jars_dir(directory)
    if not any((d / a.filename).exists() for a in S3A_ARTIFACTS):
        return []
    return _verify(d, S3A_ARTIFACTS, "S3A (hadoop-aws / AWS SDK)")


def _mvn_copy(mvn: str, arts: list[Artifact], d: Path) -> None:
    """Copy ``arts`` (no transitive dependency) into ``d`` with one ``mvn`` run (strict checksums)."""
    import tempfile

    deps = "".join(f"<dependency><groupId>{a.group}</groupId><artifactId>{a.artifact}</artifactId>"
                   f"<version>{a.version}</version></dependency>" for a in arts)
    with tempfile.TemporaryDirectory(prefix="ssm-jars-") as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text('<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
                       '<groupId>ssm-spark</groupId><artifactId>jars</artifactId><version>1</version>'
                       f"<dependencies>{deps}</dependencies></project>")
        cmd = [mvn, "-q", "-B", "-C", "-f", str(pom),
               "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies",
               "-DexcludeTransitive=true", f"-DoutputDirectory={d}", "-Dmdep.overWriteReleases=false"]
        log.info("fetching %d jars (%s, ...)", len(arts), arts[0].coordinate)
        res = subprocess.run(cmd, capture_output=True, text=True)
    missing = [a.coordinate for a in arts if not (d / a.filename).exists()]
    if res.returncode != 0 or missing:
        tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-8:])
        raise SparkSetupError(f"mvn could not fetch {', '.join(missing) or 'the jars'} from Maven Central:\n{tail}")


def fetch(directory: str | os.PathLike | None = None, mvn: str = "mvn", s3a: bool = False) -> list[Path]:
    """Copy the jars from Maven Central with ``mvn`` (idempotent) and verify them.

    ``s3a``: also the S3A jars (:data:`S3A_ARTIFACTS`); without it, S3A jars already there stay
    (and recorded in ``SHA256SUMS``).

    Raises
    ------
    SparkSetupError
        If Maven is missing or cannot fetch an artifact.
    """
    d = jars_dir(directory)
    try:
        return verify(d, s3a)
    except SparkSetupError:
        pass
    if shutil.which(mvn) is None:
        raise SparkSetupError(f"'{mvn}' not found: install Maven (Debian: apt-get install maven) to fetch the jars")
    d.mkdir(parents=True, exist_ok=True)
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
    if s3a:
        wanted = [a for a in S3A_ARTIFACTS if not (d / a.filename).exists()]
        if wanted:
            _mvn_copy(mvn, wanted, d)
    sums, lines = _sums(d), []
    for art in ARTIFACTS + S3A_ARTIFACTS:
        target = d / art.filename
        if target.exists():
            if art in ARTIFACTS or s3a or art.filename not in sums:
                _check_jar(target, art)
            lines.append(f"{_sha256(target)}  {art.filename}")
    write_text_atomic(d / "SHA256SUMS", "\n".join(lines) + "\n")
    return verify(d, s3a)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ssm_spark.jars", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["fetch", "verify", "packages", "jars"],
                        help="fetch, verify, or print for spark-submit: packages (--packages) or jars (--jars)")
    parser.add_argument("--dir", default=None, help="jars folder (default: $SSM_SPARK_JARS, else the checkout's jars/ or ~/.cache/ssm-spark/jars-VERSION)")
    parser.add_argument("--s3a", action="store_true", help="also hadoop-aws and the AWS SDK modules (s3a:// in Spark)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.action == "packages":
            print(maven_packages())
            return 0
        # for --jars the S3A jars only when asked (--s3a): a cluster's own Hadoop may differ from
        # pyspark's 3.4.1, and a second hadoop-aws on its classpath would clash with the cluster's
        paths = fetch(args.dir, s3a=args.s3a) if args.action == "fetch" else verify(args.dir, args.s3a)
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
