"""A recorded-response Earth Engine client for the offline tests (not a test module).

:class:`RecordedEE` is the real :class:`~ssm_spark.sources.earthengine.client.EEClient` (its retry on
quota and transient errors included) whose call to the service is replaced: it reads the request
graph earthengine-api serialised (the computeValue payload) and answers in Earth Engine's documented
``getInfo`` shapes:

- ``reduceRegions`` -> a FeatureCollection ``{"type": "FeatureCollection", "columns": {...},
  "features": [{"type": "Feature", "geometry": {...}, "id": ..., "properties": {...}}]}``; the
  properties are the input feature's (``i``, ``row``, ``col``, ``date``) plus the bands' values
  (``values(row, col, date)``); a point with no value gets no band property (EE drops nulls);
- ``aggregate_array(...).map(format).distinct().sort()`` -> a list of ``YYYY-MM-DD`` strings
  (``scenes(row, col, start, end)``); an ``ee.List`` of such requests -> a list of lists.

``failures`` are raised, in order, by the first calls (e.g. an HTTP 429 of googleapiclient's shape).
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

from ssm_spark.sources.earthengine.client import EEClient

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class HttpError(Exception):
    """The shape of googleapiclient's HttpError: ``resp.status`` and a message."""

    def __init__(self, status: int, msg: str):
        super().__init__(f"<HttpError {status} when requesting https://earthengine.googleapis.com/v1/projects/"
                         f"p/value:compute returned \"{msg}\">")
        self.resp = type("Resp", (), {"status": status})()


def inline(graph: dict, constant_arrays: bool = False) -> Any:
    """A serialised graph with its shared values (``valueReference``) put back in place; with
    ``constant_arrays``, an array of constants becomes one ``constantValue`` list."""
    values = graph.get("values")
    if values is None:
        return graph

    def sub(v):
        if isinstance(v, dict):
            if set(v) == {"valueReference"}:
                return sub(values[v["valueReference"]])
            fd = v.get("functionDefinitionValue")
            if fd is not None and isinstance(fd.get("body"), str):  # a mapped function's body
                return {"functionDefinitionValue": {**fd, "body": sub(values[fd["body"]])}}
            out = {k: sub(x) for k, x in v.items()}
            arr = out.get("arrayValue")
            if constant_arrays and arr is not None and all(set(x) == {"constantValue"} for x in arr.get("values", [])):
                return {"constantValue": [x["constantValue"] for x in arr.get("values", [])]}
            return out
        if isinstance(v, list):
            return [sub(x) for x in v]
        return v

    return sub(values[graph["result"]])


_NOTHING = object()


def _collect(node: Any, pick: Callable[[dict], Any]) -> list:
    """Every ``pick(d)`` (but ``_NOTHING``) over the dicts of a graph, depth first."""
    out = []

    def walk(v):
        if isinstance(v, dict):
            got = pick(v)
            if got is not _NOTHING:
                out.append(got)
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(node)
    return out


def calls(node: Any) -> list[tuple[str, dict]]:
    """Every (functionName, arguments) of a graph."""
    return _collect(node, lambda d: (d["functionInvocationValue"]["functionName"],
                                     d["functionInvocationValue"].get("arguments", {}))
                    if d.get("functionInvocationValue") is not None else _NOTHING)


def constants(node: Any) -> list:
    """Every constant of a graph."""
    return _collect(node, lambda d: d["constantValue"] if "constantValue" in d else _NOTHING)


def _props(feature_args: dict) -> dict:
    md = feature_args["metadata"]
    if "constantValue" in md:
        return dict(md["constantValue"])
    return {k: v["constantValue"] for k, v in md["dictionaryValue"]["values"].items()}


class RecordedEE(EEClient):
    def __init__(self, cfg, grid, values: Callable[[int, int, str], dict],
                 scenes: Callable[[int, int, str, str], list], failures: list[BaseException] | None = None) -> None:
        self.sleeps: list[float] = []
        super().__init__(cfg, sleep=self.sleeps.append)
        self.grid = grid
        self.values, self.scenes = values, scenes
        self.failures = list(failures or [])
        self.log: list[tuple[str, int, int]] = []  # (kind, points or cells, dates) per answered request
        self.calls = 0

    def get_info(self, obj: Any, what: str = "getInfo") -> Any:
        return self._retry(lambda: self._compute(obj), what)

    # -- the service
    def _compute(self, obj: Any) -> Any:
        import ee

        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        node = inline(json.loads(ee.serializer.toJSON(obj)))
        if "arrayValue" in node:
            out = [self._answer(v) for v in node["arrayValue"]["values"]]
            self.log.append(("dates", len(out), 0))
            return out
        return self._answer(node, top=True)

    def _answer(self, node: Any, top: bool = False) -> Any:
        names = [n for n, _ in calls(node)]
        if "Image.reduceRegions" in names:
            feats = [_props(a) for n, a in calls(node) if n == "Feature"]
            self.log.append(("sample", len(feats), len({f["date"] for f in feats})))
            out = []
            for k, p in enumerate(feats):
                vals = {b: v for b, v in self.values(int(p["row"]), int(p["col"]), str(p["date"])).items()
                        if v is not None}
                out.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [0.0, 0.0]},
                            "id": f"{k}_0", "properties": {**p, **vals}})
            return {"type": "FeatureCollection", "columns": {}, "features": out}
        if "AggregateFeatureCollection.array" in names:
            days = sorted(c for c in constants(node) if isinstance(c, str) and _DAY.match(c))
            pt = next(a for n, a in calls(node) if n == "GeometryConstructors.Point")
            x, y = pt["coordinates"]["constantValue"]
            start, end_excl = days[0], days[-1]
            got = self.scenes_xy(x, y, start, end_excl)
            if top:
                self.log.append(("dates", 1, 0))
            return got
        raise AssertionError(f"unrecorded request: {names[:8]}")

    def scenes_xy(self, x: float, y: float, start: str, end_excl: str) -> list[str]:
        """Scene dates in ``[start, end_excl)`` (filterDate's end is exclusive) at grid coordinates."""
        import datetime as dt

        r, c = self.grid.xy_to_cell(x, y)
        last = (dt.date.fromisoformat(end_excl) - dt.timedelta(days=1)).isoformat()
        return [d for d in self.scenes(int(r), int(c), start, last) if start <= d <= last]
