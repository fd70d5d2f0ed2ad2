"""vocab: clean/ -> vocab/ (the tag vocabulary), tagged/ (each photo's vocabulary tag ids + split)
and zero_shot/ (tags held out of the vocabulary for the zero-shot evaluation).

A tag is a candidate when enough images AND enough distinct users carry it: one user putting
the same tag on 50,000 bulk uploads is spam, not vocabulary. ``zero_shot_fraction`` of the
candidates, chosen by a hash of (seed, tag) and so spread over frequent and rare tags alike, are
held out: they get no tag_id and never appear in tagged/, so sampling and training never see
them; ROOT/zero_shot/ (tag, images, users) lists them for `im2vec evaluate`, which scores them
through their word vectors only. The other candidates are the vocabulary. Ids are stable: by
descending image count, ties by tag. The train/validation/test split is by user (a hash of
user_id), because one user's uploads repeat the same tags and a split by photo would leak them.

    rows in (clean photos) = rows out (tagged photos) + untagged (no vocabulary tag left)

A photo whose only candidate tags were held out is untagged.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame, SparkSession, Window, functions as F

from pipeline import Im2vecError, storage
from pipeline.datasets import (clean as clean_data, tagged as tagged_data, vocab as vocab_data,
                               zero_shot as zero_shot_data)

PARAMETER_KEYS = ("min_images", "min_users", "max_size", "pos_power", "neg_power", "zero_shot_fraction",
                  "validation_fraction", "test_fraction", "seed", "output_partitions")
SPLIT_BUCKETS = 1 << 20


def tag_counts(clean: DataFrame) -> DataFrame:
    """clean rows -> (tag, images, users): how many photos and distinct users carry each tag."""
    return (clean.select("user_id", F.explode("tags").alias("tag"))
            .groupBy("tag")
            .agg(F.count(F.lit(1)).alias("images"), F.countDistinct("user_id").alias("users")))


def select_vocab(counts: DataFrame, *, min_images: int, min_users: int, max_size: int,
                 pos_power: float, neg_power: float, zero_shot_fraction: float = 0.0,
                 seed: int = 0) -> tuple[DataFrame, DataFrame]:
    """Keep frequent, multi-user tags, hold some out for zero-shot evaluation, give the rest ids.

    Args:
        counts: (tag, images, users) from :func:`tag_counts`.
        min_images / min_users: a candidate tag needs at least this many of each.
        max_size: at most this many candidates, the most frequent (ties by tag).
        pos_power: ``pos_weight = images ** pos_power`` (below 0, positives favour rare tags).
        neg_power: ``neg_weight = images ** neg_power`` (word2vec's unigram^0.75 noise).
        zero_shot_fraction: about this fraction of the candidates is held out (:func:`held_out`).
        seed: picks which ones.

    Returns:
        ``(vocab, zero_shot)``: vocab is (tag_id int, tag, images, users, neg_weight, pos_weight),
        tag_id 0.. by descending images, ties by tag; zero_shot is the held-out (tag, images, users).
    """
    order = Window.orderBy(F.desc("images"), F.asc("tag"))
    # A rank, not orderBy().limit(max_size): Spark's top-k allocates 2 x max_size slots per task
    # whatever the data (with max_size 100M the JVM grew to 4.4 GB on 50k photos).
    candidates = (counts.where((F.col("images") >= min_images) & (F.col("users") >= min_users))
                  .withColumn("rank", F.row_number().over(order)).where(F.col("rank") <= max_size).drop("rank")
                  .withColumn("held_out", held_out(F.col("tag"), seed=seed, fraction=zero_shot_fraction)))
    vocab = (candidates.where(~F.col("held_out"))
             .withColumn("tag_id", (F.row_number().over(order) - 1).cast("int"))
             .select("tag_id", "tag", "images", "users",
                     F.pow(F.col("images").cast("double"), F.lit(neg_power)).alias("neg_weight"),
                     F.pow(F.col("images").cast("double"), F.lit(pos_power)).alias("pos_weight")))
    return vocab, candidates.where(F.col("held_out")).select("tag", "images", "users")


def held_out(tag: Column, *, seed: int, fraction: float) -> Column:
    """True for about ``fraction`` of tags: a hash of (seed, tag), the same on every run and cluster.

    A hash, not frequency rank, so the held-out tags span frequent and rare ones; salted so it
    is independent of the by-user split, which hashes the same seed.
    """
    bucket = F.pmod(F.xxhash64(F.lit(int(seed)), F.lit("zero_shot"), tag), F.lit(SPLIT_BUCKETS)) / SPLIT_BUCKETS
    return bucket < F.lit(float(fraction))


def with_split(df: DataFrame, *, seed: int, validation_fraction: float, test_fraction: float) -> DataFrame:
    """Add ``split`` ("train" | "validation" | "test") from a hash of (seed, user_id): all of a
    user's photos land in the same split, the same way on every run and every cluster."""
    bucket = F.pmod(F.xxhash64(F.lit(int(seed)), F.col("user_id")), F.lit(SPLIT_BUCKETS)) / SPLIT_BUCKETS
    return df.withColumn("split", F.when(bucket < test_fraction, "test")
                         .when(bucket < test_fraction + validation_fraction, "validation")
                         .otherwise("train"))


def tag_ids_of(tags: pa.ListArray, vocab: pd.Index) -> pa.ListArray:
    """Map each photo's tags to vocabulary ids, dropping tags outside the vocabulary.

    Args:
        tags: list<string>[n], one photo's tags per row.
        vocab: the vocabulary's tags in tag_id order (position = tag_id), as a pandas Index: its
            hash table is built once and reused by every batch (pyarrow's index_in rebuilds one
            of all V tags per call, which made the lookup's time grow as rows x V).

    Returns:
        list<int32>[n], each list sorted ascending.
    """
    encoded = pc.dictionary_encode(pc.list_flatten(tags))         # each distinct tag looked up once
    found = np.append(vocab.get_indexer(encoded.dictionary.to_numpy(zero_copy_only=False)), -1)
    ids = found[pc.fill_null(encoded.indices, len(found) - 1).to_numpy()]   # a null tag: -1, unknown
    owner = pc.list_parent_indices(tags).to_numpy()
    known = ids >= 0
    ids, owner = ids[known].astype(np.int32), owner[known]
    order = np.lexsort((ids, owner))
    offsets = np.zeros(len(tags) + 1, dtype=np.int32)
    np.cumsum(np.bincount(owner, minlength=len(tags)), out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids[order], pa.int32()))


_VOCAB_INDEX: dict[str, pd.Index] = {}


def vocab_index(vocab_uri: str) -> pd.Index:
    """The tags of the vocabulary Parquet folder ``vocab_uri`` (tag_id, tag) in tag_id order, as a
    pandas Index; kept for the Python worker's next task (one folder at a time: staged folders
    are never rewritten in place)."""
    if vocab_uri not in _VOCAB_INDEX:
        import pyarrow.dataset as ds

        fs, path = storage.filesystem(vocab_uri)
        table = ds.dataset(path, filesystem=fs, format="parquet").to_table(columns=["tag_id", "tag"]).sort_by("tag_id")
        _VOCAB_INDEX.clear()
        _VOCAB_INDEX[vocab_uri] = pd.Index(table.column("tag").to_numpy(zero_copy_only=False))
    return _VOCAB_INDEX[vocab_uri]


def tag_photos(clean: DataFrame, vocab_uri: str) -> DataFrame:
    """clean rows -> (photo_id, user_id, tag_ids) for photos left with at least one vocabulary tag.

    The lookup runs on Arrow batches; each Python worker reads the vocabulary (``vocab_uri``, a
    written vocab/ folder) itself, so the driver never holds the tags and the lookup needs no
    shuffle of the (photo, tag) pairs.
    """
    def lookup(batches):
        index = vocab_index(vocab_uri)
        for batch in batches:
            ids = tag_ids_of(batch.column("tags"), index)
            yield pa.RecordBatch.from_arrays([batch.column("photo_id"), batch.column("user_id"), ids],
                                             names=["photo_id", "user_id", "tag_ids"])

    return (clean.select("photo_id", "user_id", "tags")
            .mapInArrow(lookup, "photo_id long, user_id string, tag_ids array<int>")
            .where(F.size("tag_ids") > 0))


def run(spark: SparkSession, config: dict, root: str) -> dict:
    """Build ``ROOT/vocab/``, ``ROOT/tagged/`` and ``ROOT/zero_shot/`` from ``ROOT/clean/``; returns the manifest.

    The manifest (in vocab/) counts ``vocab_size`` and ``zero_shot_tags`` (held out) besides the rows.
    """
    started = time.time()
    clean_uri = clean_data.DATASET.uri(root)
    clean = clean_data.read(spark, root)
    final_vocab, final_tagged, final_zero_shot = (data.DATASET.uri(root)
                                                  for data in (vocab_data, tagged_data, zero_shot_data))
    fraction = float(config["zero_shot_fraction"])
    if not 0.0 <= fraction < 1.0:
        raise Im2vecError(f"zero_shot_fraction must be in [0, 1), got {fraction}")
    storage.delete(storage.join(final_vocab, storage.MANIFEST))

    counts = tag_counts(clean).cache()
    vocab, zero_shot = select_vocab(
        counts, min_images=int(config["min_images"]), min_users=int(config["min_users"]),
        max_size=int(config["max_size"]), pos_power=float(config["pos_power"]), neg_power=float(config["neg_power"]),
        zero_shot_fraction=fraction, seed=int(config["seed"]))
    # Beside vocab/, not in it: every reader of vocab/ reads the folder as one Parquet dataset.
    staged_zero_shot = storage.staging_uri(final_zero_shot)
    zero_shot.coalesce(1).write.parquet(staged_zero_shot)
    zero_shot_tags = spark.read.parquet(staged_zero_shot).count()
    staged_vocab = storage.staging_uri(final_vocab)
    vocab.coalesce(1).write.parquet(staged_vocab)
    vocab_size = spark.read.parquet(staged_vocab).count()
    if not vocab_size:
        storage.delete(staged_vocab)
        storage.delete(staged_zero_shot)
        raise Im2vecError(f"no tag is on >= {config['min_images']} images by >= {config['min_users']} users: "
                          f"the vocabulary would be empty (lower min_images / min_users)")

    tagged = with_split(tag_photos(clean, staged_vocab), seed=int(config["seed"]),
                        validation_fraction=float(config["validation_fraction"]),
                        test_fraction=float(config["test_fraction"]))
    if int(config["output_partitions"]) > 0:
        tagged = tagged.repartition(int(config["output_partitions"]))
    staged_tagged = storage.staging_uri(final_tagged)
    tagged.select("photo_id", "user_id", "split", "tag_ids").write.parquet(staged_tagged)

    rows_in = clean.count()
    tagged = spark.read.parquet(staged_tagged)
    splits = {r.split: r["count"] for r in tagged.groupBy("split").count().collect()}
    rows_out = sum(splits.values())
    storage.replace(staged_tagged, final_tagged)
    storage.replace(staged_zero_shot, final_zero_shot)
    storage.replace(staged_vocab, final_vocab)
    return storage.write_manifest(
        final_vocab, "vocab", rows_in=rows_in, rows_out=rows_out, rows_rejected=0,
        untagged=rows_in - rows_out, vocab_size=vocab_size, zero_shot_tags=zero_shot_tags,
        distinct_tags=counts.count(), splits=splits, tagged=final_tagged, zero_shot=final_zero_shot,
        parameters={k: config[k] for k in PARAMETER_KEYS}, inputs=[clean_uri], started=started,
        covers=(final_tagged, final_zero_shot))

