"""Every sampling method end to end on a tiny root: the real sample stage on local Spark writes its epochs
(positives-only ones too), the real trainer trains an epoch on them, and what does not fit is one clear error.

The root is test_sample's synthetic one (Zipf-like tags, 70/15/15 split by photo, features D = 8) plus
random word vectors: small enough that an epoch of the trainer takes seconds.
"""
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from jobs import sample
from model import data, train
from pipeline import Im2vecError, cli, reader, sampling, storage
from pipeline.datasets import encoding, epochs as epochs_data
from tests.integration.test_sample import FEATURE_DIM, VOCAB_SIZE, make_config, read_epoch, train_truth, write_inputs

pytestmark = pytest.mark.slow   # about 2 minutes: two sample runs and eight one-epoch trainings

IMAGES = 1500
TRAIN = {"num_epochs": 1, "batch_size": 64, "hidden_sizes": "[]", "patience": 0, "train_poll_seconds": 0.2,
         "consumer": "", "output_partitions": 2}


def write_word_vectors(root: str, size: int, dim: int = 8) -> None:
    """ROOT/wordvec/vectors/ as the wordvec stage writes it (tag_id, tag, vector, source), random vectors."""
    vectors = np.random.default_rng(9).normal(0, 0.3, (size, dim)).astype(np.float32)
    table = pa.table({"tag_id": pa.array(np.arange(size, dtype=np.int32)), "tag": [f"tag{t}" for t in range(size)],
                      "vector": pa.array(list(vectors), pa.list_(pa.float32())), "source": ["random"] * size})
    fs, path = storage.filesystem(root)
    fs.create_dir(f"{path}/wordvec/vectors", recursive=True)
    pq.write_table(table, f"{path}/wordvec/vectors/part-00000.parquet")
    storage.write_manifest(storage.join(root, "wordvec"), "wordvec", rows_in=size, rows_out=size, rows_rejected=0,
                           parameters={}, inputs=[], started=time.time())


def config(**overrides) -> dict:
    return make_config(**{**TRAIN, **overrides})


@pytest.fixture(scope="module")
def tiny(spark, tmp_path_factory):
    """A root with vocab/, tagged/, features/, wordvec/ and three samplings of epoch 1: ``mixed`` (K negatives
    and own_ids, what every method reads) in ``mixed``, ``next_image`` with negatives 0 in ``positives_only``,
    and Option II alone in ``presampled``."""
    base = tmp_path_factory.mktemp("methods")
    inputs = "file://" + str(base / "inputs")
    truth = write_inputs(inputs, images=IMAGES, spark=spark, feature_dim=FEATURE_DIM, seed=3)
    write_word_vectors(inputs, VOCAB_SIZE)
    roots = {}
    for name, overrides in (("mixed", {"sampling": "mixed"}), ("positives_only", {"sampling": "next_image",
                                                                                   "negatives": 0}),
                            ("presampled", {"sampling": "presampled"})):
        shutil.copytree(base / "inputs", base / name)
        roots[name] = "file://" + str(base / name)
        sample.run(spark, config(**overrides), roots[name], epochs=(1, 1))
    return {"base": base, "truth": truth, **roots}


def copy_root(tiny, name: str, tmp_path) -> str:
    shutil.copytree(tiny["base"] / name, tmp_path / name)
    return "file://" + str(tmp_path / name)


def test_a_positives_only_epoch_holds_positives_and_own_tags(tiny):
    manifest = storage.read_manifest(epochs_data.uri(tiny["positives_only"], 1))
    own = train_truth(tiny["truth"])
    assert (manifest["schema_version"], manifest["sampling"], manifest["positives"], manifest["negatives"]) == \
        (epochs_data.SCHEMA_VERSION, "next_image", 2, 0)
    assert manifest["own_tags"] == max(len(t) for t in own.values() if len(t) < VOCAB_SIZE)
    table = read_epoch(tiny["positives_only"], 1)
    assert table.schema.names == ["photo_id", "feature", "pos_ids", "neg_ids", "own_ids"]
    assert set(pc.list_value_length(table["neg_ids"]).to_pylist()) == {0}
    for photo, own_ids in zip(table["photo_id"].to_pylist(), table["own_ids"].to_pylist()):
        assert [t for t in own_ids if t >= 0] == sorted(own[photo]) and len(own_ids) == manifest["own_tags"]
    # Petastorm and im2vec's reader for any trainer read own_ids too, and the empty negatives
    from petastorm import make_reader
    from petastorm.etl.dataset_metadata import get_schema_from_dataset_url

    url = reader.epoch_url(tiny["positives_only"], 1)
    schema = get_schema_from_dataset_url(url)
    assert list(schema.fields) == ["photo_id", "feature", "pos_ids", "neg_ids", "own_ids"]
    assert schema.own_ids.shape == (manifest["own_tags"],) and schema.neg_ids.shape == (0,)
    with make_reader(url, num_epochs=1, reader_pool_type="dummy") as rows:
        first = next(rows)
    assert first.own_ids.shape == (manifest["own_tags"],) and first.neg_ids.shape == (0,)
    assert [t for t in first.own_ids if t >= 0] == sorted(own[int(first.photo_id)])
    batches = list(reader.batches(tiny["positives_only"], 1, batch_size=100, own_ids=True))
    assert sum(len(b[0]) for b in batches) == manifest["rows_out"]
    assert batches[0][2].shape == (100, 0) and batches[0][3].shape == (100, manifest["own_tags"])
    np.testing.assert_array_equal(np.concatenate([b[3] for b in batches]),
                                  np.array(table["own_ids"].to_pylist(), np.int32))
    with pytest.raises(Im2vecError, match="holds no own_ids: it was sampled for sampling presampled"):
        next(reader.batches(tiny["presampled"], 1, own_ids=True))
    # The same epoch as every other method's: the same images in the same order with the same positives.
    mixed, presampled = read_epoch(tiny["mixed"], 1), read_epoch(tiny["presampled"], 1)
    assert mixed.select(["photo_id", "pos_ids", "own_ids"]).equals(table.select(["photo_id", "pos_ids", "own_ids"]))
    drawn_by_both = ["photo_id", "pos_ids", "neg_ids"]
    assert mixed.select(drawn_by_both).equals(presampled.select(drawn_by_both))
    assert set(pc.list_value_length(mixed["neg_ids"]).to_pylist()) == {20}
    assert presampled.schema.names == ["photo_id", "feature", "pos_ids", "neg_ids"]


def test_option_i_on_a_real_epoch_never_hands_an_image_one_of_its_own_tags(tiny):
    manifest = storage.read_manifest(epochs_data.uri(tiny["positives_only"], 1))
    own = train_truth(tiny["truth"])
    # The trainer's batches carry no photo_id: a row's (random, distinct) feature says which photo it is.
    table = read_epoch(tiny["positives_only"], 1)
    decoded = encoding.decode_ndarray(table["feature"])
    photo_of_row = {decoded[i].tobytes(): p for i, p in enumerate(table["photo_id"].to_pylist())}
    assert len(photo_of_row) == table.num_rows
    dataset = data.epoch_dataset(epochs_data.uri(tiny["positives_only"], 1), feature_dim=FEATURE_DIM, positives=2,
                                 negatives=0, own_tags=manifest["own_tags"], batch_size=64, seed=5)
    handed, rows = 0, 0
    for batch in dataset:
        photos = [photo_of_row[f.tobytes()] for f in batch["feature"].numpy()]
        drawn = sampling.next_image_tags(batch, VOCAB_SIZE)
        candidates, valid = drawn.row_ids.numpy(), drawn.valid.numpy()
        for i, photo in enumerate(photos):
            negatives = set(candidates[i][valid[i]].tolist())
            assert not negatives & own[photo]
            assert negatives == own[photos[(i + 1) % len(photos)]] - own[photo]
            handed += len(negatives)
        rows += len(photos)
    assert rows == manifest["rows_out"] and handed > rows   # about 2 negatives a row


def test_a_positives_only_epoch_trains(tiny, tmp_path):
    root = copy_root(tiny, "positives_only", tmp_path)
    for name in ("next_image", "in_batch", "full_softmax"):
        shutil.rmtree(tmp_path / "positives_only" / "model", ignore_errors=True)
        manifest = train.run(config(sampling=name), root)
        history = json.loads(storage.read_text(storage.join(root, "model", "progress.json")))["history"]
        assert manifest["epoch"] == 1 and manifest["rows_in"] == \
            storage.read_manifest(epochs_data.uri(root, 1))["rows_out"]
        assert np.isfinite(history[0]["train_loss"]) and history[0]["train_loss"] > 0
        assert np.isfinite(history[0]["val_loss"]) and manifest["parameters"]["sampling"] == name
    # Option II cannot, nor the default (mixed): they read the epoch's negatives, and there are none
    for name in ("presampled", "mixed"):
        shutil.rmtree(tmp_path / "positives_only" / "model", ignore_errors=True)
        with pytest.raises(Im2vecError, match=r"was sampled for sampling next_image and holds no negatives, which "
                                              rf"sampling {name} needs"):
            train.run(config(sampling=name), root)


def test_every_method_trains_one_epoch_on_the_same_epoch(tiny, tmp_path):
    """Each entry of METHODS trains on the mixed epoch, which holds what every method reads; tag_bias.npy is the
    method's own ranking rule."""
    root = copy_root(tiny, "mixed", tmp_path)
    vocab = data.read_vocab(root)
    shares = data.train_tag_shares(root, vocab)
    losses = {}
    for name in sorted(sampling.METHODS):
        for logq in ([False, True] if name in ("in_batch", "mixed") else [False]):
            shutil.rmtree(tmp_path / "mixed" / "model", ignore_errors=True)
            settings = config(sampling=name, logq_correction=str(logq).lower())
            manifest = train.run(settings, root)
            history = json.loads(storage.read_text(storage.join(root, "model", "progress.json")))["history"]
            assert manifest["epoch"] == 1 and np.isfinite(history[0]["train_loss"]), name
            assert np.isfinite(manifest["val_loss"]) and 0 <= manifest["val_f1"] <= 1, name
            bias = np.load(Path(storage.filesystem(root)[1]) / "model" / "tag_bias.npy")
            want, _ = train.sampling_terms(train.parameters(settings), vocab.column("pos_weight").to_numpy(), shares,
                                           TRAIN["batch_size"])
            np.testing.assert_array_equal(bias, want)
            losses[name, logq] = history[0]["train_loss"]
    # the methods train on different candidates: their losses differ
    assert len({round(v, 6) for v in losses.values()}) == len(losses)


def test_what_does_not_fit_is_one_clear_error(spark, tiny, tmp_path, capsys):
    root = copy_root(tiny, "mixed", tmp_path)
    common = ["--root", root, "--set", "master=local[2]"]
    assert cli.main(["sample", *common, "--epochs", "2-2", "--set", "sampling=option_iii"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "sampling: unknown method 'option_iii'; known methods: full_softmax, in_batch, mixed, next_image, presampled")
    assert cli.main(["train", *common, "--set", "sampling=option_iii"]) == 2
    assert "unknown method 'option_iii'" in capsys.readouterr().err
    too_big = ["--set", "sampling=full_softmax", "--set", f"full_softmax_max_tags={VOCAB_SIZE - 1}"]
    for command in (["sample", *common, "--epochs", "2-2", *too_big], ["train", *common, *too_big]):
        assert cli.main(command) == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert f"it has {VOCAB_SIZE} tags, more than full_softmax_max_tags ({VOCAB_SIZE - 1})" in error, error
    assert not storage.exists(epochs_data.uri(root, 2))
