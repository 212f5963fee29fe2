"""write_tile_parquet: strings written from dictionaries, read back as the declared table, the same bytes
from a frame (arrow_table) as from column arrays (columns_table, plain or dictionary=True)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ssm_spark.physics.wcm_params import EnvKeys
from ssm_spark.product.schema import METADATA_KEY, PRODUCT_FILE, arrow_table, columns_table
from ssm_spark.product.tiles import write_tile_parquet


def _columns(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    ssm = rng.uniform(0.02, 0.5, n).astype("f4")
    ssm[rng.uniform(size=n) < 0.1] = np.nan
    env = rng.choice([3, 0, 3, 4, -1], n)  # codes into 5 uniques: 1 and 2 unused, 3 first, nulls
    model = np.where(np.isnan(ssm), -1, rng.choice([1, 0], n))
    return {"grid": "g1", "tile_row": np.full(n, 2, "i4"), "tile_col": np.full(n, 7, "i4"),
            "row": np.repeat(np.arange(n // 8), 8).astype("i4"), "col": np.tile(np.arange(8), n // 8).astype("i4"),
            "lon": np.tile(np.linspace(10, 11, 8), n // 8), "lat": np.repeat(np.linspace(50, 49, n // 8), 8),
            "ssm": ssm, "ssm_p05": ssm - np.float32(0.03), "ssm_p95": ssm + np.float32(0.04),
            "env": EnvKeys(env, ["cropland_C", "grass_B", "forest_D", "urban_A", "shrub_B"]),
            "model_id": EnvKeys(model, ["m/a/xgb", "m/b/xgb"]), "qc": rng.choice([0, 1, 2, 8, 2048], n).astype("i4")}


def _frame(cols: dict) -> pd.DataFrame:
    n = len(cols["row"])
    dec = {k: np.array([v.uniques[c] if c >= 0 else None for c in v.codes], dtype=object)
           for k, v in cols.items() if isinstance(v, EnvKeys)}
    return pd.DataFrame({k: np.full(n, v, dtype=object) if isinstance(v, str) else dec.get(k, v) for k, v in cols.items()})


def test_tile_parquet_reads_back_the_declared_table_with_the_same_bytes_from_every_form(tmp_path: Path):
    cols = _columns(4096, 5)
    meta = {"date": "2024-05-01", "tile_row": 2}
    plain = columns_table(cols, PRODUCT_FILE, meta)
    coded = columns_table(cols, PRODUCT_FILE, meta, dictionary=True)
    env = cols["env"]
    first_seen = [env.uniques[c] for c in pd.unique(env.codes[env.codes >= 0])]
    assert pa.types.is_dictionary(coded.schema.field("env").type) and len(first_seen) == 3
    assert coded.column("env").chunk(0).dictionary.to_pylist() == first_seen  # used values, by first row
    frame = arrow_table(_frame(cols), PRODUCT_FILE, meta)
    assert frame.equals(plain) and coded.cast(plain.schema).equals(plain)
    sizes = {k: write_tile_parquet(t, tmp_path / f"{k}.parquet") for k, t in
             {"plain": plain, "coded": coded, "frame": frame}.items()}
    data = {k: (tmp_path / f"{k}.parquet").read_bytes() for k in sizes}
    assert data["coded"] == data["plain"] == data["frame"] and sizes["coded"] == len(data["coded"])
    back = pq.read_table(tmp_path / "coded.parquet")
    assert back.schema.equals(PRODUCT_FILE.with_metadata(plain.schema.metadata), check_metadata=True)
    assert back.equals(plain) and json.loads(back.schema.metadata[METADATA_KEY.encode()]) == meta
    assert back.column("env").null_count == (cols["env"].codes < 0).sum() and back.column("ssm").null_count > 0
    got = pd.read_parquet(tmp_path / "coded.parquet")
    assert got["env"].dtype == object and got["ssm"].dtype == np.float32  # strings, not categoricals
    md = pq.ParquetFile(tmp_path / "coded.parquet").metadata.row_group(0)
    enc = {md.column(i).path_in_schema: md.column(i).encodings for i in range(md.num_columns)}
    assert "RLE_DICTIONARY" in enc["env"] and "RLE_DICTIONARY" in enc["qc"]
    assert "RLE_DICTIONARY" not in enc["ssm"] and "RLE_DICTIONARY" not in enc["lon"]
    assert all(md.column(i).statistics.has_min_max for i in range(md.num_columns))
