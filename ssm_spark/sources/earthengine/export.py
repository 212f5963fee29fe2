"""``ssm-spark ee-export``: per-date feature stacks exported from Earth Engine as GeoTIFF tiles of the grid.

Plan: for each date and each tile of the region, the dynamic stack; once per tile, the static and
classes stacks. Every export is ``ee.batch.Export.image.toCloudStorage`` (or ``toDrive``) with
``region`` = the tile's rectangle in the grid's CRS, ``crs`` and ``crsTransform`` = the grid's, so
each file is exactly one grid tile, named as the stack reader expects::

    <prefix>/stacks/<YYYY-MM-DD>/<grid>_<tile_row>_<tile_col>.tif      vv_db ... precip_mm (float32)
    <prefix>/static/<grid>_<tile_row>_<tile_col>.tif                   clay_pct ... slope_deg (float32)
    <prefix>/static/<grid>_<tile_row>_<tile_col>_classes.tif           landcover, climate (uint8)

Copy the bucket or Drive folder into ``OUTPUT/`` (``gsutil -m rsync -r gs://BUCKET/PREFIX OUTPUT``),
then ``ssm-spark ee-export --finalize --output OUTPUT`` writes our band names into the files' band
descriptions (from the recorded plan) and turns the exports' masked pixels (``noData`` -9999 in the
float stacks) into NaN, and ``ssm-spark produce --stacks OUTPUT/stacks`` reads them.

Task manager (:class:`TaskManager`): submits at most ``export.max_in_flight`` tasks at once, polls
them every ``export.poll_seconds``, retries quota (HTTP 429) and transient errors with exponential
backoff (submission errors, and tasks that FAILED with a transient message), and records each task's
state in ``OUTPUT/ee_export_state.json`` after every change, so a re-run submits only what is
missing, failed, cancelled or changed (the request's hash), and resumes polling tasks still running.
The backend is one thin interface (:class:`TaskBackend`: ``submit``, ``status``); tests inject a
fake one. ``--dry-run`` prints the plan and the serialised requests, with no network or credentials.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import os
import random
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from ssm_spark.errors import ConfigError, InputError
from ssm_spark.io import write_json_atomic
from ssm_spark.sources.earthengine import requests as R
from ssm_spark.sources.earthengine.client import EarthEngineError, is_transient, retry

if TYPE_CHECKING:  # pragma: no cover
    from ssm_spark.config import Config
    from ssm_spark.grid import Grid
    from ssm_spark.sources.earthengine.settings import EarthEngineConfig

log = logging.getLogger(__name__)

__all__ = ["ExportItem", "plan", "build_task", "serialize", "TaskBackend", "EEBackend", "TaskManager",
           "finalize", "STATE_FILE", "run"]

STATE_FILE = "ee_export_state.json"
#: Masked pixels of the float stacks are written as this (GeoTIFF ``noData``); :func:`finalize` makes them NaN.
EXPORT_NODATA = -9999.0
DONE, FAILED, CANCELLED = "COMPLETED", "FAILED", "CANCELLED"
ACTIVE = ("UNSUBMITTED", "READY", "RUNNING", "CANCEL_REQUESTED")


@dataclass(frozen=True)
class ExportItem:
    """One export: a stack kind (dynamic, static, classes) of one tile (and date)."""

    kind: str
    tile_row: int
    tile_col: int
    date: str | None
    file: str  # relative path under the output folder (and under the bucket prefix)
    bands: tuple[str, ...]
    dtype: str

    @property
    def key(self) -> str:
        return self.file

    @property
    def description(self) -> str:
        """The task's description (Earth Engine allows letters, digits, ``-_.,:;``, 100 characters)."""
        d = self.date.replace("-", "") if self.date else "static"
        return f"ssm_{self.kind}_{d}_{self.tile_row}_{self.tile_col}"[:100]


def plan(grid: "Grid", tiles: Sequence[tuple[int, int]], dates: Sequence[str], *, static: bool = True
         ) -> list[ExportItem]:
    """The exports of tiles x dates (dynamic) and, with ``static``, of each tile's static and classes stacks."""
    items = []
    for tr, tc in sorted(tiles):
        name = f"{grid.name}_{tr}_{tc}"
        if static:
            for kind, suffix in (("static", ""), ("classes", "_classes")):
                bands, dtype = R.STACKS[kind]
                items.append(ExportItem(kind, tr, tc, None, f"static/{name}{suffix}.tif", bands, dtype))
    for d in sorted(dates):
        for tr, tc in sorted(tiles):
            bands, dtype = R.STACKS["dynamic"]
            items.append(ExportItem("dynamic", tr, tc, d, f"stacks/{d}/{grid.name}_{tr}_{tc}.tif", bands, dtype))
    return items


def build_task(item: ExportItem, cfg: "EarthEngineConfig", grid: "Grid"):
    """The ``ee.batch.Task`` of an export (not started)."""
    import ee

    region = R.tile_region(grid, item.tile_row, item.tile_col)
    image = R.stack(item.kind, cfg, grid, item.date, region)
    e = cfg.export
    prefix = f"{e.prefix.rstrip('/')}/{item.file[:-4]}" if e.prefix else item.file[:-4]
    common = dict(description=item.description, fileNamePrefix=prefix, region=region, crs=R.grid_crs(grid),
                  crsTransform=R.crs_transform(grid), maxPixels=e.max_pixels, fileFormat="GeoTIFF",
                  formatOptions={"noData": 0 if item.dtype == "uint8" else EXPORT_NODATA})
    if e.destination == "gcs":
        if not e.bucket:
            raise ConfigError("earthengine.export.bucket is not set (destination gcs): name the Cloud Storage "
                              "bucket, or set earthengine.export.destination=drive")
        return ee.batch.Export.image.toCloudStorage(image, bucket=e.bucket, **common)
    return ee.batch.Export.image.toDrive(image, folder=e.drive_folder, **common)


def serialize(task: Any) -> dict:
    """A task's request as JSON-able data: the image graph (``ee.serializer``) and the export options."""
    import ee

    out = {k: v for k, v in task.config.items() if k != "expression"}
    out["expression"] = json.loads(ee.serializer.toJSON(task.config["expression"]))
    return out


def request_hash(request: dict) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------- task manager


class TaskBackend(Protocol):
    """Where tasks run: Earth Engine (:class:`EEBackend`) or a fake in tests."""

    def submit(self, item: ExportItem, task: Any) -> str:
        """Start the task; its id. Raises on failure (quota/transient errors are retried by the manager)."""

    def status(self, task_id: str) -> dict:
        """``{"state": READY|RUNNING|COMPLETED|FAILED|CANCELLED|..., "error_message": str|None}``."""


class EEBackend:
    """Earth Engine's batch API (``Task.start``, ``ee.data.getTaskStatus``)."""

    def submit(self, item: ExportItem, task: Any) -> str:
        task.start()
        return str(task.id)

    def status(self, task_id: str) -> dict:
        import ee

        st = ee.data.getTaskStatus(task_id)[0]
        return {"state": st.get("state", "UNKNOWN"), "error_message": st.get("error_message")}


@dataclass
class TaskManager:
    """Submit, poll, retry and record exports (see the module docstring).

    Parameters
    ----------
    backend : TaskBackend
    output : path
        The output folder; the state file is ``output/ee_export_state.json``.
    cfg : EarthEngineConfig
        ``export`` settings: ``max_in_flight``, ``poll_seconds``, ``max_attempts``, ``backoff_seconds``,
        ``max_backoff_seconds``, ``timeout_hours``.
    build : callable(ExportItem) -> (task, request dict)
        Builds an item's task and its serialised request (the request's hash decides "changed").
    sleep, clock : callables
        Injected in tests (no real waiting).
    """

    backend: TaskBackend
    output: Path
    cfg: "EarthEngineConfig"
    build: Callable[[ExportItem], tuple[Any, dict]]
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        self.state_path = self.output / STATE_FILE
        self.state = self._load()

    def _load(self) -> dict:
        if not self.state_path.is_file():
            return {"version": 1, "tasks": {}}
        try:
            st = json.loads(self.state_path.read_text())
            if not isinstance(st.get("tasks"), dict):
                raise ValueError("no 'tasks' object")
            return st
        except (OSError, ValueError) as exc:
            raise InputError(f"{self.state_path}: unreadable export state ({exc}); move it away to start over") from exc

    def _save(self) -> None:
        write_json_atomic(self.state_path, self.state, indent=1, sort_keys=True)   # creates the folder

    def _record(self, item: ExportItem, **kv: Any) -> dict:
        rec = self.state["tasks"].setdefault(item.key, {"file": item.file, "kind": item.kind, "date": item.date,
                                                         "tile": [item.tile_row, item.tile_col],
                                                         "bands": list(item.bands), "dtype": item.dtype,
                                                         "attempts": 0})
        rec.update(kv, updated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
        self._save()
        return rec

    def _backoff(self, attempt: int) -> float:
        e = self.cfg.export
        return min(e.max_backoff_seconds, e.backoff_seconds * 2 ** max(0, attempt - 1)) * (0.5 + self.rng.random())

    def todo(self, items: Sequence[ExportItem]) -> tuple[list, list, list]:
        """(to submit, to resume polling, complete) of a plan, from the recorded state and request hashes."""
        submit, resume, done = [], [], []
        for it in items:
            _, req = self.build(it)
            h = request_hash(req)
            rec = self.state["tasks"].get(it.key)
            if rec is None or rec.get("request_sha256") != h:
                submit.append((it, h))
            elif rec.get("state") == DONE:
                done.append(it)
            elif rec.get("state") in ACTIVE and rec.get("task_id"):
                resume.append((it, h))
            else:  # failed, cancelled, never started
                submit.append((it, h))
        return submit, resume, done

    def _submit(self, it: ExportItem, h: str) -> str | None:
        task, _ = self.build(it)
        rec = self.state["tasks"].get(it.key, {})
        attempts = int(rec.get("attempts", 0)) if rec.get("request_sha256") == h else 0
        e = self.cfg.export
        try:
            n = {"i": 0}

            def call() -> str:
                n["i"] += 1
                return self.backend.submit(it, task)

            tid = retry(call, f"submit {it.description}", attempts=e.max_attempts, backoff_s=e.backoff_seconds,
                        max_backoff_s=e.max_backoff_seconds, sleep=self.sleep, rng=self.rng)
        except EarthEngineError as exc:
            self._record(it, state=FAILED, task_id=None, request_sha256=h, attempts=attempts + n["i"], error=str(exc))
            log.error("export %s: submission failed: %s", it.file, exc)
            return None
        self._record(it, state="READY", task_id=tid, request_sha256=h, attempts=attempts + n["i"], error=None)
        log.info("export %s: submitted as task %s", it.file, tid)
        return tid

    def run(self, items: Sequence[ExportItem]) -> dict:
        """Run a plan to the end (every task complete or failed for good); the summary."""
        e = self.cfg.export
        submit, resume, done = self.todo(items)
        log.info("exports: %d planned, %d complete already, %d to resume, %d to submit", len(items), len(done),
                 len(resume), len(submit))
        pending = deque(submit)
        active: dict[str, tuple[ExportItem, str, str]] = {it.key: (it, h, self.state["tasks"][it.key]["task_id"])
                                                         for it, h in resume}
        not_before: dict[str, float] = {}
        t_end = self.clock() + e.timeout_hours * 3600
        submitted = completed = 0
        failed: dict[str, str] = {}
        while pending or active:
            while pending and len(active) < e.max_in_flight:
                it, h = pending[0]
                if not_before.get(it.key, 0) > self.clock():
                    break
                pending.popleft()
                tid = self._submit(it, h)
                submitted += 1
                if tid is None:
                    failed[it.key] = self.state["tasks"][it.key]["error"]
                else:
                    active[it.key] = (it, h, tid)
            for key, (it, h, tid) in list(active.items()):
                try:
                    st = retry(lambda: self.backend.status(tid), f"status of {it.description}",
                               attempts=e.max_attempts, backoff_s=e.backoff_seconds,
                               max_backoff_s=e.max_backoff_seconds, sleep=self.sleep, rng=self.rng)
                except EarthEngineError as exc:
                    log.warning("export %s: status unknown (%s); polling again later", it.file, exc)
                    continue
                state = st.get("state", "UNKNOWN")
                rec = self.state["tasks"][key]
                if state != rec.get("state"):
                    self._record(it, state=state, error=st.get("error_message"))
                if state == DONE:
                    del active[key]
                    completed += 1
                elif state in (FAILED, CANCELLED):
                    del active[key]
                    msg = st.get("error_message") or state
                    if state == FAILED and is_transient(Exception(msg)) and rec["attempts"] < e.max_attempts:
                        wait = self._backoff(rec["attempts"])
                        log.warning("export %s: task %s failed (%s, transient); resubmitting in %.0f s", it.file, tid,
                                    msg, wait)
                        not_before[key] = self.clock() + wait
                        pending.append((it, h))
                    else:
                        failed[key] = msg
                        log.error("export %s: task %s %s: %s", it.file, tid, state.lower(), msg)
            n_done = len(done) + completed
            log.info("exports: %d/%d complete, %d running, %d waiting, %d failed", n_done, len(items), len(active),
                     len(pending), len(failed))
            if not (pending or active):
                break
            if self.clock() > t_end:
                for key, (it, _, _) in active.items():
                    failed[key] = f"still {self.state['tasks'][key]['state']} after {e.timeout_hours} h (re-run resumes)"
                break
            waits = [max(0.0, not_before.get(it.key, 0) - self.clock()) for it, _ in pending]
            self.sleep(e.poll_seconds if active or not waits else max(min(waits), 0.0))
        return {"planned": len(items), "complete_before": len(done), "resumed": len(resume), "submitted": submitted,
                "completed": completed, "failed": [{"file": k, "error": v} for k, v in sorted(failed.items())],
                "state_file": str(self.state_path)}


def finalize(output: str | os.PathLike) -> dict:
    """Write the recorded band names into the band descriptions of the exported files under ``output``
    (copied there from the bucket or Drive): the stack reader reads bands by description.

    Returns ``{"named": [...], "missing": [...]}`` (completed exports whose file is not there yet).
    """
    import numpy as np
    import rasterio

    output = Path(output)
    st_path = output / STATE_FILE
    if not st_path.is_file():
        raise InputError(f"{st_path} not found: run ssm-spark ee-export for this output folder first")
    tasks = json.loads(st_path.read_text())["tasks"]
    named, missing = [], []
    for rec in tasks.values():
        if rec.get("state") != DONE:
            continue
        p = output / rec["file"]
        if not p.is_file():
            missing.append(rec["file"])
            continue
        with rasterio.open(p, "r+") as dst:
            if dst.count != len(rec["bands"]):
                raise InputError(f"{p}: {dst.count} band(s), the export had {len(rec['bands'])} ({rec['bands']}): "
                                 "not the file this export wrote?")
            if dst.dtypes[0].startswith("float"):  # Earth Engine's masked pixels -> NaN, the stack convention
                for i in range(1, dst.count + 1):
                    a = dst.read(i)
                    hole = a == EXPORT_NODATA
                    if hole.any():
                        a[hole] = np.nan
                        dst.write(a, i)
                dst.nodata = float("nan")
            for i, b in enumerate(rec["bands"], 1):
                dst.set_band_description(i, b)
        named.append(rec["file"])
    return {"named": named, "missing": missing}


# ------------------------------------------------------------------------------------------------ CLI


def _dates(args: argparse.Namespace) -> list[str]:
    """The dates to export: ``--dates`` or every day of ``--start..--end`` (dates parsed by the CLI)."""
    if args.dates:
        if args.start or args.end:
            raise ConfigError("give --dates or --start/--end, not both")
        return [d.isoformat() for d in args.dates]
    if bool(args.start) != bool(args.end):
        raise ConfigError(f"--{'start' if args.start else 'end'} without --{'end' if args.start else 'start'}: "
                          "give both (the range is inclusive), or --dates")
    if not args.start:
        return []  # the static stacks only
    d0, d1 = args.start, args.end
    if d1 < d0:
        raise ConfigError(f"--end {d1} is before --start {d0}")
    return [(d0 + dt.timedelta(days=i)).isoformat() for i in range((d1 - d0).days + 1)]


def _s1_dates(client: Any, cfg: "EarthEngineConfig", grid: "Grid", region, dates: list[str]) -> list[str]:
    import ee

    d0, d1 = dt.date.fromisoformat(dates[0]), dt.date.fromisoformat(dates[-1]) + dt.timedelta(days=1)
    col = R.s1_collection(cfg, d0, d1, region)
    req = col.aggregate_array("system:time_start").map(lambda t: ee.Date(t).format("YYYY-MM-dd")).distinct().sort()
    have = set(client.get_info(req, "Sentinel-1 dates over the region") or [])
    return [d for d in dates if d in have]


def run(args: argparse.Namespace, cfg: "Config") -> int:
    """``ssm-spark ee-export``: prints the plan (``--dry-run``), the finalize result, or the run summary."""
    from ssm_spark.product.region import resolve_region

    if args.finalize:
        print(json.dumps(finalize(args.output), indent=2))
        return 0
    grid = cfg.grid.build()
    ec = cfg.earthengine
    rgn = resolve_region(args.region, cfg, grid)
    dates = _dates(args)
    if args.dry_run:
        from ssm_spark.sources.earthengine.client import offline

        offline(ec.project or "ssm-spark-dry-run")
        items = plan(grid, rgn.tiles, dates, static=not args.no_static)
        out = {"region": rgn.describe(grid), "grid": grid.name, "dates": dates,
               "note": None if args.all_days or args.dates else
               "live runs keep only the days with a Sentinel-1 scene over the region",
               "exports": [{"file": it.file, "description": it.description, "bands": list(it.bands),
                            "request": serialize(build_task(it, ec, grid))} for it in items]}
        print(json.dumps(out, indent=1))
        return 0
    from ssm_spark.sources.earthengine.client import EEClient

    client = EEClient.connect(ec)
    if dates and not (args.all_days or args.dates):
        import ee

        import numpy as np

        ts = grid.tile_size
        rows = np.array([r * ts for r, _ in rgn.tiles] + [(r + 1) * ts for r, _ in rgn.tiles])
        cols = np.array([c * ts for _, c in rgn.tiles] + [(c + 1) * ts for _, c in rgn.tiles])
        x0, x1 = grid.x0 + cols.min() * grid.cell, grid.x0 + cols.max() * grid.cell
        y0, y1 = grid.y0 - rows.max() * grid.cell, grid.y0 - rows.min() * grid.cell
        area = ee.Geometry.Rectangle([x0, y0, x1, y1], proj=R.grid_crs(grid), geodesic=False)
        dates = _s1_dates(client, ec, grid, area, dates)
    items = plan(grid, rgn.tiles, dates, static=not args.no_static)

    def build(it: ExportItem):
        t = build_task(it, ec, grid)
        return t, serialize(t)

    mgr = TaskManager(EEBackend(), Path(args.output), ec, build)
    summary = mgr.run(items)
    print(json.dumps(summary, indent=2))
    return 0 if not summary["failed"] else 1
