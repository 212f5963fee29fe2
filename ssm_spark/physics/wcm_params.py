"""Calibrated Water Cloud Model parameters as data: the table's layout, lookups per environment
with the fallback hierarchy (environment -> land-cover group -> ``global`` -> defaults), per-row
parameter arrays, and the JSON form kept in the model registry.

The fitting is in :mod:`ssm_spark.physics.calibrate` (which re-exports these names); the physics of
the parameters (A, B, C, D) is in docs/radar.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from ssm_spark.errors import InputError
from ssm_spark.physics.wcm import DEFAULT_WCM_PARAMS

__all__ = ["PARAM_NAMES", "POLS", "GLOBAL_KEY", "TABLE_COLUMNS", "group_of", "lookup", "param_arrays", "apply",
           "to_dict", "from_dict", "EnvKeys", "env_codes"]

PARAM_NAMES: tuple[str, ...] = ("A", "B", "C", "D")
POLS: tuple[str, ...] = ("vv", "vh")
GLOBAL_KEY = "global"

TABLE_COLUMNS: tuple[str, ...] = (
    "env",
    "pol",
    "A",
    "B",
    "C",
    "D",
    "A_se",
    "B_se",
    "C_se",
    "D_se",
    "rmse_db",
    "bias_db",
    "n_samples",
    "n_stations",
    "level",
    "source_key",
    "env_n_samples",
    "env_n_stations",
    "env_rmse_db",
)


def group_of(env: str | None) -> str | None:
    """Land-cover group of an environment key: the part before the first ``"_"``.

    Parameters
    ----------
    env : str or None
        Environment key such as ``"cropland_C"``; a key without ``"_"`` is its own group.

    Returns
    -------
    str or None
        ``"cropland"`` for ``"cropland_C"``; None for None/NaN.
    """
    if env is None or (isinstance(env, float) and math.isnan(env)):
        return None
    return str(env).split("_", 1)[0]


class EnvKeys:
    """Environment keys per row, factorized once: ``codes`` (intp, -1 for a missing key) into
    ``uniques`` (first seen first, as :func:`pandas.factorize`).

    Every per-row lookup of the physics (WCM parameters, angle slopes, change-detection lines) and
    the model routing maps a few distinct keys onto many rows; given an ``EnvKeys`` instead of an
    array of strings they skip hashing the strings again (:func:`env_codes`). Only the product's
    column path passes one (:meth:`ssm_spark.models.registry.Registry.predict_columns`).
    """

    __slots__ = ("codes", "uniques", "_dense")

    def __init__(self, codes: np.ndarray, uniques: Sequence[Any]) -> None:
        self.codes = np.asarray(codes, dtype=np.intp)
        self.uniques = list(uniques)
        self._dense: np.ndarray | None = None

    def dense(self) -> np.ndarray:
        """The codes with a missing key as ``len(uniques)``: each row's index into a table of the
        uniques followed by one entry for the missing key (what every per-row lookup takes);
        computed once (the keys are not changed after they are made)."""
        if self._dense is None:
            self._dense = np.where(self.codes < 0, len(self.uniques), self.codes)
        return self._dense

    @classmethod
    def of(cls, envs: Any) -> "EnvKeys":
        """Factorize an array of keys (str, None or NaN for missing)."""
        if isinstance(envs, EnvKeys):
            return envs
        codes, uniq = pd.factorize(pd.Series(np.asarray(envs, dtype=object), dtype=object), use_na_sentinel=True)
        return cls(codes, list(uniq))

    def __len__(self) -> int:
        return len(self.codes)

    def take(self, idx: np.ndarray) -> "EnvKeys":
        """The keys of the rows ``idx`` (same uniques)."""
        return EnvKeys(self.codes[idx], self.uniques)

    def to_numpy(self) -> np.ndarray:
        """The keys as an object array (None where missing)."""
        table = np.array([*self.uniques, None], dtype=object)
        return table[np.where(self.codes < 0, len(self.uniques), self.codes)]


def env_codes(envs: Any) -> tuple[np.ndarray, list]:
    """``(codes, uniques)`` of a column of environment keys (an :class:`EnvKeys` as it is)."""
    keys = EnvKeys.of(envs)
    return keys.codes, keys.uniques


# --------------------------------------------------------------------------------------- lookups


class _Resolved(dict):
    """Parameters already normalised to ``{key: {pol: {A, B, C, D, level, source_key}}}``."""


def _normalise(params: Any) -> _Resolved:
    """Any accepted parameter form -> ``{key: {pol: {A, B, C, D, level, source_key}}}``."""
    if isinstance(params, _Resolved):
        return params
    if params is None:
        params = DEFAULT_WCM_PARAMS
    if isinstance(params, pd.DataFrame):
        entries: Iterable[Mapping[str, Any]] = params.to_dict("records")
    elif isinstance(params, Mapping) and "entries" in params:
        entries = params["entries"]
    elif isinstance(params, Mapping) and all(isinstance(k, str) and k.lower() in POLS for k in params):
        entries = [
            {"env": GLOBAL_KEY, "pol": pol.lower(), **p, "level": "default", "source_key": "default"}
            for pol, p in params.items()
        ]
    else:
        raise InputError(
            "WCM parameters must be None (defaults), {'vv': {A, B, C, D}, 'vh': {...}}, a calibration "
            f"table from calibrate_wcm, or its to_dict() form; got {type(params).__name__}"
        )
    out = _Resolved()
    for e in entries:
        missing = [k for k in PARAM_NAMES if k not in e]
        if missing:
            raise InputError(f"WCM parameter entry {dict(e)} lacks {missing}")
        key = str(e.get("env", GLOBAL_KEY))
        out.setdefault(key, {})[str(e.get("pol", "vv")).lower()] = {
            **{k: float(e[k]) for k in PARAM_NAMES},
            "level": e.get("level", "global"),
            "source_key": e.get("source_key", key),
        }
    if GLOBAL_KEY not in out:
        raise InputError(f"WCM parameters have no '{GLOBAL_KEY}' entry to fall back on")
    return out


def lookup(params: Any, env: str | None, pol: str) -> dict[str, Any]:
    """WCM parameters for an environment and polarisation, with the calibration's fallback.

    The environment's own entry if present, else its land-cover group's (:func:`group_of`), else the
    global entry. Unseen environments therefore fall back exactly as under-sampled ones did.

    Parameters
    ----------
    params : DataFrame, dict or None
        A :func:`calibrate_wcm` table, its :func:`to_dict` form, a simple ``{'vv': {...}, 'vh':
        {...}}`` mapping (applies everywhere) or None for
        :data:`~ssm_spark.physics.wcm.DEFAULT_WCM_PARAMS`.
    env : str or None
        Environment key (None: global).
    pol : str
        'vv' or 'vh'.

    Returns
    -------
    dict
        ``A, B, C, D, level, source_key``.

    Raises
    ------
    InputError
        If the parameters have no entry for ``pol``.
    """
    table = _normalise(params)
    p = pol.lower()
    for key in (None if env is None else str(env), group_of(env), GLOBAL_KEY):
        if key is not None and key in table and p in table[key]:
            return dict(table[key][p])
    raise InputError(f"WCM parameters have no entry for polarisation {pol!r} (env {env!r})")


def param_arrays(params: Any, envs: npt.ArrayLike | EnvKeys | None, pol: str, n: int | None = None, *,
                 meta: bool = True) -> dict[str, np.ndarray]:
    """Per-row WCM parameter arrays for a column of environment keys (vectorised :func:`lookup`).

    Parameters
    ----------
    params : DataFrame, dict or None
        As for :func:`lookup`.
    envs : array_like of str, EnvKeys or None
        Environment key per row (None/NaN: global); None for all-global, then ``n`` gives the length.
    pol : str
        'vv' or 'vh'.
    n : int, optional
        Number of rows when ``envs`` is None.
    meta : bool, default True
        Also ``level`` and ``source_key`` (object arrays: what the physics does not need).

    Returns
    -------
    dict of numpy.ndarray
        ``A, B, C, D`` (float64) and, with ``meta``, ``level``, ``source_key`` (object), one value per row.

    Raises
    ------
    InputError
        If the parameters have no entry for ``pol``.
    """
    table = _normalise(params)
    if envs is None:
        codes = np.zeros(int(n or 0), dtype=np.intp)
        uniques: list[Any] = [None]
    else:
        keys = EnvKeys.of(envs)
        uniques = list(keys.uniques) + [None]  # code -1 (NaN/None) -> last entry -> global
        codes = keys.dense()
    found = [lookup(table, u, pol) for u in uniques]
    out: dict[str, np.ndarray] = {
        k: np.array([f[k] for f in found], dtype=float)[codes] for k in PARAM_NAMES
    }
    if meta:
        out["level"] = np.array([f["level"] for f in found], dtype=object)[codes]
        out["source_key"] = np.array([f["source_key"] for f in found], dtype=object)[codes]
    return out


def apply(
    params: Any,
    df: pd.DataFrame,
    *,
    env_col: str = "env",
    pols: Sequence[str] = POLS,
    suffix: str = "_{pol}",
) -> pd.DataFrame:
    """Attach per-row WCM parameters to a DataFrame (fallback as in :func:`lookup`).

    Parameters
    ----------
    params : DataFrame, dict or None
        As for :func:`lookup`.
    df : pandas.DataFrame
        Rows with an environment column (absent: global parameters everywhere).
    env_col : str, default 'env'
        Environment column.
    pols : sequence of str, default ('vv', 'vh')
        Polarisations to attach.
    suffix : str, default '_{pol}'
        Column suffix template.

    Returns
    -------
    pandas.DataFrame
        A copy of ``df`` with ``A_vv, B_vv, C_vv, D_vv, wcm_level_vv, wcm_source_vv`` (and the same
        for each other polarisation).
    """
    out = df.copy()
    envs = df[env_col].to_numpy(dtype=object) if env_col in df.columns else None
    for pol in pols:
        arr = param_arrays(params, envs, pol, n=len(df))
        sfx = suffix.format(pol=pol)
        for k in PARAM_NAMES:
            out[f"{k}{sfx}"] = arr[k]
        out[f"wcm_level{sfx}"] = arr["level"]
        out[f"wcm_source{sfx}"] = arr["source_key"]
    return out


# --------------------------------------------------------------------------------- serialisation


def _plain(x: Any) -> Any:
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def to_dict(table: pd.DataFrame) -> dict[str, Any]:
    """A calibration table as plain JSON-serialisable data for the model registry.

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`calibrate_wcm`.

    Returns
    -------
    dict
        ``{"model": "water_cloud_model", "formula": ..., "units": ..., "settings": table.attrs,
        "entries": [one dict per row]}``; NaN become None (valid strict JSON).
    """
    return {
        "model": "water_cloud_model",
        "formula": (
            "sigma0 = A V cos(theta) (1 - tau2) + tau2 sigma0_soil; tau2 = exp(-2 B V / cos(theta)); "
            "sigma0_soil[dB] = C + D mv"
        ),
        "units": {"A": "linear", "B": "1/V", "C": "dB", "D": "dB per m3/m3"},
        "settings": {k: _plain(v) for k, v in table.attrs.items()},
        "entries": [{k: _plain(v) for k, v in row.items()} for row in table.to_dict("records")],
    }


def from_dict(data: Mapping[str, Any]) -> pd.DataFrame:
    """Inverse of :func:`to_dict`.

    Parameters
    ----------
    data : mapping
        A :func:`to_dict` result (e.g. read back from ``manifest.json``).

    Returns
    -------
    pandas.DataFrame
        The calibration table (None restored to NaN in numeric columns), settings in ``attrs``.

    Raises
    ------
    InputError
        If ``data`` has no ``entries``.
    """
    if "entries" not in data:
        raise InputError("WCM parameter data has no 'entries' (not produced by calibrate.to_dict?)")
    table = pd.DataFrame(list(data["entries"]))
    for c in TABLE_COLUMNS:
        if c not in table.columns:
            table[c] = np.nan
    table = table[list(TABLE_COLUMNS)]
    for c in ("A", "B", "C", "D", "A_se", "B_se", "C_se", "D_se", "rmse_db", "bias_db", "env_rmse_db"):
        table[c] = pd.to_numeric(table[c], errors="coerce").astype(float)
    table.attrs.update(dict(data.get("settings", {})))
    return table
