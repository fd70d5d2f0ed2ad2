"""ROOT/tagged/: each photo left with a vocabulary tag (written by jobs/vocab.py, vouched for by vocab/'s manifest).

    photo_id long, user_id string, split string ("train" | "validation" | "test", by user),
    tag_ids list<int32> (vocabulary ids, ascending)
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.datasets.base import Dataset

DATASET = Dataset("tagged", "tagged", "vocab", "im2vec vocab")
SPLITS = ("train", "validation", "test")


def read(spark, root: str):
    """ROOT/tagged/ as a Spark DataFrame, after the data guard."""
    return DATASET.spark(spark, root)


def read_split(root: str, split: str, columns=("photo_id", "tag_ids")) -> pa.Table:
    """One split's rows of ROOT/tagged/ as a pyarrow Table (``columns``), in file order."""
    return DATASET.arrow(root).to_table(columns=list(columns), filter=pc.field("split") == split)


def hash_order(photo_ids: np.ndarray, seed: int) -> np.ndarray:
    """Positions of ``photo_ids`` ordered by a hash of (seed, photo_id), then photo_id.

    The first ``n`` of them are a subset of ``n`` photos that is the same on every run and
    cluster, and spread over users and uploads (the validation and evaluation sets take theirs so).
    """
    from pipeline import sampling

    photo_ids = np.asarray(photo_ids, dtype=np.int64)
    return np.lexsort((photo_ids, sampling.mix64(photo_ids.astype(np.uint64) ^ np.uint64(seed))))


def split_batches(root: str, split: str, columns=("tag_ids",), batch_size: int | None = None):
    """Record batches of one split of ROOT/tagged/ (``columns``), streamed: one batch in memory at a time."""
    options = {"batch_size": batch_size} if batch_size else {}
    return DATASET.arrow(root).to_batches(columns=list(columns), filter=pc.field("split") == split, **options)
