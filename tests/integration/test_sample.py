"""The sample stage on real local Spark: determinism, exclusion, features, manifests, --check, Petastorm."""
import glob
import io
import json
import os
import shutil
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import sample
from pipeline import cli, config as configuration, storage
from pipeline.datasets import encoding
from pipeline.datasets import epochs as epochs_data

VOCAB_SIZE = 500
IMAGES = 4000
FEATURE_DIM = 8


def write_inputs(root: str, *, images: int = IMAGES, vocab_size: int = VOCAB_SIZE, seed: int = 0,
                 spark=None, feature_dim: int | None = None, files: int = 3) -> dict:
    """Write ROOT/vocab/ and ROOT/tagged/ (and ROOT/features/ with ``spark`` and ``feature_dim``) as the
    vocab and features stages would: Zipf-like tags, 70/15/15 split, 3% untagged photos and one
    train photo carrying the whole vocabulary. Returns the truth: photo_id, split, offsets,
    tag_ids, has_feature, feature (float16[n, D]) as numpy arrays.
    """
    rng = np.random.default_rng(seed)
    photo_id = rng.choice(2 ** 50, images, replace=False).astype(np.int64)
    split = rng.choice(np.array(["train", "validation", "test"]), images, p=[0.7, 0.15, 0.15])
    popularity = 1.0 / np.arange(1, vocab_size + 1)
    counts = np.where(rng.random(images) < 0.03, 0, rng.integers(1, 13, images))
    keys = np.unique(np.repeat(np.arange(images, dtype=np.int64), counts) * vocab_size
                     + rng.choice(vocab_size, counts.sum(), p=popularity / popularity.sum()))
    rows, tag_ids = keys // vocab_size, (keys % vocab_size).astype(np.int32)
    everything = np.flatnonzero(split == "train")[0]
    others = rows != everything
    rows = np.concatenate([rows[others], np.full(vocab_size, everything)])
    tag_ids = np.concatenate([tag_ids[others], np.arange(vocab_size, dtype=np.int32)])
    order = np.argsort(rows * vocab_size + tag_ids, kind="stable")
    rows, tag_ids = rows[order], tag_ids[order]
    offsets = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=images))])

    used = np.maximum(1, np.bincount(tag_ids, minlength=vocab_size)).astype(np.int64)
    vocab = pa.table({"tag_id": pa.array(np.arange(vocab_size, dtype=np.int32)),
                      "tag": [f"tag{t}" for t in range(vocab_size)], "images": used, "users": used,
                      "neg_weight": used ** 0.75, "pos_weight": used ** -0.5})
    tagged = pa.table({"photo_id": photo_id, "user_id": [f"user{u}" for u in rng.integers(0, 300, images)],
                       "split": split, "tag_ids": pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)),
                                                                          pa.array(tag_ids))})
    fs, path = storage.filesystem(root)
    for name, table, parts in (("vocab", vocab, 1), ("tagged", tagged, files)):
        fs.create_dir(f"{path}/{name}", recursive=True)
        for i, chunk in enumerate(np.array_split(np.arange(table.num_rows), parts)):
            pq.write_table(table.take(chunk), f"{path}/{name}/part-{i:05d}.parquet")
        storage.write_manifest(storage.join(root, name), "vocab", rows_in=table.num_rows, rows_out=table.num_rows,
                               rows_rejected=0, parameters={}, inputs=[], started=time.time())
    truth = {"photo_id": photo_id, "split": split, "offsets": offsets, "tag_ids": tag_ids,
             "has_feature": np.zeros(images, bool), "feature": None}
    if feature_dim:
        truth["has_feature"] = rng.random(images) < 0.85
        truth["feature"] = rng.normal(size=(images, feature_dim)).astype(np.float16)
        write_features(spark, storage.join(root, "features"), photo_id[truth["has_feature"]],
                       truth["feature"][truth["has_feature"]])
    return truth


def write_features(spark, uri: str, photo_id: np.ndarray, feature: np.ndarray) -> None:
    """A features/ dataset as the features stage writes it: Petastorm, feature = float16[D] NdarrayCodec."""
    from petastorm.codecs import NdarrayCodec, ScalarCodec
    from petastorm.etl.dataset_metadata import materialize_dataset
    from petastorm.unischema import Unischema, UnischemaField, dict_to_spark_row
    from pyspark.sql.types import LongType

    schema = Unischema("Features", [UnischemaField("photo_id", np.int64, (), ScalarCodec(LongType()), False),
                                    UnischemaField("feature", np.float16, (feature.shape[1],), NdarrayCodec(), False)])
    with materialize_dataset(spark, uri, schema, row_group_size_mb=1):
        rows = [dict_to_spark_row(schema, {"photo_id": int(p), "feature": f}) for p, f in zip(photo_id, feature)]
        spark.createDataFrame(rows, schema.as_spark_schema()).coalesce(2).write.parquet(uri)
    storage.write_manifest(uri, "features", rows_in=len(photo_id), rows_out=len(photo_id), rows_rejected=0,
                           parameters={}, inputs=[], started=time.time())


def read_epoch(root: str, epoch: int) -> pa.Table:
    """An epoch's rows in their shuffled order: files in name order, rows in file order."""
    folder = storage.filesystem(epochs_data.uri(root, epoch))[1]
    return pa.concat_tables([pq.read_table(f) for f in sorted(glob.glob(f"{folder}/part-*.parquet"))])


def make_config(**overrides) -> dict:
    return configuration.load(overrides=[f"{k}={v}" for k, v in
                                         {"master": "local[2]", "spark.ui.enabled": "false", **overrides}.items()])


def train_truth(truth: dict) -> dict:
    """photo_id -> own tag set, for train photos."""
    return {int(truth["photo_id"][i]): set(truth["tag_ids"][truth["offsets"][i]:truth["offsets"][i + 1]].tolist())
            for i in np.flatnonzero(truth["split"] == "train")}


@pytest.fixture(scope="module")
def plain(spark, tmp_path_factory):
    """Epochs 1-2 sampled without features on 1 partition, and again on 4 partitions in a copy."""
    base = tmp_path_factory.mktemp("plain")
    one, four = "file://" + str(base / "one"), "file://" + str(base / "four")
    truth = write_inputs(one)
    shutil.copytree(base / "one", base / "four")
    summary = sample.run(spark, make_config(output_partitions=1), one, epochs=(1, 2))
    assert storage.read_manifest(storage.join(one, "epochs")) == summary
    sample.run(spark, make_config(output_partitions=4), four, epochs=(1, 2))
    return {"one": one, "four": four, "truth": truth, "summary": summary}


def test_an_epoch_is_identical_on_any_partitioning_and_rerun(spark, plain):
    one, four = plain["one"], plain["four"]
    for epoch in (1, 2):
        assert read_epoch(one, epoch).equals(read_epoch(four, epoch))
    folder = storage.filesystem(epochs_data.uri(one, 1))[1]
    assert len(glob.glob(f"{folder}/part-*.parquet")) == 1
    assert len(glob.glob(storage.filesystem(epochs_data.uri(four, 1))[1] + "/part-*.parquet")) == 4
    before = open(glob.glob(f"{folder}/part-*.parquet")[0], "rb").read()
    sample.run(spark, make_config(output_partitions=1), one, epochs=(1, 1))
    files = glob.glob(f"{folder}/part-*.parquet")
    assert len(files) == 1 and open(files[0], "rb").read() == before  # byte for byte
    assert not glob.glob(storage.filesystem(storage.join(one, "epochs"))[1] + "/_staging-*")


def test_epochs_differ_in_draws_and_order(plain):
    first, second = (read_epoch(plain["one"], e) for e in (1, 2))
    assert sorted(first["photo_id"].to_pylist()) == sorted(second["photo_id"].to_pylist())
    assert first["photo_id"].to_pylist() != second["photo_id"].to_pylist()
    by_photo = [t.sort_by("photo_id") for t in (first, second)]
    neg = [np.array(t["neg_ids"].to_pylist()) for t in by_photo]
    assert (neg[0] != neg[1]).mean() > 0.5


def test_draws_respect_own_tags_and_counts_add_up(plain):
    truth, own = plain["truth"], train_truth(plain["truth"])
    table = read_epoch(plain["one"], 1)
    pos_ids, neg_ids = np.array(table["pos_ids"].to_pylist()), np.array(table["neg_ids"].to_pylist())
    assert pos_ids.shape == (table.num_rows, 2) and neg_ids.shape == (table.num_rows, 20)
    # The default sampling (mixed) writes each image's own tags too (own_ids, padded with -1), for the trainer.
    assert table.schema.names == ["photo_id", "pos_ids", "neg_ids", "own_ids"]
    for photo, pos, neg, own_ids in zip(table["photo_id"].to_pylist(), pos_ids, neg_ids, table["own_ids"].to_pylist()):
        assert set(pos) <= own[photo] and not set(neg) & own[photo]
        assert {t for t in own_ids if t >= 0} == own[photo]
    sizes = {p: len(t) for p, t in own.items()}
    manifest = storage.read_manifest(epochs_data.uri(plain["one"], 1))
    assert manifest["rows_in"] == len(own)
    assert manifest["rejects_by_reason"] == {"no_tags": sum(n == 0 for n in sizes.values()),
                                    "every_tag": sum(n == VOCAB_SIZE for n in sizes.values())}
    assert manifest["rejects_by_reason"]["every_tag"] == 1
    assert manifest["rows_out"] == table.num_rows == len(own) - manifest["rows_rejected"]
    assert (manifest["epoch"], manifest["positives"], manifest["negatives"], manifest["seed"]) == (1, 2, 20, 13)
    summary = plain["summary"]
    assert summary["rows_out"] == 2 * table.num_rows and summary["rows_in"] == 2 * len(own)
    assert [e["epoch"] for e in summary["epochs"]] == [1, 2]


def test_check_reports_a_good_fit_and_positives_skewed_to_rare_tags(spark, plain):
    report = sample.check(spark, make_config(), plain["one"], 1)
    json.dumps(report)
    assert report["images"] == read_epoch(plain["one"], 1).num_rows
    assert report["own_tag_negatives"] == 0 and report["foreign_positives"] == 0
    negatives = report["negatives"]
    assert negatives["draws"] == 20 * report["images"]
    assert negatives["tv_distance"] < 1.5 * negatives["tv_noise"]
    assert negatives["p_value"] > 1e-3
    assert report["positives"]["p_value"] > 1e-3
    logs = report["mean_log_images"]
    assert logs["drawn_positives"] < logs["uniform_over_tags"] - 0.1
    assert abs(logs["drawn_positives"] - logs["expected"]) < 0.05
    rarest = report["deciles"][0]
    assert rarest["drawn_positives"] > rarest["uniform_over_tags"]


def test_features_are_joined_converted_and_read_by_petastorm(spark, tmp_path):
    from petastorm import make_batch_reader

    root = "file://" + str(tmp_path / "run")
    truth = write_inputs(root, spark=spark, feature_dim=FEATURE_DIM, seed=1)
    cli.main(["sample", "--root", root, "--epochs", "3-3", "--set", "master=local[2]", "--set", "output_partitions=2"])
    manifest = storage.read_manifest(epochs_data.uri(root, 3))
    own = train_truth(truth)
    index = {int(p): i for i, p in enumerate(truth["photo_id"])}
    usable = [p for p, tags in own.items() if 0 < len(tags) < VOCAB_SIZE]
    assert manifest["rows_in"] == len(own) == manifest["rows_out"] + manifest["rows_rejected"]
    assert manifest["rejects_by_reason"]["no_features"] == sum(not truth["has_feature"][index[p]] for p in usable)
    assert manifest["rows_out"] == sum(truth["has_feature"][index[p]] for p in usable)
    assert manifest["feature_dim"] == FEATURE_DIM

    table = read_epoch(root, 3)
    assert table.schema.names == ["photo_id", "feature", "pos_ids", "neg_ids", "own_ids"]
    features = encoding.decode_ndarray(table["feature"])   # features/'s NdarrayCodec bytes, as they were
    rows = [index[p] for p in table["photo_id"].to_pylist()]
    np.testing.assert_array_equal(features, truth["feature"][rows])

    # Draws do not depend on whether features are joined: the same photo gets the same tags.
    plain_root = "file://" + str(tmp_path / "plain")
    write_inputs(plain_root, seed=1)
    sample.run(spark, make_config(), plain_root, epochs=(3, 3))
    plain = read_epoch(plain_root, 3)
    kept = np.isin(plain["photo_id"].to_numpy(), table["photo_id"].to_numpy())
    assert plain.filter(pa.array(kept)).select(["photo_id", "pos_ids", "neg_ids"]).equals(
        table.select(["photo_id", "pos_ids", "neg_ids"]))

    with make_batch_reader(epochs_data.uri(root, 3), num_epochs=1, shuffle_row_groups=False,
                           reader_pool_type="dummy") as reader:
        batches = list(reader)
    assert sum(len(b.photo_id) for b in batches) == manifest["rows_out"]
    first = batches[0]
    assert first.pos_ids.shape == (len(first.photo_id), 2) and first.pos_ids.dtype == np.int32
    assert first.neg_ids.shape == (len(first.photo_id), 20) and first.neg_ids.dtype == np.int32
    assert np.stack([np.load(io.BytesIO(b)) for b in first.feature]).shape == (len(first.photo_id), FEATURE_DIM)


def test_missing_inputs_are_user_errors(spark, tmp_path, capsys):
    root = "file://" + str(tmp_path / "empty")
    assert cli.main(["sample", "--root", root, "--epochs", "1-1", "--set", "master=local[2]"]) == 2
    assert "run `im2vec vocab` first" in capsys.readouterr().err
    write_inputs(root, images=200)
    os.makedirs(str(tmp_path / "empty" / "features"))
    assert cli.main(["sample", "--root", root, "--epochs", "1-1", "--set", "master=local[2]"]) == 2
    assert "features" in capsys.readouterr().err
    assert cli.main(["sample", "--root", root, "--check", "--epochs", "4-4", "--set", "master=local[2]"]) == 2
    assert "epoch=00004" in capsys.readouterr().err


def test_partition_keys_land_in_their_partitions(spark):
    from pyspark.sql import functions as F

    for count in (1, 3, 8, 200):
        keys = sample.partition_keys(count)
        placed = (spark.createDataFrame([(k,) for k in keys], "key int").repartition(count, "key")
                  .select("key", F.spark_partition_id().alias("partition")).collect())
        assert sorted((r.partition, r.key) for r in placed) == list(enumerate(keys))
