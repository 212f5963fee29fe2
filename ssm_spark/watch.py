"""``ssm-spark watch``: near-real-time production, each date produced as soon as its stacks have landed.

A Spark Structured Streaming query (file source, ``binaryFile`` format, only the ``path``,
``modificationTime`` and ``length`` columns read: file contents never are) lists the files landing
under ``STACKS/<YYYY-MM-DD>/``. Each micro-batch records the files it brings into a small state file;
the driver then produces every date whose stack set is complete, with :func:`ssm_spark.product.produce.produce`
over that one date (the same code, climatology, registry and commit as ``ssm-spark produce``)::

    STACKS/<date>/*.tif, STACKS/<date>/MANIFEST.json      (written by the data provider, manifest last)
      -> streaming micro-batch (trigger every watch.trigger_seconds, or --once: availableNow)
      -> OUTPUT/_watch/state.json: the dates seen and not yet committed, their files, attempts
      -> a date is complete when its manifest's files have all landed, or (no manifest) when no
         file of its folder changed for watch.quiet_seconds
      -> produce(date, date) -> the date's commit (marker last) -> OUTPUT/_watch/log.jsonl

The manifest (name: ``watch.manifest``) is JSON, ``{"date": "YYYY-MM-DD", "files": ["<name>.tif", ...]}``
(``date`` optional; when given it must be the folder's). Its name may not start with ``_`` or ``.``:
Spark's file source skips such files.

Exactly once. The streaming checkpoint (``OUTPUT/_watch/checkpoint``) records which files were
seen; ``state.json`` (written atomically inside the micro-batch, before Spark commits the batch)
records the dates seen and not committed; the date's marker records that it is committed. Killed
anywhere and restarted, the watcher re-reads the state: a date that was seen is produced (never
skipped), and a committed one is skipped by produce's marker check (never re-produced). A date
whose production fails is kept in the state with its reason and retried after
``watch.retry_seconds`` (a ``--once`` run: at the next run), up to ``watch.max_attempts``; then it is
marked failed until a new file of the date lands or ``--retry-failed`` is given.

Latency. For each committed date the log holds the newest modification time of its input files
(the last landing), the marker's modification time (the commit) and their difference.

Object storage. ``--output s3://bucket/product`` (or any URL ``produce`` takes) publishes each date
exactly as ``produce --output s3://`` does (:mod:`ssm_spark.product.remote`: the date's objects,
its marker last, under the product's lock ``_LOCK.json`` for each produce call). The watcher's own
state (checkpoint, ``state.json``, ``log.jsonl``) is not on the store: the checkpoint is written by
Hadoop's filesystem API and ``state.json`` is replaced atomically by a rename, neither of which an
object store gives. It stays in a local folder, ``--state-dir`` (``state_dir``), else
``$SSM_STAGING_DIR/watch-<digest of the URL>``; neither given is refused. Its ``work/`` subfolder is
produce's local working folder. A watcher restarted without that folder (another machine, a lost
disk) starts a new checkpoint: the stream lists every landed file again and each date goes to
``produce``, which skips the dates whose marker is on the store, so nothing is produced twice and
nothing seen is lost; it costs one listing and one produce call (a skip) per landed date.
``state.json`` names its output and its stacks; a state folder of another output is refused.

``--stacks s3://bucket/stacks`` (``s3a://`` too) is listed by Spark's file source through Hadoop's
S3A (the jars: ``ssm-spark jars fetch --s3a``; without them the watcher refuses, exit 2, naming the
command), and produce reads the files through GDAL's ``/vsis3/``. Other stores' URLs (``gs://``,
``abfss://``) as stacks are refused by name (no connector is set up for Spark here).

More in docs/object_storage.md. Latency on a store: the commit is the moment the date's marker PUT returned (this machine's clock)
when the stacks are local; with stacks on a store the landing times are the objects'
``LastModified`` (the store's clock, whole seconds), so the commit is the marker's ``LastModified``
too. Each log line says which clock (``clock``): ``local``, ``store``, or ``mixed`` (stacks on a
store, output local: the difference includes the clocks' offset).

Limits. Spark's file source sees a path once: files must be placed whole (write then rename, as
:mod:`ssm_spark.io` does; an object PUT is whole by itself) and not rewritten in place; a replaced
file is not seen again (run ``produce`` for that date). Completeness and the quiet period are
checked on the driver's view of the stacks folder when it is a local path, else on the stream's
records.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import unquote, urlparse

from ssm_spark import storage
from ssm_spark.errors import InputError, SparkSetupError
from ssm_spark.io import write_json_atomic, write_text_atomic

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

    from ssm_spark.config import Config

log = logging.getLogger(__name__)

__all__ = ["watch", "plan", "Plan", "WATCH_DIR", "STATE", "LOG"]

WATCH_DIR, STATE, LOG, CHECKPOINT = "_watch", "state.json", "log.jsonl", "checkpoint"
_SCHEMA = "path string, modificationTime timestamp, length long, content binary"
_STACK_SUFFIXES = (".tif", ".tiff")


def _local(url: str) -> str:
    """A Spark path (``file:/a/b``) as a local path; other schemes unchanged."""
    u = urlparse(url)
    return unquote(u.path) if u.scheme in ("", "file") else url


def _utc(t: float | None) -> str | None:
    return None if t is None else dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Plan:
    """Where a watcher reads, writes and keeps its state (:func:`plan`)."""

    stacks: str  # as given: the state's key and produce's --stacks
    stream: str  # what Spark's file source lists (s3:// as s3a://)
    output: "str | Path"  # produce's --output: a local folder, or a URL
    folder: Path  # the watcher's checkpoint, state.json and log.jsonl
    work: Path | None  # with an output URL: produce's local working folder
    local_stacks: bool  # the stacks are a local folder (completeness checked on it; this machine's clock)

    @property
    def remote_output(self) -> bool:
        return self.work is not None


def plan(stacks: str | os.PathLike, output: str | os.PathLike, state_dir: str | os.PathLike | None = None,
         cfg: "Config | None" = None) -> Plan:
    """Resolve and check a watcher's stacks, output and state folder, before any Spark work (module docstring).

    Raises
    ------
    InputError
        Stacks on a store other than S3, an output URL without a local state folder (``--state-dir``
        or ``SSM_STAGING_DIR``), ``--state-dir`` with a local output, a local stacks path that is not
        a folder.
    SparkSetupError
        Stacks on S3 while the S3A jars were not fetched (``spark.jars.mode: local``).
    """
    import hashlib

    from ssm_spark import jars

    stacks, out = str(stacks), str(output)
    stream, local_stacks = stacks, urlparse(stacks).scheme in ("", "file")
    if storage.is_remote(stacks):
        url = storage.url_of(stacks).rstrip("/")
        scheme = urlparse(url).scheme.lower()
        if scheme not in ("s3", "s3a"):
            raise InputError(f"--stacks {stacks}: the watcher lists its stacks with Spark's file source, which reads "
                             "object storage here through Hadoop's S3A only (s3://); for a gs:// or abfss:// bucket "
                             "mount it (gcsfuse, blobfuse, a /Volumes path) or land the stacks in a local folder "
                             "(produce --stacks reads it through GDAL)")
        stream, local_stacks = "s3a://" + url.split("://", 1)[1], False
        jc = cfg.spark.jars if cfg is not None else None
        if (jc is None or jc.mode == "local") and not jars.s3a_jars(jc.dir if jc else None):
            raise SparkSetupError(f"--stacks {stacks}: Spark's file source lists it through Hadoop's S3A, whose jars "
                                  f"are not in {jars.jars_dir(jc.dir if jc else None)}; fetch them with "
                                  f"{jars.S3A_FETCH_COMMAND} (about 10 MB; spark.jars then includes them)")
    elif local_stacks and not Path(_local(stacks)).is_dir():
        raise InputError(f"--stacks {stacks}: not a folder (the watcher lists its <YYYY-MM-DD>/ folders)")
    if not storage.is_remote(out):
        if state_dir is not None:
            raise InputError(f"--state-dir {state_dir}: only for an --output URL; a local product keeps the "
                             f"watcher's state in {Path(out) / WATCH_DIR}")
        path = Path(out).resolve()
        return Plan(stacks, stream, path, path / WATCH_DIR, None, local_stacks)
    url = storage.url_of(out).rstrip("/")
    storage.filesystem(url)  # the store's package (s3fs, gcsfs, adlfs) installed: else refused by name
    base = os.environ.get("SSM_STAGING_DIR")
    if state_dir is None and not base:
        raise InputError(f"--output {url}: the watcher's state (its streaming checkpoint, state.json, log.jsonl) is "
                         "kept in a local folder, not on the store (the checkpoint needs a Hadoop filesystem, "
                         "state.json an atomic rename): give --state-dir DIR, a folder that outlives the watcher, or "
                         "set SSM_STAGING_DIR (a watcher restarted without it skips the dates committed on the store)")
    folder = (Path(state_dir) if state_dir is not None else
              Path(base) / f"watch-{hashlib.sha256(url.encode()).hexdigest()[:12]}").resolve()
    return Plan(stacks, stream, url, folder, folder / "work", local_stacks)


class _State:
    """The dates seen and not committed (``state.json``), shared by the stream's thread and the driver loop."""

    def __init__(self, folder: Path, stacks: str, manifest: str, start: dt.date | None,
                 output: str | None = None) -> None:
        self.path, self.stacks, self.manifest, self.start = folder / STATE, stacks, manifest, start
        self.output = output
        self.lock = threading.Lock()
        self.dates: dict[str, dict] = {}
        if self.path.exists():
            data = json.loads(self.path.read_text())
            if data.get("stacks") != stacks:
                raise InputError(f"{folder}: this watch state follows {data.get('stacks')}, not {stacks}; use "
                                 f"another --output, or remove {folder} to start over (committed dates are kept)")
            if output is not None and data.get("output", output) != output:
                raise InputError(f"{folder}: this watch state is the one of --output {data['output']}, not {output}; "
                                 f"use another --state-dir, or remove {folder} to start over (committed dates are "
                                 "skipped by their markers)")
            self.dates = data["dates"]
        elif (folder / CHECKPOINT).exists():
            raise InputError(f"{folder}: a streaming checkpoint without {STATE} (the dates seen but not committed "
                             f"are lost); remove {folder} to start over (committed dates are skipped by their markers)")

    def save(self) -> None:
        doc = {"stacks": self.stacks, "dates": self.dates, **({"output": self.output} if self.output else {})}
        write_json_atomic(self.path, doc, sort_keys=True)

    def record(self, rows: list, manifests: dict[str, Any], now: float) -> list[str]:
        """Add a micro-batch's files (path, mtime, length); ``manifests``: path -> text or an exception."""
        touched, ignored = set(), []
        with self.lock:
            for path, mtime, length in rows:
                p = Path(_local(path))
                date, name = p.parent.name, p.name
                try:
                    day = dt.date.fromisoformat(date)
                except ValueError:
                    ignored.append(path)
                    continue
                if (self.start and day < self.start) or not (name == self.manifest or p.suffix.lower() in _STACK_SUFFIXES):
                    ignored.append(path)
                    continue
                d = self.dates.setdefault(date, {"files": {}, "manifest": None, "first_seen": now, "attempts": 0,
                                                 "status": "waiting", "generation": 0})
                if d["status"] == "failed":
                    log.info("watch %s: a new file landed (%s), the failed date is retried", date, name)
                    d.update(status="waiting", attempts=0)
                d["last_seen"], d["generation"] = now, d["generation"] + 1
                d.pop("next_try", None)
                d["files"][name] = [mtime, length]
                if name == self.manifest:
                    d.pop("manifest_error", None)
                    d["manifest"], err = _parse_manifest(manifests.get(path), date)
                    if err:
                        d.update(status="failed", manifest_error=err, last_error=err)
                        log.error("watch %s: %s", date, err)
                touched.add(date)
            self.save()
        if ignored:
            log.info("watch: %d file(s) ignored (not a stack GeoTIFF or %s in a YYYY-MM-DD folder%s), e.g. %s",
                     len(ignored), self.manifest, f" on or after {self.start}" if self.start else "", ignored[0])
        return sorted(touched)


def _parse_manifest(text: Any, date: str) -> tuple[list[str] | None, str | None]:
    if isinstance(text, BaseException) or text is None:
        return None, f"manifest unreadable: {text}"
    try:
        doc = json.loads(text)
    except ValueError as exc:
        return None, f"manifest is not JSON: {exc}"
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, list) or not files or not all(isinstance(f, str) and "/" not in f for f in files):
        return None, 'manifest: expected {"files": ["<name>.tif", ...]} (names in the date folder)'
    if doc.get("date") not in (None, date):
        return None, f"manifest says date {doc.get('date')!r} in folder {date}"
    return sorted(files), None


class _Watcher:
    def __init__(self, spark: "SparkSession", cfg: "Config", args: tuple, p: Plan,
                 start: dt.date | None, hook: Callable | None, once: bool) -> None:
        self.spark, self.cfg, self.wc, self.args, self.once = spark, cfg, cfg.watch, args, once
        self.plan, self.stacks, self.output, self.hook = p, p.stacks, p.output, hook
        self.folder = p.folder
        self.local = p.local_stacks
        # a state folder beside a product on a store is bound to it (a local product's holds its own state)
        self.state = _State(self.folder, p.stacks, self.wc.manifest, start, p.output if p.remote_output else None)
        self.published: dict[str, float] = {}  # date -> this machine's time when its marker's PUT returned
        self.batches = 0
        self.summary: dict[str, Any] = {"produced": [], "skipped": [], "failed": {}, "latency_s": {}}

    # -- the stream's side (its own thread) ---------------------------------------------------
    def on_batch(self, df: Any, batch_id: int) -> None:
        from pyspark.sql import functions as F

        t0 = time.time()
        rows = [(r[0], r[1], r[2]) for r in
                df.select("path", F.col("modificationTime").cast("double"), "length").collect()]
        paths = [p for p, _, _ in rows if p.rsplit("/", 1)[-1] == self.wc.manifest]
        manifests: dict[str, Any] = {}
        if paths:
            try:
                got = self.spark.read.text(paths, wholetext=True).select("value", "_metadata.file_path").collect()
                manifests = {_local(r[1]): r[0] for r in got}
                manifests = {p: manifests.get(_local(p), manifests.get(p)) for p in paths}
            except Exception as exc:  # noqa: BLE001 - each manifest then records why
                manifests = {p: exc for p in paths}
        touched = self.state.record(rows, manifests, time.time())
        self.batches += 1
        log.info("watch: batch %d, %d file(s) of %d date(s) %s in %.1f s", batch_id, len(rows), len(touched),
                 ",".join(touched[:5]) + ("..." if len(touched) > 5 else ""), time.time() - t0)

    # -- the driver's side ------------------------------------------------------------------
    def _listing(self, date: str, d: dict) -> dict[str, list]:
        """The date's files now: the local folder when the stacks are local, else the stream's records."""
        if not self.local:
            return d["files"]
        folder = Path(_local(self.stacks)) / date
        out = {}
        for e in os.scandir(folder) if folder.is_dir() else []:
            if e.is_file() and (e.name == self.wc.manifest or Path(e.name).suffix.lower() in _STACK_SUFFIXES):
                st = e.stat()
                out[e.name] = [st.st_mtime, st.st_size]
        return out

    def waiting(self, now: float) -> tuple[list[str], dict[str, str]]:
        """Dates ready to produce, and why each other pending date waits."""
        ready, why = [], {}
        with self.state.lock:
            items = sorted(self.state.dates.items())
        for date, d in items:
            if d["status"] == "failed":
                why[date] = f"failed {d['attempts']} time(s): {d.get('last_error')}"
                continue
            if not self.once and d.get("next_try", 0) > now:  # a --once run: the run is the retry
                why[date] = f"retry {d['attempts'] + 1} in {d['next_try'] - now:.0f} s (last: {d.get('last_error')})"
                continue
            files = self._listing(date, d)
            if d.get("manifest"):
                missing = sorted(set(d["manifest"]) - set(files))
                if missing:
                    why[date] = f"manifest lists {len(missing)} file(s) not landed: {', '.join(missing[:5])}"
                else:
                    ready.append(date)
            elif self.wc.quiet_seconds is None:
                why[date] = f"no {self.wc.manifest} yet (watch.quiet_seconds is null: a manifest is required)"
            else:
                quiet = now - max((m for m, _ in files.values()), default=now)
                if quiet >= self.wc.quiet_seconds:
                    ready.append(date)
                else:
                    why[date] = f"no {self.wc.manifest}; quiet for {quiet:.0f} s of watch.quiet_seconds={self.wc.quiet_seconds:g}"
        return ready, why

    def tick(self) -> None:
        """Produce every ready date, oldest first."""
        from ssm_spark.product.produce import produce

        for date in self.waiting(time.time())[0]:
            with self.state.lock:
                d = self.state.dates[date]
                gen, attempt = d["generation"], d["attempts"] + 1
            landed = max((m for m, _ in self._listing(date, d).values()), default=None)
            t0 = time.time()
            entry: dict[str, Any] = {"date": date, "attempt": attempt, "last_input_landed": _utc(landed),
                                     "seen_s": round(d["last_seen"] - landed, 2) if landed else None}
            try:
                run = produce(self.spark, self.cfg, *self.args[:3], date, date, self.output, self.args[3],
                              hook=self._hook, staging_dir=self.plan.work)
                res = run["dates"].get(date, {"status": "failed", "reason": "not in the run"})
                error = None if res["status"] in ("produced", "skipped") else (res.get("reason") or (
                    f"{res['status']}: " + "; ".join(f.get("reason", "?") for f in run["failed_files"]))[:500])
            except Exception as exc:  # noqa: BLE001 - recorded, logged and retried; not lost
                log.exception("watch %s: produce failed (attempt %d)", date, attempt)
                res, error = {"status": "failed"}, f"{type(exc).__name__}: {exc}"
            entry.update(status=res["status"], produce_s=round(time.time() - t0, 2))
            if error is None:
                committed, clock = self._committed(date)  # the commit: its marker, written last
                entry.update(committed=_utc(committed), clock=clock, latency_s=round(committed - landed, 2)
                             if landed and res["status"] == "produced" else None)
                self.summary["produced" if res["status"] == "produced" else "skipped"].append(date)
                if res["status"] == "produced":
                    self.summary["latency_s"][date] = entry["latency_s"]
                    log.info("watch %s: committed %.1f s after its last input landed (seen by the stream after "
                             "%.1f s, produced in %.1f s)", date, entry["latency_s"] or 0, entry["seen_s"] or 0,
                             entry["produce_s"])
                else:
                    log.info("watch %s: already committed, skipped (marker unchanged)", date)
            else:
                entry["reason"] = error
                self.summary["failed"][date] = error
            with self.state.lock:
                d = self.state.dates[date]
                if error is None and d["generation"] == gen:
                    del self.state.dates[date]
                elif error is not None:
                    give_up = attempt >= self.wc.max_attempts
                    d.update(attempts=attempt, last_error=error, status="failed" if give_up else "waiting",
                             next_try=time.time() + self.wc.retry_seconds)
                    log.error("watch %s: not committed (attempt %d of %d): %s%s", date, attempt, self.wc.max_attempts,
                              error, "; given up until a new file of the date lands or --retry-failed"
                              if give_up else f"; retried in {self.wc.retry_seconds:g} s")
                self.state.save()
            self._log(entry)

    def _hook(self, stage: str, date: str) -> None:
        """produce's hook: the time a date's marker was PUT on the store; then the caller's own hook."""
        if stage == "published":
            self.published[date] = time.time()
        if self.hook is not None:
            self.hook(stage, date)

    def _committed(self, date: str) -> tuple[float, str]:
        """When the date's marker was written, on the clock the inputs' landing times are on, and that clock.

        A local product: the marker's modification time. A product on a store: with local stacks,
        this machine's time when the marker's PUT returned (a skipped date: the marker's
        ``LastModified``); with stacks on a store, the marker's ``LastModified`` (the store's clock).
        """
        rel = f"parquet/date={date}/_SUCCESS.json"
        if not self.plan.remote_output:
            return (Path(self.output) / rel).stat().st_mtime, "local" if self.local else "mixed"
        if self.local and date in self.published:
            return self.published.pop(date), "local"
        return storage.stat(f"{self.output}/{rel}")[1] / 1e9, "store"

    def _log(self, entry: dict) -> None:
        p = self.folder / LOG
        old = p.read_text() if p.exists() else ""
        write_text_atomic(p, old + json.dumps(entry, sort_keys=True) + "\n")


class _Stop:
    """SIGINT/SIGTERM ask the loop to stop between dates (an interrupted py4j call would break the
    session); a second signal interrupts at once. Only in the main thread (else: Python's own)."""

    def __init__(self) -> None:
        import signal

        self.asked, self._old = False, {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.asked:
            raise KeyboardInterrupt
        self.asked = True
        log.warning("watch: stopping after the date in production (if any) commits; again to interrupt now")

    def restore(self) -> None:
        import signal

        for sig, old in self._old.items():
            signal.signal(sig, old)


def _check_s3a(spark: "SparkSession", p: Plan) -> None:
    """The session can list ``s3a://``: S3A's class on its classpath; its settings from the environment
    (:func:`ssm_spark.storage.s3a_conf`) where the session was built without them."""
    from ssm_spark import jars

    hc = spark.sparkContext._jsc.hadoopConfiguration()
    for k, v in storage.s3a_conf().items():
        if hc.get(k[len("spark.hadoop."):]) is None:
            hc.set(k[len("spark.hadoop."):], v)
    try:
        spark.sparkContext._jvm.org.apache.hadoop.fs.FileSystem.getFileSystemClass("s3a", hc)
    except Exception as exc:  # noqa: BLE001 - py4j's error: the class is not on the classpath
        raise SparkSetupError(f"--stacks {p.stacks}: this Spark session cannot list s3a:// (Hadoop's S3A is not on "
                              f"its classpath: {str(exc).splitlines()[0][:200]}); fetch the jars with "
                              f"{jars.S3A_FETCH_COMMAND}, or on a cluster install hadoop-aws "
                              f"{jars.HADOOP_VERSION} and its AWS SDK") from None


def _stream_error(p: Plan, exc: BaseException) -> BaseException:
    """A failed stream over stacks on a store, named with the likely cause (else the error as it is)."""
    from ssm_spark.errors import InputIOError

    if p.local_stacks:
        return exc
    first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)[:300]
    return InputIOError(f"--stacks {p.stacks}: Spark's file source could not list {p.stream} ({first}); check the "
                        "credentials in the Spark JVMs' environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), the "
                        f"endpoint ({storage.endpoint() or 'AWS'}) and the bucket")


def watch(spark: "SparkSession", cfg: "Config", models: str | os.PathLike, stacks: str | os.PathLike,
          region: str | None, output: str | os.PathLike, static: str | os.PathLike | None = None, *,
          once: bool = False, start: dt.date | None = None, retry_failed: bool = False,
          max_seconds: float | None = None, hook: Callable[[str, str], None] | None = None,
          state_dir: str | os.PathLike | None = None) -> dict:
    """Watch a stacks folder and produce each date once its stack set is complete (module docstring).

    Parameters
    ----------
    spark, cfg, models, region, static
        As for :func:`ssm_spark.product.produce.produce`; ``cfg.watch`` holds the watcher's settings.
    stacks : path-like or URL
        The folder of ``<YYYY-MM-DD>/`` folders the stream lists (a local folder, any path Spark's
        file source reads, or ``s3://bucket/prefix`` through S3A).
    output : path-like or URL
        The product folder, the watcher's checkpoint, state and log under ``OUTPUT/_watch/``; or a
        product URL (``s3://bucket/product``), published date by date as ``produce`` does.
    once : bool
        Process what has landed (``availableNow``), produce what is complete, and return.
    start : date, optional
        Dates before it are ignored.
    retry_failed : bool
        Retry the dates the state marks failed (``watch.max_attempts`` reached).
    max_seconds : float, optional
        Without ``once``: stop after this long (default: run until interrupted).
    hook : callable(stage, date), optional
        Passed to ``produce`` (tests of interruptions).
    state_dir : path-like, optional
        With an output URL: the local folder of the watcher's state (default
        ``$SSM_STAGING_DIR/watch-<digest of the URL>``).

    Returns
    -------
    dict
        ``produced``, ``skipped`` (already committed), ``failed`` (date -> reason), ``waiting``
        (date -> why), ``latency_s`` (date -> commit - last input landing), ``batches``.

    Raises
    ------
    InputError
        A state of another stacks folder or output, a checkpoint without its state, or what
        :func:`plan` refuses.
    SparkSetupError
        Stacks on S3 without S3A on the session's classpath.
    InputIOError
        Stacks on a store the stream could not list (credentials, endpoint, bucket).
    """
    from ssm_spark.product.files import OutputLock, ensure_writable

    p = plan(stacks, output, state_dir, cfg)
    if not p.local_stacks and p.stream.startswith("s3a://"):
        _check_s3a(spark, p)
        storage.listdir(p.stacks)  # the Python side's view first: credentials, endpoint, bucket named
    if not p.remote_output:
        ensure_writable(Path(p.output))  # permission, read-only, a file in the way
    folder = ensure_writable(p.folder, "--state-dir" if p.remote_output else "--output")
    stacks = p.stacks
    cdc = cfg.physics.change_detection
    if cdc.enabled and cdc.window_end is None:
        log.warning("watch: physics.change_detection.window_end is null (an open window): each landed date changes "
                    "the climatology, and with it the product hash of the dates committed before; close the window "
                    "for a stored climatology")
    with OutputLock(folder, "ssm-spark watch"):  # one watcher per checkpoint
        w = _Watcher(spark, cfg, (models, stacks, region, static), p, start, hook, once)
        if retry_failed:
            for d in w.state.dates.values():
                if d["status"] == "failed" and not d.get("manifest_error"):
                    d.update(status="waiting", attempts=0, next_try=0)
            w.state.save()
        wc = cfg.watch
        src = (spark.readStream.format("binaryFile").schema(_SCHEMA)
               .option("maxFilesPerTrigger", wc.max_files_per_trigger)
               .option("maxFileAge", "3650d")  # not Spark's 7 days: an archive's older files are dates too
               .load(p.stream.rstrip("/") + "/*/"))
        writer = src.writeStream.foreachBatch(w.on_batch).option("checkpointLocation", str(folder / CHECKPOINT))
        t0 = time.time()
        if once:
            try:
                writer.trigger(availableNow=True).start().awaitTermination()
            except Exception as exc:  # noqa: BLE001 - a store's listing error named; the rest as it is
                err = _stream_error(p, exc)
                if err is exc:
                    raise
                raise err from None
            w.tick()
        else:
            q = writer.trigger(processingTime=f"{wc.trigger_seconds:g} seconds").start()
            log.info("watch: %s every %g s -> %s (Ctrl-C or SIGTERM stops, after a date in production commits)",
                     stacks, wc.trigger_seconds, p.output)
            stop = _Stop()
            try:
                while q.isActive and not stop.asked and (max_seconds is None or time.time() - t0 < max_seconds):
                    w.tick()
                    q.awaitTermination(min(1.0, wc.trigger_seconds))
                if q.exception() is not None:
                    exc = q.exception()
                    err = _stream_error(p, exc)
                    if err is exc:
                        raise exc
                    raise err from None
            finally:
                stop.restore()
                q.stop()
        _, why = w.waiting(time.time())
    for date, reason in why.items():
        log.info("watch %s: waiting: %s", date, reason)
    out = {"output": str(p.output), "stacks": stacks, "batches": w.batches, **w.summary, "waiting": why,
           "seconds": round(time.time() - t0, 1)}
    if p.remote_output:
        out["state"] = str(folder)
    return out
