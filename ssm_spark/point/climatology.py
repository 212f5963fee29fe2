"""The change-detection climatology of a point's cell, for registries that use change detection.

Local stacks: the climatology stack ``produce`` built (:func:`find_climatology`), attached exactly as
produce's ``read_clipped`` attaches it. Earth Engine: :class:`EarthEngineClimatology` builds the cell's
own from its Sentinel-1 series over the configured reference window
(``physics.change_detection.window_start`` .. ``window_end``; unset: the registry's training period),
sampled through the same interface as
the point (:func:`~ssm_spark.sources.earthengine.sample.sample_series`, ``stack="s1"``), cleaned by
the stack reader's value rules, stored as float32 like a stack tile, and computed by the same
:func:`~ssm_spark.product.climatology.tile_climatology` (hence
:func:`ssm_spark.physics.change_detection.climatology`) as produce's stack.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from ssm_spark.errors import ConfigError, InputError

if TYPE_CHECKING:  # pragma: no cover
    from ssm_spark.config import Config
    from ssm_spark.grid import Grid
    from ssm_spark.models.registry import Registry

log = logging.getLogger(__name__)

__all__ = ["needs_climatology", "find_climatology", "EarthEngineClimatology"]


def needs_climatology(cfg: "Config", registry: "Registry") -> bool:
    """True when produce would attach a change-detection climatology to the rows (the registry has
    a change-detection calibration and ``physics.change_detection.enabled``)."""
    cdc = getattr(getattr(cfg, "physics", None), "change_detection", None)
    wcm = registry.wcm_params
    return bool(cdc is not None and cdc.enabled and isinstance(wcm, Mapping) and wcm.get("cd") is not None)


def find_climatology(cfg: "Config", grid: "Grid", registry: "Registry", places: Sequence[Any]):
    """The climatology stack ``produce`` built for this configuration (``DIR/<key>/``), from the first of
    ``places`` (a climatology folder ``DIR`` or ``DIR/<key>``) that holds it.

    Raises
    ------
    InputError
        None found: the models of this registry need it (naming where it was looked for).
    """
    from ssm_spark.product.climatology import ClimatologyStack, climatology_key

    key = climatology_key(cfg, grid)
    looked = []
    for place in places:
        if not place:
            continue
        d = Path(place)
        for folder in (d / key, d):
            looked.append(str(folder))
            if folder.name == key and (folder / "climatology.json").is_file():
                tiles = set()
                for t in folder.glob(f"{grid.name}_*_*.tif"):
                    parts = t.stem[len(grid.name) + 1:].split("_")
                    if len(parts) == 2 and all(p.isdigit() for p in parts):
                        tiles.add((int(parts[0]), int(parts[1])))
                log.info("point: change-detection climatology %s (%d tiles)", folder, len(tiles))
                return ClimatologyStack(str(folder), key, "", grid, frozenset(tiles))
    raise InputError(f"registry {registry.manifest_id} uses change detection: its models need each cell's "
                     f"climatology, built by 'ssm-spark produce' into OUTPUT/climatology/{key}/ "
                     f"(produce.climatology_dir); give --climatology DIR (looked in: {', '.join(looked) or 'nowhere'})")


class EarthEngineClimatology:
    """Each cell's climatology from its Earth Engine Sentinel-1 series (see the module docstring);
    computed at a cell's first query, the last ``keep`` cells kept.

    The reference window: ``physics.change_detection.window_start`` .. ``window_end``; where one is
    not set, the registry's training period (``training_data.date_range`` of its manifest: the
    dates the training climatologies came from), said in the log.

    Raises
    ------
    ConfigError
        At construction, with no window from either: Earth Engine holds every scene since 2014,
        so "every date" is no window.
    """

    def __init__(self, cfg: "Config", grid: "Grid", client: Any, keep: int = 256,
                 trained: Sequence[Any] | None = None) -> None:
        from ssm_spark.transforms import cd_kwargs

        cdc = cfg.physics.change_detection
        trained = list(trained) if trained and len(trained) == 2 and all(trained) else [None, None]
        start = cdc.window_start or trained[0]
        end = cdc.window_end or trained[1]
        if start is None or end is None:
            raise ConfigError("point --source ee with a change-detection registry: set the reference window "
                              "physics.change_detection.window_start and window_end (e.g. --set "
                              "physics.change_detection.window_start=2023-01-01 --set "
                              "physics.change_detection.window_end=2023-12-31; the training stacks' period; the "
                              "registry records none): each cell's climatology is built from its Earth Engine "
                              "series over it")
        self.cfg, self.grid, self.client = cfg, grid, client
        self.window = (dt.date.fromisoformat(str(start)), dt.date.fromisoformat(str(end)))
        if self.window[1] < self.window[0]:
            raise ConfigError(f"physics.change_detection window {self.window[0]} .. {self.window[1]}: the end is "
                              "before the start")
        if cdc.window_start is None or cdc.window_end is None:
            log.info("point: Earth Engine climatology window %s .. %s (%s from the registry's training period; set "
                     "physics.change_detection.window_start/window_end to choose)", *self.window,
                     "both" if cdc.window_start is None and cdc.window_end is None else "partly")
        self.kwargs = cd_kwargs(cdc)
        self.keep = keep
        self._cells: "collections.OrderedDict[tuple[int, int], dict[str, float]]" = collections.OrderedDict()
        self._lock = threading.Lock()
        self.computed = 0

    def cell(self, row: int, col: int) -> dict[str, float]:
        """:data:`~ssm_spark.physics.change_detection.CLIM_COLUMNS` of a cell (NaN: undefined, e.g.
        fewer than ``min_dates`` scenes in the window)."""
        from ssm_spark.physics.change_detection import CLIM_COLUMNS
        from ssm_spark.point.cells import pixel_frame
        from ssm_spark.product.climatology import tile_climatology
        from ssm_spark.sources.earthengine.sample import as_stored, sample_series

        key = (int(row), int(col))
        with self._lock:
            got = self._cells.get(key)
            if got is not None:
                self._cells.move_to_end(key)
                return got
        start, end = self.window
        days = [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]
        series = sample_series(self.client, self.cfg.earthengine, self.grid, key[0], key[1], days, stack="s1")
        dates = sorted(d for d, v in series.items() if v is not None)
        px, _ = pixel_frame([as_stored(series[d]) for d in dates], self.grid, [key[0]] * len(dates),
                            [key[1]] * len(dates), dates)  # the reader's value rules; rows: dates with backscatter
        arrays = {k: px[b].to_numpy("f4").reshape(1, -1) for k, b in
                  (("theta", "incidence_deg"), ("vv", "vv_db"), ("vh", "vh_db"))}
        stats = tile_climatology(arrays, (1, 1), self.kwargs)
        out = {c: float(stats[i, 0, 0]) for i, c in enumerate(CLIM_COLUMNS)}
        log.info("point: climatology of cell (row %d, col %d) from %d Earth Engine scene dates %s..%s", key[0], key[1],
                 len(px), start, end)
        with self._lock:
            self._cells[key] = out
            while len(self._cells) > self.keep:
                self._cells.popitem(last=False)
            self.computed += 1
        return out

    def attach(self, px: pd.DataFrame) -> pd.DataFrame:
        """``px`` with its cells' climatology columns (as :meth:`ClimatologyStack.attach`)."""
        from ssm_spark.physics.change_detection import CLIM_COLUMNS

        n = len(px)
        vals = {c: np.full(n, np.nan) for c in CLIM_COLUMNS}
        if n:
            rows, cols = px["row"].to_numpy(np.int64), px["col"].to_numpy(np.int64)
            for r, c in {(int(a), int(b)) for a, b in zip(rows, cols)}:
                idx = np.flatnonzero((rows == r) & (cols == c))
                for k, v in self.cell(r, c).items():
                    vals[k][idx] = v
        return px.assign(**vals)
