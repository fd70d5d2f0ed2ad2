"""The data guard: every dataset's reader checks its folder against the manifest before it reads.

A small real run (openclipart images through clean, vocab, wordvec, features and sample; then, in
the slow part, train, index and evaluate) is made once; each test damages one data file of one
dataset (cuts it short, hides it, or adds a stray copy), checks that the dataset's reader fails
with one line naming the file and the command that remakes it, and that `im2vec status --verify`
finds it, then puts the file back. A model file cut short after the last epoch is written again
by `im2vec train`, the command the guard names.
"""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline import Im2vecError, cli, datasets, openclipart, storage
from pipeline.datasets import (clean, cross, epochs, features, index, model, rejects, reports, tagged, vocab,
                               wordvec, zero_shot)
from tests.integration.conftest import make_config, needs_openclipart

pytestmark = needs_openclipart
IMAGES = 60
MISSING_IMAGES = 3   # deleted before the features stage, so rejects/features/ has rows


@pytest.fixture(scope="module")
def small_run(spark, tmp_path_factory) -> tuple[str, dict]:
    """A run root with clean/ rejects/ vocab/ zero_shot/ tagged/ wordvec/ features/ and epoch 1, by the real stages."""
    from jobs import clean as clean_job, features as features_job, sample, vocab as vocab_job, wordvec as wordvec_job

    base = tmp_path_factory.mktemp("datasets")
    demo = base / "demo"
    openclipart.write_demo_data(str(demo), limit=IMAGES)
    for image in sorted((demo / "images").iterdir())[:MISSING_IMAGES]:
        image.unlink()
    root = "file://" + str(base / "root")
    config = make_config(image_uri=f"file://{demo}/images/{{photo_id}}.png", min_images=2, min_users=1,
                         zero_shot_fraction=0.2, wordvec_source="learned", wordvec_min_count=1, vector_size=16,
                         wordvec_epochs=1, num_epochs=1, output_partitions=1)
    clean_job.run(spark, config, root, inputs=[str(demo / "metadata.tsv")])
    vocab_job.run(spark, config, root)
    wordvec_job.run(spark, config, root)
    features_job.run(spark, config, root)
    sample.run(spark, config, root, epochs=(1, 1))
    return root, config


def read_table(dataset):
    """A reader that reads the whole folder through pyarrow (for rejects/)."""
    return lambda spark, root: rejects.read(root, dataset)


READERS = {
    "clean": lambda spark, root: clean.read(spark, root).count(),
    "rejects/clean": read_table("clean"),
    "vocab": lambda spark, root: vocab.tags(root),
    "zero_shot": lambda spark, root: zero_shot.held_out_tags(root),
    "tagged": lambda spark, root: tagged.read_split(root, "train"),
    "wordvec": lambda spark, root: wordvec.read_tag_vectors(root, len(vocab.tags(root))),
    "features": lambda spark, root: features.read_rows(root),
    "rejects/features": read_table("features"),
    "epochs/epoch=00001": lambda spark, root: epochs.read(spark, root, 1).count(),
    "model": lambda spark, root: model.read_projection_bytes(root),
    "index": lambda spark, root: index.read(root),
    "reports": lambda spark, root: reports.read_evaluation(root),
    "reports/cross-root": lambda spark, root: cross.read_evaluation(root, root),   # the run against itself
}
FAST = ["clean", "rejects/clean", "vocab", "zero_shot", "tagged", "wordvec", "features", "rejects/features",
        "epochs/epoch=00001"]
SLOW = ["model", "index", "reports", "reports/cross-root"]


def dataset_named(root: str, name: str):
    return next(d for d in datasets.every(root) if d.name == name)


def largest_file(root: str, dataset) -> Path:
    """The dataset's largest listed data file, as a local path."""
    listed = dataset.listed(dataset.manifest(root))
    name = max(listed, key=lambda n: (listed[n], n))
    return Path(storage.filesystem(dataset.uri(root))[1]) / name


def damage(path: Path, fault: str):
    """Damage one data file; returns a function that undoes it."""
    data = path.read_bytes()
    if fault == "truncated":
        path.write_bytes(data[:len(data) // 2])
        return lambda: path.write_bytes(data)
    if fault == "missing":
        hidden = path.with_name("." + path.name + ".away")   # a hidden name is no data file
        path.rename(hidden)
        return lambda: hidden.rename(path)
    extra = path.with_name("part-09999" + path.suffix)
    shutil.copyfile(path, extra)
    return extra.unlink


def check_fault(spark, root: str, name: str, fault: str, capsys) -> None:
    dataset = dataset_named(root, name)
    path = largest_file(root, dataset)
    assert dataset.problems(root) == []
    READERS[name](spark, root)   # reads while the folder is whole
    undo = damage(path, fault)
    try:
        with pytest.raises(Im2vecError) as caught:
            READERS[name](spark, root)
        message = str(caught.value)
        named = str(path) if fault != "extra" else str(path.with_name("part-09999" + path.suffix))
        assert "\n" not in message and named in message and f"run `{dataset.remake}`" in message, message
        assert {"truncated": "the file is truncated", "missing": "is missing", "extra": "is not in the manifest"}[
            fault] in message
        capsys.readouterr()
        assert cli.main(["status", "--root", root, "--verify"]) == 1
        out = capsys.readouterr().out
        assert f"verify: {message}" in out
    finally:
        undo()
    assert cli.main(["status", "--root", root, "--verify"]) == 0
    assert "every data file is there" in capsys.readouterr().out


@pytest.mark.parametrize("fault", ["truncated", "missing", "extra"])
@pytest.mark.parametrize("name", FAST)
def test_a_damaged_file_is_one_line_from_the_reader_and_status_verify(small_run, spark, name, fault, capsys):
    check_fault(spark, small_run[0], name, fault, capsys)


def test_a_truncated_clean_file_stops_vocab_with_one_line(small_run, capsys):
    root, _ = small_run
    path = largest_file(root, clean.DATASET)
    undo = damage(path, "truncated")
    try:
        assert cli.main(["vocab", "--root", root, "--set", "master=local[2]", "--set", "spark.ui.enabled=false"]) == 2
    finally:
        undo()
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"im2vec vocab: error: file://{path} is {path.stat().st_size // 2:,} bytes, the manifest says "
                   f"{path.stat().st_size:,}: the file is truncated; run `im2vec clean` again"]


def test_features_lists_petastorms_common_metadata(small_run, spark):
    """Petastorm cannot read features/ without _common_metadata, so the manifest lists it like a part file."""
    root, _ = small_run
    listed = features.DATASET.listed(features.DATASET.manifest(root))
    assert "_common_metadata" in listed and not any(name.startswith((".", "_SUCCESS")) for name in listed)
    metadata = Path(storage.filesystem(features.DATASET.uri(root))[1]) / "_common_metadata"
    undo = damage(metadata, "truncated")
    try:
        with pytest.raises(Im2vecError, match="_common_metadata is .* the file is truncated; run `im2vec features`"):
            features.read(spark, root)
    finally:
        undo()


def test_a_manifest_without_a_file_list_is_reported_unchecked(small_run, capsys):
    root, _ = small_run
    uri = storage.join(wordvec.DATASET.uri(root), storage.MANIFEST)
    written = storage.read_text(uri)
    storage.write_text(uri, json.dumps({k: v for k, v in json.loads(written).items() if k != "data_files"}))
    try:
        assert cli.main(["status", "--root", root, "--verify"]) == 0
        assert "not checked (their manifest lists no files; written by an older im2vec): wordvec" in \
            capsys.readouterr().out
        assert wordvec.read_tag_vectors(root, len(vocab.tags(root))).shape[0] == len(vocab.tags(root))
    finally:
        storage.write_text(uri, written)


def trained_config(config: dict) -> dict:
    """The small run's configuration for train, index and evaluate."""
    return {**config, "hidden_sizes": [], "batch_size": 16, "validation_images": 20, "evaluation_images": 20}


@pytest.fixture(scope="module")
def trained_small_run(small_run, spark) -> str:
    """The small run trained one epoch, indexed, evaluated, and evaluated against itself: model/, index/,
    reports/ and reports/cross-root/."""
    from jobs import index as index_job
    from model import cross as cross_evaluation, evaluate, train

    root, config = small_run
    config = trained_config(config)
    train.run(config, root)
    index_job.run(spark, config, root)
    evaluate.run(config, root)
    cross_evaluation.run(config, root, root)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["truncated", "missing", "extra"])
@pytest.mark.parametrize("name", SLOW)
def test_a_damaged_model_index_or_report_file(trained_small_run, spark, name, fault, capsys):
    check_fault(spark, trained_small_run, name, fault, capsys)


@pytest.mark.slow
def test_the_models_checkpoints_are_not_part_of_the_dataset(trained_small_run):
    root = trained_small_run
    folder = Path(storage.filesystem(model.DATASET.uri(root))[1])
    assert set(model.DATASET.listed(model.DATASET.manifest(root))) == {
        model.PROJECTION, model.TAG_VECTORS, model.TAG_BIAS, model.PROGRESS}
    (folder / "checkpoints" / "stray").write_bytes(b"x")
    try:
        assert model.DATASET.problems(root) == []
    finally:
        os.remove(folder / "checkpoints" / "stray")


@pytest.mark.slow
@pytest.mark.parametrize("name", [model.PROJECTION, model.TAG_VECTORS, model.TAG_BIAS, model.PROGRESS])
def test_train_writes_a_model_file_cut_short_again_when_every_epoch_is_trained(small_run, trained_small_run, name):
    """The guard says to run `im2vec train` again; with no epoch left to train, train writes that file
    again (the best epoch's weights from its checkpoint, the bias, the history) and leaves the rest."""
    from model import train

    root = trained_small_run
    folder = Path(storage.filesystem(model.DATASET.uri(root))[1])
    finished = model.DATASET.manifest(root)
    before = {n: (folder / n).read_bytes() for n in model.DATASET.listed(finished)}
    damage(folder / name, "truncated")
    with pytest.raises(Im2vecError, match=f"{name} is .* the file is truncated; run `im2vec train` again$"):
        model.DATASET.require(root)
    train.run(trained_config(small_run[1]), root)
    assert model.DATASET.problems(root) == []
    after = model.DATASET.manifest(root)
    assert [after[k] for k in ("epoch", "best_epoch", "history")] == [finished[k] for k in ("epoch", "best_epoch",
                                                                                            "history")]
    assert {n: (folder / n).read_bytes() for n in before if n != name} == {n: b for n, b in before.items() if n != name}
    written = (folder / name).read_bytes()
    if name == model.PROJECTION:   # the same weights; the .keras file records when it was saved
        old, new = model.load_projection(before[name]), model.load_projection(written)
        features_ = np.random.default_rng(0).normal(size=(8, old.input_shape[-1])).astype(np.float32)
        np.testing.assert_array_equal(model.embed(new, features_), model.embed(old, features_))
    elif name == model.PROGRESS:   # the same record; the time it was written aside
        assert {**json.loads(written), "updated": None} == {**json.loads(before[name]), "updated": None}
    else:
        assert written == before[name]


@pytest.mark.slow
def test_train_says_in_one_line_when_the_best_epochs_weights_are_not_kept(small_run, trained_small_run, tmp_path):
    """A model trained before the trainer kept its best epoch's weights apart: a tag_vectors.npy cut short
    cannot be written again, and train says what to do before it changes anything."""
    from model import train

    root = trained_small_run
    folder = Path(storage.filesystem(model.DATASET.uri(root))[1])
    best = folder / "checkpoints" / "best"
    manifest = (folder / storage.MANIFEST).read_bytes()
    shutil.move(best, tmp_path / "best")
    undo = damage(folder / model.TAG_VECTORS, "truncated")
    try:
        with pytest.raises(Im2vecError) as caught:
            train.run(trained_config(small_run[1]), root)
        assert str(caught.value) == (
            f"{model.DATASET.uri(root)}/{model.TAG_VECTORS} is missing or not the size its manifest says, and im2vec "
            f"cannot write it again: epoch 1's weights are not under {best} (trained before im2vec kept them); "
            f"delete {folder / 'checkpoints'} and run `im2vec train` to train from the start")
        assert (folder / storage.MANIFEST).read_bytes() == manifest
    finally:
        undo()
        shutil.move(tmp_path / "best", best)
    assert model.DATASET.problems(root) == []
