"""index: features/ + model/ -> index/, every image's normalized embedding g(f)/|g(f)| in tag space.

The trained projection (ROOT/model/projection.keras) runs inside ``mapInArrow`` tasks over Arrow
batches of features/: the driver reads the model file once and broadcasts its bytes, so
executors need no access to ROOT/model; each Python worker loads it on first use and keeps it
for later tasks (keyed by its sha256), with one TensorFlow thread per task core
(jobs.features.use_devices). Nothing is collected to the driver: a corpus of any size streams
through the tasks into Parquet.

    ROOT/index/   Parquet: photo_id int64, embedding binary = raw little-endian float16[d]
                  (2·d bytes, no header; pyarrow 14 and Spark 3.5 have no half-float column),
                  L2-normalized; pipeline.datasets.index reads it
    _manifest.json last: rows_in = rows in features/ = rows_out (one embedding per feature row),
                  rows_rejected = 0; dim = d; model_sha256 of the projection.keras used

Run with ``im2vec index --root ROOT``.
"""
from __future__ import annotations

import hashlib
import sys
import time
from functools import partial
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
from pyspark.sql import DataFrame, SparkSession

from pipeline import storage
from pipeline.datasets import features as features_data, index as index_data, model as model_data

BATCH_ROWS = model_data.EMBED_BATCH   # feature rows per Arrow batch, per forward pass of g

_projections: dict[str, object] = {}   # per Python worker: model sha256 -> loaded projection


def embed_partition(batches: Iterator[pa.RecordBatch], *, model_bytes, sha256: str) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: (photo_id, feature NdarrayCodec bytes) batches -> index_data.SCHEMA batches, same rows.

    ``model_bytes``: a Spark broadcast of projection.keras (``.value`` is read once per worker).
    """
    from pyspark import TaskContext

    from jobs.features import use_devices
    from pipeline import query

    for batch in batches:
        if batch.num_rows == 0:
            continue
        if sha256 not in _projections:
            context = TaskContext.get()
            use_devices(context.cpus() if context else 1, [])
            _projections[sha256] = model_data.load_projection(model_bytes.value)
        projection = _projections[sha256]
        features = features_data.decode(batch.column("feature")).astype(np.float32)
        embeddings = query.normalize_rows(np.asarray(projection(features, training=False)))
        yield pa.RecordBatch.from_arrays([batch.column("photo_id"), index_data.encode(embeddings)],
                                         schema=index_data.SCHEMA)


def embed(features: DataFrame, model_bytes, sha256: str) -> DataFrame:
    """features (photo_id, feature) -> (photo_id, embedding), through the broadcast projection."""
    return features.select("photo_id", "feature").mapInArrow(
        partial(embed_partition, model_bytes=model_bytes, sha256=sha256), index_data.SCHEMA_DDL)


def run(spark: SparkSession, config: dict, root: str) -> dict:
    """Write ROOT/index/ from ROOT/features/ and ROOT/model/projection.keras; returns the manifest.

    Args:
        spark: the session; config: the run configuration (no keys of its own); root: run root URI.

    Raises:
        Im2vecError: features/ is incomplete, or there is no trained model yet.
    """
    started = time.time()
    features_uri, model_uri, final = (d.DATASET.uri(root) for d in (features_data, model_data, index_data))
    features = features_data.read(spark, root)
    data = model_data.read_projection_bytes(root)
    projection_uri = storage.join(model_uri, model_data.PROJECTION)
    sha256 = hashlib.sha256(data).hexdigest()
    dim = int(model_data.load_projection(data).output_shape[-1])
    model_manifest = model_data.DATASET.manifest(root) or {}
    if not model_manifest:
        print(f"[im2vec] index: {model_uri} has no manifest (training unfinished): indexing with its "
              "latest projection.keras", file=sys.stderr)

    rows_in = features.count()
    staged = storage.staging_uri(final)
    broadcast = spark.sparkContext.broadcast(data)
    batch_conf = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
    try:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(BATCH_ROWS))
        embed(features, broadcast, sha256).write.parquet(staged)
        fs, path = storage.filesystem(staged)
        rows_out = ds.dataset(path, filesystem=fs, format="parquet").count_rows()   # from the footers
        if rows_out != rows_in:
            raise RuntimeError(f"index: {rows_in} feature rows but {rows_out} embeddings")  # a bug, never bad input
        storage.replace(staged, final)
        return storage.write_manifest(
            final, "index", rows_in=rows_in, rows_out=rows_out, rows_rejected=0, dim=dim, model_sha256=sha256,
            model_epoch=model_manifest.get("epoch"), parameters={}, inputs=[features_uri, projection_uri],
            started=started)
    finally:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", batch_conf)
        broadcast.unpersist()
        storage.delete(staged)

