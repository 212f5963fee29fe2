"""Errors of point queries and the checks of their parameters (dates, coordinates).

Every error is a :class:`PointError` (an :class:`~ssm_spark.errors.InputError`: the CLI exits 2)
with an HTTP ``status`` and an ``info`` dict the service returns beside the message.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
import re
from typing import Any, Sequence

from ssm_spark.errors import InputError

__all__ = ["PointError", "OutsideCoverageError", "NoAcquisitionError", "MaskedCellError", "StoreError", "parse_date",
           "check_latlon", "nearest", "DATE_RE"]

DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # ASCII digits only (\d takes any script's); use fullmatch


class PointError(InputError):
    """A point query that cannot be answered (the message says why)."""

    status = 400

    def __init__(self, message: str, **info: Any) -> None:
        super().__init__(message)
        self.info = info


class OutsideCoverageError(PointError):
    """The point is outside the grid, or no stack file of the date covers its cell."""

    status = 404


class NoAcquisitionError(PointError):
    """No acquisition at the cell on that date (``info["nearest"]``: the nearest dates with one)."""

    status = 404


class MaskedCellError(PointError):
    """The cell has no estimate (masked: water, built-up, snow/ice, frozen, steep; or no usable input).

    ``info["result"]`` is the full answer (QC bits, environment, features) with null estimates.
    """

    status = 422


class StoreError(PointError):
    """The object store holding the stacks or the product failed a request (a missing bucket or key,
    credentials refused, the endpoint unreachable): the message names the URL and the likely cause.
    The service answers 502 (the store, not the query, is at fault); the CLI exits 2."""

    status = 502


def parse_date(value: Any, what: str = "date") -> dt.date:
    """A ``YYYY-MM-DD`` date, else :class:`PointError` naming the parameter."""
    if isinstance(value, dt.date):
        return value
    s = str(value).strip()
    if not DATE_RE.fullmatch(s):
        raise PointError(f"{what} {s[:40]!r}: expected a date YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(s)
    except ValueError as exc:
        raise PointError(f"{what} {s!r}: not a calendar date ({exc})") from exc


def check_latlon(lat: Any, lon: Any) -> tuple[float, float]:
    """Finite degrees within [-90, 90] x [-180, 180], else :class:`PointError`."""
    try:
        la, lo = float(lat), float(lon)
    except (TypeError, ValueError) as exc:
        raise PointError(f"lat {lat!r}, lon {lon!r}: expected numbers in degrees") from exc
    if not (math.isfinite(la) and math.isfinite(lo)):
        raise PointError(f"lat {lat!r}, lon {lon!r}: not finite numbers")
    if not (-90.0 <= la <= 90.0 and -180.0 <= lo <= 180.0):
        raise PointError(f"lat {la}, lon {lo}: outside [-90, 90] x [-180, 180] degrees (lat, lon swapped?)")
    return la, lo


def nearest(dates: Sequence[str], day: str, k: int = 2) -> list[str]:
    """Up to ``k`` dates before and ``k`` after ``day`` in the sorted list ``dates``."""
    i = bisect.bisect_left(dates, day)
    return list(dates[max(0, i - k):i]) + [d for d in dates[i:i + k + 1] if d != day][:k]
