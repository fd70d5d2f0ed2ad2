"""ROOT/vocab/: the tag vocabulary, one row per tag (written by jobs/vocab.py).

    tag_id int32     0..V-1 without gaps, by descending images, ties by tag: the row of every tag table
    tag string       normalized (pipeline.tags)
    images long      photos carrying it; users long: distinct users carrying it
    neg_weight double  images ** neg_power (negatives are drawn by it)
    pos_weight double  images ** pos_power (positives are drawn by it)

vocab/'s manifest also vouches for tagged/ and zero_shot/, which the same stage writes.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline import Im2vecError
from pipeline.datasets.base import Dataset

DATASET = Dataset("vocab", "vocab", "vocab", "im2vec vocab")
COLUMNS = ("tag_id", "tag", "images", "users", "neg_weight", "pos_weight")


def read(root: str, columns=COLUMNS) -> pa.Table:
    """ROOT/vocab/ as a pyarrow Table in tag_id order (``columns``, tag_id always among them).

    Raises:
        Im2vecError: the folder fails the data guard, is empty, or tag_id does not run 0..V-1
            without gaps or repeats (every tag table indexes rows by tag_id).
    """
    columns = list(dict.fromkeys(["tag_id", *columns]))
    table = DATASET.arrow(root).to_table(columns=columns).sort_by("tag_id")
    if table.num_rows == 0 or not np.array_equal(table.column("tag_id").to_numpy(), np.arange(table.num_rows)):
        raise Im2vecError(f"{DATASET.uri(root)}: tag_id must run 0..V-1 without gaps or repeats; "
                          f"run `{DATASET.remake}` again")
    return table


def tags(root: str) -> list[str]:
    """The vocabulary's tags in tag_id order: ``tags(root)[tag_id]`` is the tag."""
    return read(root, ["tag"]).column("tag").to_pylist()
