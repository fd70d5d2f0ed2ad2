"""ROOT/index/: every image's unit-length embedding g(f)/|g(f)| (written by jobs/index.py).

    photo_id int64, embedding binary = raw little-endian float16[d] (pipeline.datasets.encoding)

The manifest records ``dim`` (d), ``model_sha256`` (the projection.keras used) and ``model_epoch``.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline.datasets import encoding
from pipeline.datasets.base import Dataset

DATASET = Dataset("index", "index", "index", "im2vec index")
SCHEMA = pa.schema([("photo_id", pa.int64()), ("embedding", pa.binary())])
SCHEMA_DDL = "photo_id long, embedding binary"
encode = encoding.encode_raw


def read(root: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """ROOT/index/ as ``(photo_id int64[N], embedding float32[N, d], manifest)``.

    Holds all N x d as float32 in memory (10M images x 50 dims = 2 GB).
    """
    manifest = DATASET.require(root)
    table = DATASET.arrow(root).to_table(columns=["photo_id", "embedding"])
    embeddings = encoding.decode_raw(table.column("embedding")).astype(np.float32)
    return table.column("photo_id").to_numpy().astype(np.int64), embeddings.reshape(-1, int(manifest["dim"])), manifest
