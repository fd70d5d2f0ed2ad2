"""The sample stage: pre-sample each epoch's positive and negative tags, globally shuffled.

Reads ROOT/vocab/ (tag_id, neg_weight, pos_weight), ROOT/tagged/ (train split) and, when present,
ROOT/features/ (Petastorm: photo_id, feature as NdarrayCodec bytes). Writes, per epoch E:

    ROOT/epochs/epoch=EEEEE/   a Petastorm dataset of the epoch contract (pipeline.datasets.epochs):
        photo_id  int64
        feature   binary: features/'s NdarrayCodec float16[D] as it is (only when features/ exists)
        pos_ids   list<int32>, P = config positives, drawn from the image's tags ∝ pos_weight
        neg_ids   list<int32>, K = config negatives, drawn by neg_weight, never an own tag (unless
                  exclude_own_tags is false); K = 0 when the sampling method draws its negatives in
                  the trainer (pipeline.sampling.METHODS) or negatives is 0: a positives-only epoch
        own_ids   list<int32>, M: the image's tags padded with -1, M the most tags of a train image;
                  only for the sampling methods that keep own tags out of the negatives they draw
      Rows are in shuffled order: files in name order, rows in file order. Row groups hold about
      row_group_mb MiB. _manifest.json last: rows_in = train images, rows_out = rows written,
      rows_rejected = train images with no tags, with every tag of the vocabulary (no negative
      to draw) or, when features/ exists, without features (counted per reason).
    ROOT/epochs/_manifest.json  a summary of the last `im2vec sample` run (sums over its epochs).

Every draw is a pure function of (seed, epoch, photo_id, slot) (see pipeline.sampling), so an
epoch is byte-identical however often and on however many partitions it is made.
Run with `im2vec sample --root ROOT --epochs 1-3`.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.broadcast import Broadcast
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipeline import Im2vecError, sampling, storage
from pipeline.datasets import epochs as epochs_data, features as features_data, tagged, vocab as vocab_data

KEYS = ("seed", "positives", "negatives", "output_partitions", "row_group_mb")   # and the sampling method's keys


@dataclass
class Inputs:
    """What every epoch of one run samples from (see :func:`prepare`).

    Attributes:
        images: usable train images: photo_id, tag_ids [, feature].
        tables: broadcast :class:`pipeline.sampling.SamplingTables`.
        counts: train images and rejects by reason, for the manifests.
        feature_dim: D of the features, None without features/.
        uris: the input folders read.
        most_tags: the most tags of a usable train image (the width of own_ids).
    """
    images: DataFrame
    tables: Broadcast
    counts: dict
    feature_dim: int | None
    uris: list[str]
    most_tags: int


def parameters(config: dict) -> dict:
    """The configuration values the stage uses, checked: seed, positives, negatives (as the sampling
    method writes them), partitions, row_group_mb, sampling, exclude_own_tags."""
    params = {key: int(config[key]) for key in KEYS}
    if params["positives"] < 1 or params["negatives"] < 0:
        raise Im2vecError(f"positives must be at least 1 and negatives at least 0, got {params['positives']} "
                          f"and {params['negatives']}")
    if params["row_group_mb"] < 1 or params["output_partitions"] < 0:
        raise Im2vecError("row_group_mb must be at least 1 and output_partitions at least 0")
    method = sampling.method(config)
    params["positives"], params["negatives"] = method.written(params["positives"], params["negatives"])
    params["sampling"] = sampling.method_name(config)
    params["exclude_own_tags"] = bool(config.get("exclude_own_tags", True))
    return params


def prepare(spark: SparkSession, config: dict, root: str) -> Inputs:
    """Read the inputs once for any number of epochs: broadcast the tables, count the rejects.

    Args:
        spark: the session; config: the run configuration; root: the run root URI.

    Returns:
        :class:`Inputs`. Counting the train images is one pass over tagged/ (and features/'s
        photo_id column); the broadcast holds 20 bytes per tag.
    """
    vocab = vocab_data.read(root, ["images", "neg_weight", "pos_weight"]).to_pandas()
    size = len(vocab)
    sampling.check_vocabulary(config, size)
    try:
        tables = sampling.build_tables(vocab["neg_weight"].to_numpy(), vocab["pos_weight"].to_numpy())
    except ValueError as err:
        raise Im2vecError(f"vocab/ weights cannot be sampled from: {err}") from None
    uris = [vocab_data.DATASET.uri(root), tagged.DATASET.uri(root)]
    train = tagged.read(spark, root).where(F.col("split") == "train").select("photo_id", "tag_ids")
    tag_count = F.coalesce(F.size("tag_ids"), F.lit(0))
    usable = (tag_count > 0) & (tag_count < size)
    reasons = {"no_tags": tag_count <= 0, "every_tag": tag_count >= size}

    features_uri = features_data.DATASET.uri(root)
    feature_dim = None
    if storage.exists(features_uri):
        if features_data.DATASET.manifest(root) is None:
            raise Im2vecError(f"{features_uri} is incomplete (no _manifest.json): finish `im2vec features` "
                              "or remove the folder to sample without features")
        uris.append(features_uri)
        features = features_data.read(spark, root)
        feature_dim = features_data.feature_dim(features)
        images = train.where(usable).join(features, "photo_id")
        flags = features.select("photo_id", F.lit(True).alias("has_feature"))
        counted = train.join(flags, "photo_id", "left")
        reasons["no_features"] = usable & F.col("has_feature").isNull()
    else:
        images = train.where(usable)
        counted = train
    row = counted.agg(F.count(F.lit(1)).alias("train"), F.max(F.when(usable, tag_count)).alias("most_tags"),
                      *(F.sum(cond.cast("long")).alias(name) for name, cond in reasons.items())).first()
    counts = {name: int(row[name] or 0) for name in ["train", *reasons]}
    return Inputs(images, spark.sparkContext.broadcast(tables), counts, feature_dim, uris, int(row["most_tags"] or 1))


def shuffled(images: DataFrame, *, seed: int, epoch: int, partitions: int = 0) -> DataFrame:
    """An epoch's order: DataFrame -> DataFrame.

    Args:
        images: any frame with photo_id long.
        seed, epoch: select the order. partitions: output partitions; 0 = spark.sql.shuffle.partitions.

    Returns:
        ``images`` ordered by Spark's xxhash64 of (seed, epoch, photo_id), then photo_id: partition
        i holds the i-th of ``partitions`` equal slices of the hash's range, sorted. The same rows
        in the same order, partition after partition, whatever the input's partitioning and
        however many partitions.
    """
    count = partitions or int(images.sparkSession.conf.get("spark.sql.shuffle.partitions"))
    order = F.xxhash64(F.lit(seed).cast("long"), F.lit(epoch).cast("long"), "photo_id")
    # xxhash64 is uniform over the longs, so equal slices of their range make equal partitions
    # and repartitionByRange's sampling pass (a scan and copy of every row) is not needed.
    slice_of = F.least(F.floor((order.cast("double") / 2.0 ** 64 + 0.5) * count).cast("int"), F.lit(count - 1))
    keys = F.array(*(F.lit(key).cast("int") for key in partition_keys(count)))
    return (images.withColumn("order", order).withColumn("slice_key", F.element_at(keys, slice_of + 1))
            .repartition(count, "slice_key").sortWithinPartitions("order", "photo_id").drop("slice_key", "order"))


def partition_keys(count: int) -> list[int]:
    """For i in 0..count-1, the smallest int key that ``repartition(count, key)`` sends to partition i.

    Spark places a row by ``pmod(murmur3(key, seed=42), count)`` (HashPartitioning); this is
    Spark's Murmur3_x86_32.hashInt in Python.
    """
    def rotl(x, r):
        return ((x << r) | (x >> (32 - r))) & 0xFFFFFFFF

    def murmur3_int(key: int) -> int:
        k1 = rotl((key & 0xFFFFFFFF) * 0xCC9E2D51 & 0xFFFFFFFF, 15) * 0x1B873593 & 0xFFFFFFFF
        h1 = (rotl(42 ^ k1, 13) * 5 + 0xE6546B64) & 0xFFFFFFFF
        h1 ^= 4
        h1 = (h1 ^ (h1 >> 16)) * 0x85EBCA6B & 0xFFFFFFFF
        h1 = (h1 ^ (h1 >> 13)) * 0xC2B2AE35 & 0xFFFFFFFF
        h1 ^= h1 >> 16
        return h1 - (1 << 32) if h1 >= 1 << 31 else h1

    keys: dict[int, int] = {}
    key = 0
    while len(keys) < count:
        keys.setdefault(murmur3_int(key) % count, key)  # Python's % is pmod
        key += 1
    return [keys[i] for i in range(count)]


def write_partition(batches, *, folder: str, tables: Broadcast, seed: int, epoch: int, positives: int,
                    negatives: int, exclude_own: bool, own_tags: int, row_group_rows: int):
    """mapInArrow body: draw one partition's rows and write them, in order, to one Parquet file.

    Writing here with pyarrow (instead of returning the draws to Spark's writer) spares a trip
    through the JVM and parquet-mr's slow path for list columns. The file is named by partition
    and task attempt; the driver keeps the attempts whose stats row it collected.

    Yields:
        One batch: ``file`` (name in ``folder``, or null when the partition is empty), ``rows``,
        ``row_groups`` (Petastorm's metadata lists each file's row groups).
    """
    from pyspark import TaskContext

    ctx = TaskContext.get()
    name = storage.attempt_file(ctx.partitionId(), ctx.taskAttemptId())
    fs, path = storage.filesystem(folder)
    drawn_from = tables.value
    writer, pending, rows, row_groups = None, [], 0, 0

    def flush():
        nonlocal writer, pending, rows, row_groups
        if writer is None:
            writer = pq.ParquetWriter(f"{path}/{name}", pending[0].schema, filesystem=fs,
                                      compression=column_compression(pending[0].schema))
        table = pa.Table.from_batches(pending)
        writer.write_table(table, row_group_size=row_group_rows)
        rows += table.num_rows
        row_groups += -(-table.num_rows // row_group_rows)
        pending = []

    for batch in batches:
        pending.append(sampling.sample_batch(batch, drawn_from, seed, epoch, positives, negatives,
                                             exclude_own=exclude_own, own_tags=own_tags))
        if sum(b.num_rows for b in pending) >= row_group_rows:
            flush()
    if pending:
        flush()
    if writer is not None:
        writer.close()
    yield pa.RecordBatch.from_arrays([pa.array([name if writer else None], pa.string()), pa.array([rows], pa.int64()),
                                      pa.array([row_groups], pa.int64())], names=["file", "rows", "row_groups"])


def column_compression(schema: pa.Schema) -> dict[str, str]:
    """{Parquet column path: codec}: snappy, except CNN features, which it shrinks by under 1%
    (measured on the demo) while costing the sample stage and every trainer read time."""
    return {field.name + (".list.element" if pa.types.is_list(field.type) else ""):
            "none" if field.name == "feature" else "snappy" for field in schema}


def write_epoch(spark: SparkSession, config: dict, root: str, inputs: Inputs, epoch: int) -> dict:
    """Make ROOT/epochs/epoch=EEEEE/ atomically (staging folder, replace, manifest last); returns its manifest.

    The folder is a Petastorm dataset of the epoch contract (pipeline.datasets.epochs): its
    ``_common_metadata`` is written from what the tasks report, without reading their files again.
    """
    started = time.time()
    params = parameters(config)
    own_tags = inputs.most_tags if sampling.method(config).own_ids else 0
    final = epochs_data.uri(root, epoch)
    staged = storage.staging_uri(final)
    fs, path = storage.filesystem(staged)
    fs.create_dir(path, recursive=True)
    row_bytes = 8 + 4 * (params["positives"] + params["negatives"] + own_tags) + 2 * (inputs.feature_dim or 0)
    body = functools.partial(write_partition, folder=staged, tables=inputs.tables, seed=params["seed"], epoch=epoch,
                             positives=params["positives"], negatives=params["negatives"],
                             exclude_own=params["exclude_own_tags"], own_tags=own_tags,
                             row_group_rows=max(1, params["row_group_mb"] * 2 ** 20 // row_bytes))
    try:
        written = (shuffled(inputs.images, seed=params["seed"], epoch=epoch, partitions=params["output_partitions"])
                   .mapInArrow(body, "file string, rows long, row_groups long").collect())
        schema = sampling.output_schema(inputs.feature_dim is not None, own_tags > 0)
        renamed = storage.commit_attempt_files(staged, sorted(w.file for w in written if w.file), schema)
        # With no rows, commit_attempt_files wrote one empty file: pyarrow gives it one empty row group.
        row_groups = {renamed[w.file]: w.row_groups for w in written if w.file} or {"part-00000.parquet": 1}
        epochs_data.write_petastorm_metadata(staged, schema, row_groups, feature_dim=inputs.feature_dim,
                                             positives=params["positives"], negatives=params["negatives"],
                                             own_tags=own_tags)
        storage.replace(staged, final)
    finally:
        storage.delete(staged)
    counts = inputs.counts
    rejected = {name: n for name, n in counts.items() if name != "train"}
    rows_out = sum(w.rows for w in written)
    if rows_out != counts["train"] - sum(rejected.values()):
        raise Im2vecError(f"{final}: wrote {rows_out:,} rows for {counts['train'] - sum(rejected.values()):,} "
                          "usable train images; does features/ hold a photo_id twice?")
    return storage.write_manifest(
        final, "sample", rows_in=counts["train"], rows_out=rows_out, rows_rejected=sum(rejected.values()),
        parameters=params, inputs=inputs.uris, started=started, schema_version=epochs_data.SCHEMA_VERSION, epoch=epoch,
        seed=params["seed"], positives=params["positives"], negatives=params["negatives"], own_tags=own_tags,
        sampling=params["sampling"], exclude_own_tags=params["exclude_own_tags"], feature_dim=inputs.feature_dim, vocab_size=inputs.tables.value.vocab_size, rejects_by_reason=rejected,
        files=len([w for w in written if w.file]))


def run(spark: SparkSession, config: dict, root: str, epochs: tuple[int, int] | None = None) -> dict:
    """Sample epochs ``a..b`` (inclusive; default 1..config epochs) into ROOT/epochs/.

    Returns:
        The summary manifest written to ROOT/epochs/_manifest.json: rows_in, rows_out and
        rows_rejected summed over the epochs, and ``epochs``, one short record per epoch.
    """
    started = time.time()
    first, last = epochs or (1, int(config["num_epochs"]))
    inputs = prepare(spark, config, root)
    made = []
    for epoch in range(first, last + 1):
        manifest = write_epoch(spark, config, root, inputs, epoch)
        made.append({key: manifest[key] for key in ("epoch", "rows_out", "seconds", "output")})
        print(f"[im2vec] sample: epoch {epoch}: {manifest['rows_out']:,} rows in {manifest['seconds']:.1f}s",
              flush=True)
    inputs.tables.unpersist()
    rows_in = inputs.counts["train"] * len(made)
    rows_out = sum(m["rows_out"] for m in made)
    # A summary, not a dataset: each epoch's own manifest lists its files (the scheduler deletes epochs).
    return storage.write_manifest(epochs_data.parent_uri(root), "sample", rows_in=rows_in, rows_out=rows_out,
                                  rows_rejected=rows_in - rows_out, parameters=parameters(config),
                                  inputs=inputs.uris, started=started, epochs=made, data_files={})


def check(spark: SparkSession, config: dict, root: str, epoch: int) -> dict:
    """Compare a written epoch's draws with the distributions they should follow.

    Negatives: each image draws from neg_weight restricted to the tags it does not carry, so tag
    t's expected count is K · q_t · Σ_{images i not carrying t} 1 / (1 - Q_i), with q = neg_weight
    normalized and Q_i the mass of image i's own tags; this is what the observed counts are
    compared with (TV distance against the noise floor, chi-square on well-filled tags); drawn with
    ``exclude_own_tags: false``, against K · q_t · images. Positives: drawn ∝ pos_weight within each image's tags; reported against that expectation
    and against a uniform pick of the image's tags, as mean log(images) and per frequency decile.

    Returns:
        A JSON-ready dict: epoch, images, own_tag_negatives and foreign_positives (both must be
        0, own_tag_negatives unless drawn with exclude_own_tags false), ``negatives`` (None in a
        positives-only epoch) and ``positives`` from :func:`pipeline.sampling.draw_fit`, and the
        positives' ``mean_log_images`` and ``deciles``.
    """
    manifest = storage.read_manifest(epochs_data.uri(root, epoch)) or {}
    vocab = vocab_data.read(root, ["images", "neg_weight", "pos_weight"]).to_pandas()
    size = len(vocab)
    weights = pd.DataFrame({"tag_id": np.arange(size, dtype=np.int32),
                            "q": vocab["neg_weight"] / vocab["neg_weight"].sum(), "w": vocab["pos_weight"]})
    rows = (epochs_data.read(spark, root, epoch).select("photo_id", "pos_ids", "neg_ids")
            .join(tagged.read(spark, root).select("photo_id", "tag_ids"), "photo_id"))
    own = rows.select("photo_id", F.explode("tag_ids").alias("tag_id")).join(
        F.broadcast(spark.createDataFrame(weights)), "tag_id")
    per_image = own.groupBy("photo_id").agg(F.sum("q").alias("own_mass"), F.sum("w").alias("w_total"),
                                            F.count(F.lit(1)).alias("n_tags"))
    per_tag = (own.join(per_image, "photo_id").groupBy("tag_id")
               .agg(F.sum(1 / (1 - F.col("own_mass"))).alias("excluded"),
                    F.sum(F.col("w") / F.col("w_total")).alias("pos_expected"),
                    F.sum(1 / F.col("n_tags")).alias("pos_uniform"),
                    F.count(F.lit(1)).alias("occurrences")).toPandas())
    totals = rows.agg(
        F.count(F.lit(1)).alias("images"),
        F.sum(F.size(F.filter("neg_ids", lambda t: F.array_contains("tag_ids", t)))).alias("own_tag_negatives"),
        F.sum(F.size(F.filter("pos_ids", lambda t: ~F.array_contains("tag_ids", t)))).alias("foreign_positives"),
    ).first()
    inverse_total = per_image.agg(F.sum(1 / (1 - F.col("own_mass")))).first()[0] or 0.0

    def per_tag_array(frame: pd.DataFrame, column: str) -> np.ndarray:
        values = np.zeros(size)
        values[frame["tag_id"].to_numpy()] = frame[column].to_numpy()
        return values

    def drawn(column: str) -> np.ndarray:
        return per_tag_array(rows.select(F.explode(column).alias("tag_id")).groupBy("tag_id").count().toPandas(),
                             "count")

    q = weights["q"].to_numpy()
    neg_expected = q * (inverse_total - per_tag_array(per_tag, "excluded")) \
        if manifest.get("exclude_own_tags", True) else q
    pos_drawn, pos_expected = drawn("pos_ids"), per_tag_array(per_tag, "pos_expected")
    pos_uniform, images = per_tag_array(per_tag, "pos_uniform"), vocab["images"].to_numpy()
    log_images = np.log(np.maximum(images, 1))
    return {
        "epoch": epoch,
        "images": int(totals["images"]),
        "own_tag_negatives": int(totals["own_tag_negatives"] or 0),
        "foreign_positives": int(totals["foreign_positives"] or 0),
        "negatives": sampling.draw_fit(drawn("neg_ids"), neg_expected) if manifest.get("negatives") else None,
        "positives": sampling.draw_fit(pos_drawn, pos_expected),
        "mean_log_images": {name: float((values * log_images).sum() / values.sum())
                            for name, values in (("drawn_positives", pos_drawn), ("expected", pos_expected),
                                                 ("uniform_over_tags", pos_uniform))},
        "deciles": sampling.frequency_deciles(images, per_tag_array(per_tag, "occurrences"),
                                              {"uniform_over_tags": pos_uniform, "expected": pos_expected,
                                               "drawn_positives": pos_drawn}),
    }

