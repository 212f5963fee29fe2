"""The product's tables, each declared once as a pyarrow schema; column lists and Spark DDL derive from it.

=====================  =====================================================================
table                  what it is
=====================  =====================================================================
:data:`PRODUCT`        the product as read back (``spark.read.parquet("OUTPUT/parquet")``), in
                       the contract's order (DESIGN.md "Tables": product); ``date`` is the
                       partition folder, so the files hold :data:`PRODUCT_FILE`
:data:`AGGREGATE`      a coarse grid's product (``OUTPUT/agg/<grid>/parquet``), likewise with
                       :data:`AGGREGATE_FILE` in the files (:mod:`ssm_spark.product.aggregate`)
:data:`TILE_SUMMARY`   what a Spark task returns to the driver per fine tile (or per file that
                       failed, with ``error``)
:data:`COARSE_SUMMARY` likewise per coarse tile
=====================  =====================================================================

:func:`spark_ddl` gives the DDL string Spark's ``mapInPandas``/``applyInPandas`` take;
:func:`arrow_table` turns rows (pandas) into a table of a file schema with the ``ssm_spark``
key-value metadata, :func:`columns_table` the same from column arrays (the product's per-tile path:
string columns from their few distinct values and a code per row, no object array of strings);
:func:`empty_frame` is a table's empty pandas frame.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

__all__ = ["PRODUCT", "PRODUCT_FILE", "PRODUCT_COLUMNS", "FILE_COLUMNS", "AGGREGATE", "AGGREGATE_FILE",
           "AGG_COLUMNS", "AGG_FILE_COLUMNS", "TILE_SUMMARY", "COARSE_SUMMARY", "spark_ddl", "arrow_table",
           "columns_table", "empty_frame", "METADATA_KEY", "ESTIMATES", "plain_columns"]

#: The key of the JSON provenance (manifest id, config and product hashes, tile) in the Parquet metadata.
METADATA_KEY = "ssm_spark"

#: The estimates are float32 (7 significant digits for a quantity known to +-0.04 m3/m3, the COG's
#: type too; half the bytes); the cell centres stay float64 (written plain, zstd packs a tile's
#: repeating lon/lat into ~0.04 byte per cell each, and readers join or filter on them exactly).
ESTIMATES = ("ssm", "ssm_p05", "ssm_p95")
_CELL = [("grid", pa.string()), ("tile_row", pa.int32()), ("tile_col", pa.int32()), ("row", pa.int32()),
         ("col", pa.int32()), ("lon", pa.float64()), ("lat", pa.float64()), ("date", pa.date32()),
         *((c, pa.float32()) for c in ESTIMATES)]

#: The product contract, in order.
PRODUCT = pa.schema(_CELL + [("env", pa.string()), ("model_id", pa.string()), ("qc", pa.int32())])
#: A coarse grid's product (no ``model_id``: a coarse cell mixes models).
AGGREGATE = pa.schema(_CELL + [("n_cells", pa.int32()), ("n_valid", pa.int32()), ("frac_valid", pa.float64()),
                               ("env", pa.string()), ("qc", pa.int32())])


def _without_date(schema: pa.Schema) -> pa.Schema:
    return schema.remove(schema.get_field_index("date"))


#: Inside the Parquet files (``date`` is the partition folder).
PRODUCT_FILE = _without_date(PRODUCT)
AGGREGATE_FILE = _without_date(AGGREGATE)

PRODUCT_COLUMNS = tuple(PRODUCT.names)
FILE_COLUMNS = tuple(PRODUCT_FILE.names)
AGG_COLUMNS = tuple(AGGREGATE.names)
AGG_FILE_COLUMNS = tuple(AGGREGATE_FILE.names)

#: A fine tile's summary (or a failed file's, with ``error``; JSON strings in the last four; ``files``: the
#: keys the tile wrote, relative to the date's staging folder or prefix, and their sizes).
TILE_SUMMARY = pa.schema([
    ("tile_row", pa.int32()), ("tile_col", pa.int32()), ("pixels", pa.int64()), ("retrieved", pa.int64()),
    ("masked", pa.int64()), ("out_of_range", pa.int64()), ("ssm_sum", pa.float64()), ("ssm_min", pa.float64()),
    ("ssm_max", pa.float64()), ("parquet_bytes", pa.int64()), ("cog_bytes", pa.int64()), ("rejected", pa.string()),
    ("error", pa.string()), ("empty", pa.string()), ("files", pa.string())])
#: A coarse tile's summary (``files`` as in :data:`TILE_SUMMARY`, relative to the date's staging).
COARSE_SUMMARY = pa.schema([
    ("target", pa.string()), ("tile_row", pa.int32()), ("tile_col", pa.int32()), ("cells", pa.int64()),
    ("valid", pa.int64()), ("parquet_bytes", pa.int64()), ("cog_bytes", pa.int64()), ("files", pa.string())])

_SPARK_TYPES = {pa.string(): "string", pa.int32(): "int", pa.int64(): "long", pa.float32(): "float",
                pa.float64(): "double", pa.date32(): "date"}


def plain_columns(schema: pa.Schema) -> list[str]:
    """The columns of a file schema nearly all distinct in a tile, so written without a dictionary
    (:func:`ssm_spark.product.tiles.write_tile_parquet`): the floating-point ones (the estimates,
    and the cell centres: a tile's lon/lat repeat along a row or column, which zstd finds as well
    as a dictionary would, 0.04 byte per cell each) and the cell's ``row``/``col``."""
    return [f.name for f in schema if pa.types.is_floating(f.type) or f.name in ("row", "col")]


def spark_ddl(schema: pa.Schema) -> str:
    """The Spark DDL of a schema (``"grid string, tile_row int, ..."``)."""
    return ", ".join(f"{f.name} {_SPARK_TYPES[f.type]}" for f in schema)


def arrow_table(rows: pd.DataFrame, schema: pa.Schema, metadata: dict) -> pa.Table:
    """The rows as a table of ``schema``, with ``metadata`` as JSON under :data:`METADATA_KEY`.

    NaN estimates become nulls (``from_pandas``): Spark and SQL aggregates then skip them.
    """
    schema = schema.with_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    return pa.Table.from_arrays([pa.array(rows[f.name].to_numpy(), type=f.type, from_pandas=True) for f in schema],
                                schema=schema)


def columns_table(cols: Mapping[str, Any], schema: pa.Schema, metadata: dict, *, dictionary: bool = False) -> pa.Table:
    """:func:`arrow_table` of column arrays: the same table (types, nulls, metadata).

    A column is a numpy array (NaN floats become nulls, as ``from_pandas``), a str (every row that
    value), or, for a string column, an object with ``codes`` (intp, -1 for null) and ``uniques``
    (:class:`~ssm_spark.physics.wcm_params.EnvKeys`): decoded from a dictionary in Arrow, so no
    Python string is touched per row.

    ``dictionary=True`` leaves the string columns dictionary-encoded (``dictionary<int32, string>``),
    each exactly as ``pyarrow.compute.dictionary_encode`` encodes the decoded column (the values
    used, in the order they first appear): what :func:`~ssm_spark.product.tiles.write_tile_parquet`
    writes without decoding them (the Parquet writer would hash every row's string again).
    """
    n = None
    for v in cols.values():
        if not isinstance(v, str):
            n = len(v)
            break
    arrays = []
    for f in schema:
        v = cols[f.name]
        if isinstance(v, str):
            arr = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n or 0, np.int32)), pa.array([v], type=f.type))
            arrays.append(arr if dictionary else arr.dictionary_decode())
        elif hasattr(v, "codes") and hasattr(v, "uniques"):
            arr = _coded_strings(np.asarray(v.codes), v.uniques, f.type)
            arrays.append(arr if dictionary else arr.dictionary_decode())
        else:
            arrays.append(pa.array(np.asarray(v), type=f.type, from_pandas=True))
    schema = schema.with_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    if dictionary:
        schema = pa.schema([pa.field(f.name, a.type, f.nullable) for f, a in zip(schema, arrays)],
                           metadata=schema.metadata)
    return pa.Table.from_arrays(arrays, schema=schema)


def _coded_strings(codes: np.ndarray, uniques, type_: pa.DataType) -> pa.DictionaryArray:
    """Codes into ``uniques`` (-1: null) as the dictionary array ``dictionary_encode`` gives for the
    decoded strings: only the values used, in the order of their first row."""
    null = codes < 0
    k = len(uniques)
    # a value's first row starts a run of it: the few run starts hold every first row
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]) if len(codes) else np.zeros(0, np.intp)
    at = codes[starts]
    values, first = np.unique(at[at >= 0], return_index=True)
    used = values[np.argsort(first, kind="stable")]
    remap = np.zeros(k + 1, np.int32)  # remap[-1]: the null rows' (unused) index
    remap[used] = np.arange(len(used), dtype=np.int32)
    idx = pa.array(remap.take(codes), mask=null if null.any() else None)
    return pa.DictionaryArray.from_arrays(idx, pa.array([str(uniques[i]) for i in used], type=type_))


def empty_frame(schema: pa.Schema) -> pd.DataFrame:
    """No rows, the schema's columns: strings as object, numbers as their numpy type."""
    return pd.DataFrame({f.name: pd.Series([], dtype=object) if f.type == pa.string()
                         else np.zeros(0, f.type.to_pandas_dtype()) for f in schema})
