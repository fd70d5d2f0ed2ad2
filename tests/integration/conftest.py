"""Shared fixtures: one small real run of the pipeline on openclipart, made once per test session.

1,500 openclipart images go through clean, vocab (10% of the tags held out for zero-shot),
wordvec, features and sample on local Spark (about 3 minutes), then training as `im2vec train`
runs it and the index stage (about 2 more). The trainer's, search's and evaluation's tests all
read that one run; a test that writes copies it first.

The split seed is chosen, not the default: with seed 13, one user's icon theme (tagged with the
corpus's most frequent tags) is 80% of the validation images, which the popularity baseline then
guesses right; with seed 24, validation holds ~200 images of ~75 users, none over 15%.
"""
import json
import shutil
from pathlib import Path

import pytest

from pipeline import config as configuration, openclipart

IMAGES = 1500
EPOCHS = 6
SETTINGS = {"master": "local[2]", "spark.ui.enabled": "false", "seed": 24, "validation_fraction": 0.25,
            "test_fraction": 0.2, "zero_shot_fraction": 0.1, "wordvec_workers": 1, "row_group_mb": 1,
            "output_partitions": 2, "batch_size": 64, "checkpoint_steps": 1000, "train_poll_seconds": 0.2,
            "patience": 0}
needs_openclipart = pytest.mark.skipif(not Path(openclipart.CORPUS_ROOT, "png").is_dir(),
                                       reason="apt-get install openclipart-svg openclipart-png")


def make_config(**overrides) -> dict:
    """The shared run's configuration, with ``overrides`` (config keys) on top."""
    return configuration.load(overrides=[f"{k}={v}" for k, v in {**SETTINGS, **overrides}.items()])


@pytest.fixture(scope="session")
def prepared(spark, tmp_path_factory) -> Path:
    """A run root (a folder) with clean/ vocab/ tagged/ wordvec/ features/ and epochs 1..EPOCHS, by the real stages."""
    from jobs import clean, features, sample, vocab, wordvec

    base = tmp_path_factory.mktemp("openclipart")
    demo = base / "demo"
    openclipart.write_demo_data(str(demo), limit=IMAGES)
    root = "file://" + str(base / "root")
    config = make_config(image_uri=f"file://{demo}/images/{{photo_id}}.png")
    clean.run(spark, config, root, inputs=[str(demo / "metadata.tsv")])
    vocab.run(spark, config, root)
    wordvec.run(spark, config, root)
    features.run(spark, config, root)
    sample.run(spark, config, root, epochs=(1, EPOCHS))
    return base / "root"


@pytest.fixture(scope="session")
def trained(spark, prepared, tmp_path_factory) -> dict:
    """The prepared run trained 4 epochs with the default settings (joint), then on to EPOCHS (resumed),
    then indexed: {"root", "first" and "second": the two train manifests, "after_first": progress.json
    after the first}. Tests read it and never write it."""
    from jobs import index
    from model import train
    from pipeline import storage

    root = "file://" + str(tmp_path_factory.mktemp("trained") / "root")
    shutil.copytree(prepared, root[len("file://"):])
    first = train.run(make_config(num_epochs=4), root)
    after_first = json.loads(storage.read_text(storage.join(root, "model", "progress.json")))
    second = train.run(make_config(num_epochs=EPOCHS), root)
    index.run(spark, make_config(), root)
    return {"root": root, "first": first, "after_first": after_first, "second": second}
