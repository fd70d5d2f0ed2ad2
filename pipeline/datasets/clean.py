"""ROOT/clean/: one row per photo, the clean stage's output (schema: pipeline.yfcc.CLEAN_SCHEMA).

Written by jobs/clean.py, whose manifest here also vouches for rejects/clean/ (pipeline.datasets.rejects).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import yfcc
from pipeline.datasets.base import Dataset

DATASET = Dataset("clean", "clean", "clean", "im2vec clean")
SCHEMA = yfcc.CLEAN_SCHEMA


def read(spark, root: str):
    """ROOT/clean/ as a Spark DataFrame (SCHEMA's columns), after checking it against its manifest."""
    return DATASET.spark(spark, root)


def photo_rows(root: str, photo_ids, columns: list[str], finished: bool = True) -> pa.Table:
    """The clean rows of the given photos (``columns``, photo_id among them), in file order.

    Scans clean/ with a filter: fine for a page of results or an index's photos, not for a
    corpus-wide join (use :func:`read`). ``finished=False`` reads a clean/ without a manifest too.
    """
    asked = pa.array(np.asarray(list(photo_ids), dtype=np.int64))
    return DATASET.arrow(root, finished).to_table(columns=columns, filter=pc.field("photo_id").isin(asked))
