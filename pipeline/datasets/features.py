"""ROOT/features/: CNN features, a Petastorm dataset (written by jobs/features.py).

    photo_id int64, feature float16[D] as NdarrayCodec bytes (pipeline.datasets.encoding)

``_common_metadata`` holds Petastorm's Unischema (:func:`schema`): Petastorm cannot read the
folder without it, so the manifest lists it like a part file. features/'s manifest also vouches
for rejects/features/ and records the CNN settings (``parameters``) and ``feature_dim``.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.datasets import encoding
from pipeline.datasets.base import Dataset

DATASET = Dataset("features", "features", "features", "im2vec features")
MODEL_KEYS = ("cnn", "cnn_weights", "cnn_input_size")   # the CNN settings features/ was made with
encode = encoding.encode_ndarray
decode = encoding.decode_ndarray


def schema(feature_dim: int | None):
    """The Petastorm Unischema of features/: photo_id int64, feature float16[feature_dim] (NdarrayCodec)."""
    from petastorm.codecs import NdarrayCodec, ScalarCodec
    from petastorm.unischema import Unischema, UnischemaField
    from pyspark.sql.types import LongType

    return Unischema("Features", [
        UnischemaField("photo_id", np.int64, (), ScalarCodec(LongType()), False),
        UnischemaField("feature", np.float16, (feature_dim,), NdarrayCodec(), False)])


def read(spark, root: str):
    """ROOT/features/ as a Spark DataFrame (photo_id, feature), after the data guard."""
    return DATASET.spark(spark, root).select("photo_id", "feature")


def feature_dim(features) -> int | None:
    """D of a Spark DataFrame of (.., feature NdarrayCodec bytes), from its first row; None when it is empty."""
    first = features.select("feature").first()
    return None if first is None else int(decode(pa.array([first[0]], pa.binary())).shape[1])


def read_rows(root: str, photo_ids=None) -> tuple[np.ndarray, np.ndarray]:
    """CNN features from ROOT/features/, decoded.

    Args:
        root: the run root URI.
        photo_ids: int[M] photo ids to read, or None for every row (a small corpus only: N x D floats).

    Returns:
        ``(photo_id int64[N], feature float32[N, D])``: with photo_ids, the ones found, in the order
        asked, each once; without, every row in file order.
    """
    dataset = DATASET.arrow(root)
    if photo_ids is None:
        table = dataset.to_table(columns=["photo_id", "feature"])
    else:
        asked = pa.array(np.unique(np.asarray(photo_ids, dtype=np.int64)))
        table = dataset.to_table(columns=["photo_id", "feature"], filter=pc.field("photo_id").isin(asked))
        _, first = np.unique(table.column("photo_id").to_numpy(), return_index=True)
        table = table.take(pa.array(first))
        wanted = list(dict.fromkeys(int(p) for p in photo_ids))
        position = {int(p): i for i, p in enumerate(table.column("photo_id").to_pylist())}
        table = table.take(pa.array([position[p] for p in wanted if p in position], pa.int64()))
    features = decode(table.column("feature"))
    return table.column("photo_id").to_numpy().astype(np.int64), features.astype(np.float32)


def made_with(root: str) -> dict:
    """The settings features/ was made with (its manifest's ``parameters``: image_uri, cnn, min_side ...); {} without one."""
    return (DATASET.manifest(root) or {}).get("parameters", {})


def image_uri(root: str) -> str:
    """The image URI template features/ read its images through; "" without one.

    Manifests written before 0.2 call it ``images`` (the config key's old name).
    """
    parameters = made_with(root)
    return parameters.get("image_uri") or parameters.get("images") or ""


def present(root: str, photo_ids) -> np.ndarray:
    """bool[M]: which of the photos ``photo_ids`` (int[M]) have a row in ROOT/features/ (reads photo_id only)."""
    photo_ids = np.asarray(photo_ids, dtype=np.int64)
    found = DATASET.arrow(root).to_table(columns=["photo_id"], filter=pc.field("photo_id").isin(pa.array(photo_ids)))
    return np.isin(photo_ids, found.column("photo_id").to_numpy())


def batches(root: str, batch_size: int):
    """Yield ``(photo_id int64[B], feature float16[B, D])`` over all of ROOT/features/, ``batch_size`` rows at a time."""
    for batch in DATASET.arrow(root).scanner(columns=["photo_id", "feature"], batch_size=batch_size).to_batches():
        if batch.num_rows:
            yield batch.column(0).to_numpy(), decode(batch.column(1))
