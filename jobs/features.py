"""features: clean/ + images -> features/ (Petastorm: photo_id, feature float16[D]) and rejects/features/.

Each photo's image is found through the ``images`` URI template (pipeline.imagesource), read
(local, HDFS, S3, HTTP), decoded and preprocessed as the CNN was trained (pipeline.images) and
run through the CNN (pipeline.cnn) in batches of ``cnn_batch_size``, inside ``mapInArrow``
tasks. Each Python worker loads the model once and keeps it for every later task; TensorFlow
gets one thread per task core and, on GPU executors, only the GPU Spark assigned the task
(deploy/gpu/; the session asks for GPU executors when ``gpus_per_executor`` is set, see
:func:`pipeline.spark.gpu_conf`). The CPU and GPU paths are the same code.

    ROOT/features/           Petastorm dataset: photo_id int64, feature float16[D] (NdarrayCodec)
    ROOT/rejects/features/   Parquet: photo_id, uri, reason, detail; reasons are
                             pipeline.imagesource.REASONS (no_uri, missing, fetch_failed) and
                             pipeline.images.ImageError.REASONS (not_an_image, truncated, too_small ...,
                             unavailable: the host's placeholder for a removed photo, pipeline.placeholder)

A re-run is incremental: photos already in features/ are not extracted again; the new
features/ holds the old rows and the new ones, and replaces the old folder atomically. Rejected
photos are tried again (a fetch may have failed for a passing reason). Counts add up::

    photos in clean/ = extracted (rows_out) + rejected + already_present

Run with ``im2vec features --root ROOT --set image_uri=TEMPLATE``.
"""
from __future__ import annotations

import math
import os
import sys
import time
from functools import partial
from typing import Iterator, NamedTuple

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession, functions as F

from pipeline import Im2vecError, config as configuration, imagesource, placeholder, storage
from pipeline.datasets import clean as clean_data, features as features_data, rejects
from pipeline.spark import DISCOVERY_SCRIPT, gpu_conf  # noqa: F401  (GPU executors: the session builds them)

MODEL_KEYS = features_data.MODEL_KEYS   # features/ made with other values is not extended
TASK_KEYS = MODEL_KEYS + ("min_side", "fetch_threads", "fetch_timeout", "s3_endpoint", "unavailable_fingerprints")
PARAMETER_KEYS = ("image_uri",) + TASK_KEYS + ("cnn_batch_size", "feature_tasks", "gpus_per_executor", "gpus_per_task")
IMAGES_PER_TASK = 10_000   # ~5 min on a CPU core, under a minute on a GPU share: cheap retries, few files
ROW_GROUP_MB = 32          # features/ row groups, what a Petastorm reader holds at once
TASK_OUTPUT = pa.schema([
    ("photo_id", pa.int64()),
    ("feature", pa.binary()),   # NdarrayCodec bytes of float16[D]; null when rejected
    ("uri", pa.string()),       # rejected rows only, as for the columns below
    ("reason", pa.string()),
    ("detail", pa.string()),
])
TASK_OUTPUT_DDL = "photo_id long, feature binary, uri string, reason string, detail string"


# --- GPUs and TensorFlow in a Python worker ------------------------------------------------------

_pinned_gpus: list[str] | None = None   # what this worker's TensorFlow was set up with


def use_devices(cpus: int, gpus: list[str]) -> None:
    """Set up TensorFlow in this Python worker, once: ``cpus`` threads, only the ``gpus`` Spark assigned.

    Must run before TensorFlow is first imported in the process: CUDA reads
    ``CUDA_VISIBLE_DEVICES`` once. Spark's GPU addresses are nvidia-smi indexes, which CUDA uses
    too once ``CUDA_DEVICE_ORDER=PCI_BUS_ID``. GPU memory grows as needed, so tasks sharing a GPU
    fit. A reused worker keeps its first setup; with one GPU per executor that is always right.
    """
    global _pinned_gpus
    if _pinned_gpus is not None:
        if gpus and gpus != _pinned_gpus:
            print(f"[im2vec] features: this Python worker runs on GPU {_pinned_gpus}, not {gpus} as Spark "
                  "assigned; use one GPU per executor", file=sys.stderr)
        return
    if gpus:
        os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        # More TF threads than the task's cores only fight the other tasks (measured slower).
        tf.config.threading.set_intra_op_parallelism_threads(max(1, cpus))
        tf.config.threading.set_inter_op_parallelism_threads(1)
        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:   # TensorFlow already running in this process: keep its settings
        pass
    _pinned_gpus = list(gpus)


class Extractor(NamedTuple):
    """A loaded feature model: float32 (N, input_size, input_size, 3) -> (N, feature_dim)."""
    model: object
    input_size: int
    feature_dim: int


_extractors: dict[tuple, Extractor] = {}   # per Python worker, kept across tasks


def extractor(config: dict, cpus: int = 1, gpus: list[str] = ()) -> Extractor:
    """This worker's model for the configuration's MODEL_KEYS, loaded on first use (pipeline.cnn.feature_model)."""
    key = tuple(str(config.get(k)) for k in MODEL_KEYS)
    if key not in _extractors:
        from pipeline import cnn

        use_devices(cpus, list(gpus))
        _extractors[key] = Extractor(*cnn.feature_model(config))
    return _extractors[key]


# --- the transformation ----------------------------------------------------------------------------

def extract_partition(batches: Iterator[pa.RecordBatch], *, template: imagesource.Template,
                      config: dict) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: photos (photo_id + the template's columns) -> TASK_OUTPUT rows.

    Reads one batch of images ahead on ``fetch_threads`` threads while this batch is decoded
    and run through the model. Yields, per input batch, the extracted rows (photo_id, feature)
    and the rejected ones (photo_id, uri, reason, detail).
    """
    from pyspark import TaskContext

    from pipeline import images

    context = TaskContext.get()
    assigned = context.resources().get("gpu")
    gpus, cpus = (list(assigned.addresses) if assigned else []), context.cpus()
    reader = imagesource.source_for(config)
    min_side = int(config["min_side"])
    unavailable = placeholder.parse(config.get("unavailable_fingerprints"))
    from pipeline import progress

    counter = progress.task_counter("images")   # the driver's progress line, while the task runs

    def with_uris():
        for batch in batches:
            if batch.num_rows:
                uris = template.expand(batch)
                yield (batch.column("photo_id"), uris), uris.to_pylist()

    for (photo_id, uris), fetched in imagesource.read_ahead(with_uris(), reader, int(config["fetch_threads"])):
        reasons = [f.reason for f in fetched]
        details = [f.detail for f in fetched]
        read = [i for i, f in enumerate(fetched) if f.data is not None]
        if read:
            model = extractor(config, cpus, gpus)
            pixels, image_reasons = images.preprocess_batch([fetched[i].data for i in read], model.input_size,
                                                            min_side, unavailable)
            for i, reason in zip(read, image_reasons):
                reasons[i] = reason
            kept = [i for i, reason in zip(read, image_reasons) if reason is None]
            if kept:
                features = np.asarray(model.model.predict_on_batch(pixels))
                yield pa.RecordBatch.from_arrays(
                    [photo_id.take(kept), features_data.encode(features)] + [pa.nulls(len(kept), pa.string())] * 3,
                    schema=TASK_OUTPUT)
        rejected = [i for i, reason in enumerate(reasons) if reason is not None]
        if rejected:
            yield pa.RecordBatch.from_arrays(
                [photo_id.take(rejected), pa.nulls(len(rejected), pa.binary()), uris.take(rejected),
                 pa.array([reasons[i] for i in rejected], pa.string()),
                 pa.array([details[i] for i in rejected], pa.string())], schema=TASK_OUTPUT)
        counter.add(len(fetched))
    counter.close()


def extract(photos: DataFrame, template: imagesource.Template, config: dict, partitions: int) -> DataFrame:
    """photos (photo_id + template columns) -> TASK_OUTPUT rows, on ``partitions`` tasks of similar size."""
    task_config = {key: config.get(key) for key in TASK_KEYS}
    return photos.repartition(partitions).mapInArrow(
        partial(extract_partition, template=template, config=task_config), TASK_OUTPUT_DDL)


# --- the stage --------------------------------------------------------------------------------

def run(spark: SparkSession, config: dict, root: str) -> dict:
    """Extract CNN features for the photos of ``ROOT/clean/`` not yet in ``ROOT/features/``.

    Args:
        spark: the session (GPU executors when made with ``gpus_per_executor``: pipeline.spark.gpu_conf).
        config: run configuration (PARAMETER_KEYS; ``images`` is required). ``partitions`` is the
            number of extraction tasks; 0 = one per IMAGES_PER_TASK photos, at least Spark's
            default parallelism.
        root: run root URI.

    Returns:
        The manifest written to ``ROOT/features/_manifest.json``: rows_in (photos in clean/),
        rows_out (features extracted by this run), rows_rejected, already_present, rows_total
        (rows in features/), feature_dim and rejects by reason.
    """
    from petastorm.etl.dataset_metadata import materialize_dataset
    from pyspark.sql.pandas.types import to_arrow_schema

    started = time.time()
    clean_uri, final, final_rejects = clean_data.DATASET.uri(root), features_data.DATASET.uri(root), \
        rejects.FEATURES.uri(root)
    clean_data.DATASET.require(root)
    batch_size = _checked_batch_size(config)
    # Load the CNN here first: a bad cnn / cnn_weights then fails once, before any Spark job, instead
    # of in every task (and every retry). The driver keeps it, as a Python worker does.
    extractor(config)
    clean = clean_data.read(spark, root)
    template = imagesource.parse_template(config.get("image_uri"), to_arrow_schema(clean.schema))
    photos = clean.select("photo_id", *(c for c in template.columns if c != "photo_id")).dropDuplicates(["photo_id"])

    old = _reusable_features(spark, config, root)
    if old is None:
        todo, rows_in, already_present = photos, photos.count(), 0
    else:
        flagged = photos.join(old.select("photo_id", F.lit(True).alias("present")), "photo_id", "left")
        counts = flagged.agg(F.count(F.lit(1)).alias("rows"), F.count("present").alias("present")).first()
        rows_in, already_present = int(counts["rows"]), int(counts["present"])
        todo = flagged.where(F.col("present").isNull()).drop("present")
    partitions = int(config.get("feature_tasks") or 0) or max(
        spark.sparkContext.defaultParallelism, math.ceil((rows_in - already_present) / IMAGES_PER_TASK))
    from pipeline import progress

    progress.expect(rows_in - already_present, "images")
    print(f"[im2vec] features: {rows_in - already_present:,} of {rows_in:,} photos to extract "
          f"on {partitions} tasks from {template.text}", file=sys.stderr)

    staging = storage.staging_uri(final)
    tasks_uri, staged, staged_rejects = (storage.join(staging, d) for d in ("tasks", "features", "rejects"))
    batch_conf = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
    try:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_size))
        # The CNN runs once, into a staging table; features and rejects are both read from it.
        extract(todo, template, config, partitions).write.parquet(tasks_uri)
        tasks = spark.read.parquet(tasks_uri)
        by_reason = {r["reason"]: int(r["count"]) for r in tasks.groupBy("reason").count().collect()}
        rows_out = by_reason.pop(None, 0)
        rows_rejected = sum(by_reason.values())
        if rows_in != rows_out + rows_rejected + already_present:
            raise RuntimeError(f"features: counts do not add up: {rows_in} photos, {rows_out} extracted, "
                               f"{rows_rejected} rejected, {already_present} present")  # a bug, never bad input
        features = tasks.where(F.col("reason").isNull()).select("photo_id", "feature")
        if old is not None:
            features = old.unionByName(features)
        feature_dim = features_data.feature_dim(features)
        with materialize_dataset(spark, staged, features_data.schema(feature_dim), ROW_GROUP_MB):
            features.write.parquet(staged)
        rows_total = spark.read.parquet(staged).count()
        (tasks.where(F.col("reason").isNotNull()).select("photo_id", "uri", "reason", "detail")
         .sortWithinPartitions("photo_id").write.parquet(staged_rejects))
        storage.replace(staged_rejects, final_rejects)
        storage.replace(staged, final)
        return storage.write_manifest(
            final, "features", rows_in=rows_in, rows_out=rows_out, rows_rejected=rows_rejected,
            already_present=already_present, rows_total=rows_total, feature_dim=feature_dim,
            rejects_by_reason=dict(sorted(by_reason.items())), rejects=final_rejects, covers=(final_rejects,),
            parameters=configuration.redacted({k: config.get(k) for k in PARAMETER_KEYS}),
            inputs=[clean_uri, template.text], started=started)
    finally:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", batch_conf)
        storage.delete(staging)


def _checked_batch_size(config: dict) -> int:
    """``cnn_batch_size`` from the configuration, after checking it and ``unavailable_fingerprints``:
    a bad value fails here, before any Spark job, not in every task."""
    batch_size = int(config["cnn_batch_size"])
    if batch_size < 1:
        raise Im2vecError(f"cnn_batch_size must be at least 1, got {batch_size}")
    try:
        placeholder.parse(config.get("unavailable_fingerprints"))
    except ValueError as err:
        raise Im2vecError(f"unavailable_fingerprints: {err}") from None
    return batch_size


def _reusable_features(spark: SparkSession, config: dict, root: str) -> DataFrame | None:
    """The complete features/ of an earlier run (photo_id, feature), or None when there is none.

    One whose files do not match its manifest (a file lost or cut short) is not reused: every
    photo is extracted again. Raises Im2vecError when it was made with another CNN: mixing two
    models' features would be silently wrong, and extracting everything again is the user's call.
    """
    final = features_data.DATASET.uri(root)
    manifest = features_data.DATASET.manifest(root)
    if manifest is None:
        if storage.exists(final):
            print(f"[im2vec] features: {final} is incomplete (no manifest); extracting every photo again",
                  file=sys.stderr)
        return None
    problems = features_data.DATASET.problems(root, manifest)
    if problems:
        print(f"[im2vec] features: {problems[0]}; extracting every photo again", file=sys.stderr)
        return None
    made_with = {k: manifest.get("parameters", {}).get(k) for k in MODEL_KEYS}
    asked = {k: config.get(k) for k in MODEL_KEYS}
    if made_with != asked:
        raise Im2vecError(f"{final} holds features of {made_with}, this run asks for {asked}: remove "
                          f"{final} to extract every photo again, or set those keys back")
    return features_data.read(spark, root)

