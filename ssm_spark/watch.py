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

Limits. Spark's file source sees a path once: files must be placed whole (write then rename, as
:mod:`ssm_spark.io` does) and not rewritten in place; a replaced file is not seen again (run
``produce`` for that date). Completeness and the quiet period are checked on the driver's view of
the stacks folder when it is a local path, else on the stream's records.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import unquote, urlparse

from ssm_spark.errors import InputError
from ssm_spark.io import write_json_atomic, write_text_atomic

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

    from ssm_spark.config import Config

log = logging.getLogger(__name__)

__all__ = ["watch", "WATCH_DIR", "STATE", "LOG"]

WATCH_DIR, STATE, LOG, CHECKPOINT = "_watch", "state.json", "log.jsonl", "checkpoint"
_SCHEMA = "path string, modificationTime timestamp, length long, content binary"
_STACK_SUFFIXES = (".tif", ".tiff")


def _local(url: str) -> str:
    """A Spark path (``file:/a/b``) as a local path; other schemes unchanged."""
    u = urlparse(url)
    return unquote(u.path) if u.scheme in ("", "file") else url


def _utc(t: float | None) -> str | None:
    return None if t is None else dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="milliseconds")


class _State:
    """The dates seen and not committed (``state.json``), shared by the stream's thread and the driver loop."""

    def __init__(self, folder: Path, stacks: str, manifest: str, start: dt.date | None) -> None:
        self.path, self.stacks, self.manifest, self.start = folder / STATE, stacks, manifest, start
        self.lock = threading.Lock()
        self.dates: dict[str, dict] = {}
        if self.path.exists():
            data = json.loads(self.path.read_text())
            if data.get("stacks") != stacks:
                raise InputError(f"{folder}: this watch state follows {data.get('stacks')}, not {stacks}; use "
                                 f"another --output, or remove {folder} to start over (committed dates are kept)")
            self.dates = data["dates"]
        elif (folder / CHECKPOINT).exists():
            raise InputError(f"{folder}: a streaming checkpoint without {STATE} (the dates seen but not committed "
                             f"are lost); remove {folder} to start over (committed dates are skipped by their markers)")

    def save(self) -> None:
        write_json_atomic(self.path, {"stacks": self.stacks, "dates": self.dates}, sort_keys=True)

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
    def __init__(self, spark: "SparkSession", cfg: "Config", args: tuple, stacks: str, output: Path,
                 start: dt.date | None, hook: Callable | None, once: bool) -> None:
        self.spark, self.cfg, self.wc, self.args, self.once = spark, cfg, cfg.watch, args, once
        self.stacks, self.output, self.hook = stacks, output, hook
        self.folder = output / WATCH_DIR
        self.local = urlparse(stacks).scheme in ("", "file")
        self.state = _State(self.folder, stacks, self.wc.manifest, start)
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
                              hook=self.hook)
                res = run["dates"].get(date, {"status": "failed", "reason": "not in the run"})
                error = None if res["status"] in ("produced", "skipped") else (res.get("reason") or (
                    f"{res['status']}: " + "; ".join(f.get("reason", "?") for f in run["failed_files"]))[:500])
            except Exception as exc:  # noqa: BLE001 - recorded, logged and retried; not lost
                log.exception("watch %s: produce failed (attempt %d)", date, attempt)
                res, error = {"status": "failed"}, f"{type(exc).__name__}: {exc}"
            entry.update(status=res["status"], produce_s=round(time.time() - t0, 2))
            if error is None:
                marker = self.output / "parquet" / f"date={date}" / "_SUCCESS.json"
                committed = marker.stat().st_mtime  # the commit: its marker, written last
                entry.update(committed=_utc(committed), latency_s=round(committed - landed, 2)
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


def watch(spark: "SparkSession", cfg: "Config", models: str | os.PathLike, stacks: str | os.PathLike,
          region: str | None, output: str | os.PathLike, static: str | os.PathLike | None = None, *,
          once: bool = False, start: dt.date | None = None, retry_failed: bool = False,
          max_seconds: float | None = None, hook: Callable[[str, str], None] | None = None) -> dict:
    """Watch a stacks folder and produce each date once its stack set is complete (module docstring).

    Parameters
    ----------
    spark, cfg, models, region, static
        As for :func:`ssm_spark.product.produce.produce`; ``cfg.watch`` holds the watcher's settings.
    stacks : path-like or URL
        The folder of ``<YYYY-MM-DD>/`` folders the stream lists (any path Spark's file source reads).
    output : path-like
        The product folder; the watcher's checkpoint, state and log are under ``OUTPUT/_watch/``.
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

    Returns
    -------
    dict
        ``produced``, ``skipped`` (already committed), ``failed`` (date -> reason), ``waiting``
        (date -> why), ``latency_s`` (date -> commit - last input landing), ``batches``.

    Raises
    ------
    InputError
        A state of another stacks folder, or a checkpoint without its state.
    """
    from ssm_spark.product.files import OutputLock, ensure_writable

    stacks = str(stacks)
    if urlparse(stacks).scheme in ("", "file") and not Path(_local(stacks)).is_dir():
        raise InputError(f"--stacks {stacks}: not a folder (the watcher lists its <YYYY-MM-DD>/ folders)")
    output = ensure_writable(Path(output).resolve())
    folder = ensure_writable(output / WATCH_DIR)
    cdc = cfg.physics.change_detection
    if cdc.enabled and cdc.window_end is None:
        log.warning("watch: physics.change_detection.window_end is null (an open window): each landed date changes "
                    "the climatology, and with it the product hash of the dates committed before; close the window "
                    "for a stored climatology")
    with OutputLock(folder, "ssm-spark watch"):  # one watcher per checkpoint
        w = _Watcher(spark, cfg, (models, stacks, region, static), stacks, output, start, hook, once)
        if retry_failed:
            for d in w.state.dates.values():
                if d["status"] == "failed" and not d.get("manifest_error"):
                    d.update(status="waiting", attempts=0, next_try=0)
            w.state.save()
        wc = cfg.watch
        src = (spark.readStream.format("binaryFile").schema(_SCHEMA)
               .option("maxFilesPerTrigger", wc.max_files_per_trigger)
               .option("maxFileAge", "3650d")  # not Spark's 7 days: an archive's older files are dates too
               .load(stacks.rstrip("/") + "/*/"))
        writer = src.writeStream.foreachBatch(w.on_batch).option("checkpointLocation", str(folder / CHECKPOINT))
        t0 = time.time()
        if once:
            writer.trigger(availableNow=True).start().awaitTermination()
            w.tick()
        else:
            q = writer.trigger(processingTime=f"{wc.trigger_seconds:g} seconds").start()
            log.info("watch: %s every %g s -> %s (Ctrl-C or SIGTERM stops, after a date in production commits)",
                     stacks, wc.trigger_seconds, output)
            stop = _Stop()
            try:
                while q.isActive and not stop.asked and (max_seconds is None or time.time() - t0 < max_seconds):
                    w.tick()
                    q.awaitTermination(min(1.0, wc.trigger_seconds))
                if q.exception() is not None:
                    raise q.exception()
            finally:
                stop.restore()
                q.stop()
        _, why = w.waiting(time.time())
    for date, reason in why.items():
        log.info("watch %s: waiting: %s", date, reason)
    return {"output": str(output), "stacks": stacks, "batches": w.batches, **w.summary, "waiting": why,
            "seconds": round(time.time() - t0, 1)}
