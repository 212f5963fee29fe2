"""The product folder as the browser reads it: committed dates, a date's VRT, a cell's series.

Every path handed out is built from checked parts only (a real ISO date the folder has committed, a
grid name and tile numbers from ``product.json`` and integer arithmetic), and checked once more to
lie inside the folder, so no request parameter ever names a file. A date is committed when its
marker ``parquet/date=D/_SUCCESS.json`` exists (docs/commit.md); the list is read again at each
request, so dates committed while the server runs (``ssm-spark watch``) appear.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path
from typing import Any

from ssm_spark.errors import GridError, InputError
from ssm_spark.grid import Grid

__all__ = ["ProductFolder", "BadParameter", "iso_date", "MARKER"]

MARKER = "_SUCCESS.json"
_ISO = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_SERIES_COLUMNS = ("ssm", "ssm_p05", "ssm_p95", "qc")  # read for a series
_ROW_COLUMNS = _SERIES_COLUMNS + ("env", "model_id")  # read for one date


class BadParameter(Exception):
    """A request parameter the browser refuses (``status`` 4xx; the message names the parameter)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def iso_date(value: str, what: str = "date") -> str:
    """``value`` if it is a real calendar date written ``YYYY-MM-DD`` (ASCII digits), else 400."""
    if len(value) > 10 or not _ISO.fullmatch(value):
        raise BadParameter(400, f"{what} {value[:40]!r}: expected a date YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise BadParameter(400, f"{what} {value!r}: no such calendar date") from None


def _num(v: Any) -> float | None:
    return None if v is None or v != v else float(v)  # NaN / null -> None


class ProductFolder:
    """A product folder written by ``ssm-spark produce`` (layout: docs/outputs.md).

    Raises
    ------
    InputError
        No ``product.json`` or no ``parquet/`` folder there, or a grid it does not describe.
    """

    def __init__(self, product: str | os.PathLike) -> None:
        self.root = Path(product).resolve()
        meta_path = self.root / "product.json"
        if not meta_path.is_file() or not (self.root / "parquet").is_dir():
            raise InputError(f"{product}: not a product folder (expected product.json and parquet/date=YYYY-MM-DD/; "
                             "written by ssm-spark produce)")
        self.meta = json.loads(meta_path.read_text())
        g = self.meta.get("grid") or {}
        try:
            self.grid = Grid.from_name(str(g["name"]), int(g["tile_size"]))
        except (KeyError, TypeError, ValueError, GridError) as exc:
            raise InputError(f"{meta_path}: no usable grid ({exc})") from exc

    # -- paths
    def _inside(self, path: Path) -> Path:
        """``path`` if, normalised, it is inside the folder (the last guard; parts are checked before)."""
        norm = Path(os.path.normpath(path))
        if not norm.is_relative_to(self.root):
            raise BadParameter(400, "the request leaves the product folder")
        return norm

    def dates(self) -> list[str]:
        """Committed dates, sorted (read now)."""
        out = []
        for p in (self.root / "parquet").glob("date=*"):
            d = p.name[5:]
            if _ISO.fullmatch(d) and (p / MARKER).is_file():
                out.append(d)
        return sorted(out)

    def committed(self, date: str, what: str = "date") -> str:
        """A checked, committed date (400 when malformed, 404 when the folder has no product of it)."""
        day = iso_date(date, what)
        if not (self.root / "parquet" / f"date={day}" / MARKER).is_file():
            raise BadParameter(404, f"{what} {day}: no committed product of that date (no marker "
                                    f"parquet/date={day}/{MARKER})")
        return day

    def vrt(self, date: str) -> Path:
        """The VRT mosaic of a committed date (404 when the product has none: ``produce.cog: false``)."""
        day = self.committed(date)
        path = self._inside(self.root / "vrt" / f"{day}.vrt")
        if not path.is_file():
            raise BadParameter(404, f"date {day}: the product has no VRT mosaic vrt/{day}.vrt (written without "
                                    "COGs, produce.cog: false): no map tiles")
        return path

    def tiles(self, date: str | None = None) -> list[tuple[int, int]]:
        """The product tiles (tile_row, tile_col) of a committed date (default: the latest)."""
        days = self.dates()
        day = date or (days[-1] if days else None)
        if day is None:
            return []
        folder = self._inside(self.root / "parquet" / f"date={day}")
        pat = re.compile(rf"{re.escape(self.grid.name)}_([0-9]+)_([0-9]+)\.parquet")
        found = (pat.fullmatch(p.name) for p in folder.iterdir())
        return sorted((int(m[1]), int(m[2])) for m in found if m)

    # -- cells
    def cell(self, lat: float, lon: float) -> tuple[int, int]:
        """The grid cell holding a point (404 outside the grid)."""
        try:
            r, c = self.grid.to_cell(lon, lat)
        except GridError as exc:
            raise BadParameter(404, f"lat {lat}, lon {lon} is outside grid {self.grid.name} ({exc})") from None
        return int(r), int(c)

    def _tile_file(self, row: int, col: int, date: str) -> Path:
        name = f"{self.grid.name}_{row // self.grid.tile_size}_{col // self.grid.tile_size}.parquet"
        return self._inside(self.root / "parquet" / f"date={date}" / name)

    @staticmethod
    def _cell_row(path: Path, row: int, col: int, columns: tuple[str, ...]) -> dict | None:
        """The cell's row in one Parquet file (``columns`` only; row groups pruned by their statistics)."""
        import pyarrow.parquet as pq

        tab = pq.read_table(path, columns=list(columns), filters=[("row", "=", row), ("col", "=", col)])
        return tab.slice(0, 1).to_pylist()[0] if tab.num_rows else None

    def row(self, row: int, col: int, date: str) -> dict | None:
        """The product row of a cell on a committed date (estimates, qc, env, model_id), or None."""
        path = self._tile_file(row, col, date)
        return self._cell_row(path, row, col, _ROW_COLUMNS) if path.is_file() else None

    def series(self, lat: float, lon: float) -> dict:
        """The cell's rows on every committed date: ``dates``, ``ssm``, ``ssm_p05``, ``ssm_p95``,
        ``qc`` (aligned lists, null where masked), from the Parquet: the cell's tile file of each
        date, its four columns only, filtered on ``row``/``col`` (row groups pruned by their
        statistics), the files read by a few threads (pyarrow decodes without the GIL).

        Raises
        ------
        BadParameter
            404 outside the grid, or no row of the cell on any committed date.
        """
        from concurrent.futures import ThreadPoolExecutor

        r, c = self.cell(lat, lon)
        files = [(d, self._tile_file(r, c, d)) for d in self.dates()]
        files = [(d, f) for d, f in files if f.is_file()]
        with ThreadPoolExecutor(max_workers=4) as pool:
            found = list(pool.map(lambda df: self._cell_row(df[1], r, c, _SERIES_COLUMNS), files))
        out: dict[str, Any] = {"dates": [], **{k: [] for k in _SERIES_COLUMNS}}
        for (day, _), rec in zip(files, found):
            if rec is None:
                continue
            out["dates"].append(day)
            for k in ("ssm", "ssm_p05", "ssm_p95"):
                out[k].append(_num(rec[k]))
            out["qc"].append(int(rec["qc"]))
        if not out["dates"]:
            raise BadParameter(404, f"cell (row {r}, col {c}) at lat {lat}, lon {lon} has no product row on any "
                                    "committed date (outside the product's region)")
        lon_c, lat_c = self.grid.to_lonlat(r, c)
        out["cell"] = {"grid": self.grid.name, "row": r, "col": c, "lat": lat_c, "lon": lon_c}
        return out
