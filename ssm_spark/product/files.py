"""Files written by the executors: whole or not at all.

Every file goes to a temporary name beside its target and is renamed over it (atomic on one
filesystem), so a retried or speculative Spark task never leaves a half-written file.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

__all__ = ["write_parquet_file"]


def write_parquet_file(table, path: Path) -> int:
    """Write an Arrow table as one zstd Parquet file (with statistics) at ``path``; its size in bytes."""
    import pyarrow.parquet as pq

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        pq.write_table(table, tmp, compression="zstd", write_statistics=True)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path.stat().st_size
