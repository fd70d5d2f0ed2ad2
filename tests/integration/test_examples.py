"""The trainers in examples/ run beside `im2vec schedule` on the shared openclipart run: the scheduler samples
ahead of each and deletes what it has finished, and each beats the popularity baseline on the test split.

numpy_tagger.py reads through the project's reader (pipeline.reader); keras_fit.py through Petastorm's own
make_batch_reader + make_petastorm_dataset. Both run as a user runs them: `python examples/X.py`.
"""
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model import baselines, data, metrics
from pipeline import storage
from pipeline.datasets import consumers, epochs, features, tagged
from tests.integration.conftest import SETTINGS, needs_openclipart

REPO = Path(__file__).resolve().parents[2]
IM2VEC = str(Path(sys.executable).with_name("im2vec"))
EPOCHS = 5
pytestmark = [pytest.mark.slow, needs_openclipart]


def score_test_split(root: str, scores) -> dict:
    """Per-tag P/R/F1 at 5 on the test split's images with features: ``scores(float32[N, D]) -> float[N, V]``
    against the popularity baseline (the most frequent train tags for every image)."""
    vocab_size = data.read_vocab(root).num_rows
    test = tagged.read_split(root, "test").combine_chunks()
    photo_ids, feature = features.read_rows(root, test.column("photo_id").to_numpy())
    lists = test.column("tag_ids").to_pylist()
    own = dict(zip(test.column("photo_id").to_pylist(), lists))
    true = [own[int(p)] or [] for p in photo_ids]
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in true])]).astype(np.int64)
    tag_ids = np.array([t for tags in true for t in tags], np.int32)
    popular = baselines.popularity_top_k(data.train_tag_counts(root, vocab_size), len(photo_ids))
    return {"model": metrics.per_tag_metrics(metrics.top_k_of_scores(scores(feature), metrics.TOP_K), offsets, tag_ids,
                                             vocab_size),
            "popularity": metrics.per_tag_metrics(popular, offsets, tag_ids, vocab_size)}


def numpy_scores(out: Path):
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import numpy_tagger
    finally:
        sys.path.pop(0)
    model = np.load(out)
    return lambda feature: numpy_tagger.scores(model["weights"], model["bias"], feature)


def keras_scores(out: Path):
    import keras

    model = keras.models.load_model(out)
    return lambda feature: np.asarray(model.predict(feature, verbose=0))


@pytest.mark.parametrize("example, out, scores", [("numpy_tagger.py", "tagger.npz", numpy_scores),
                                                  ("keras_fit.py", "tagger.keras", keras_scores)])
def test_an_example_trains_beside_the_scheduler_and_beats_popularity(prepared, tmp_path, example, out, scores):
    # The shared run without its epochs: the scheduler makes them as the example needs them.
    shutil.copytree(prepared, tmp_path / "root", ignore=shutil.ignore_patterns("epochs", "model", "reports", "index",
                                                                                "consumers"))
    root = "file://" + str(tmp_path / "root")
    settings = {**SETTINGS, "num_epochs": EPOCHS, "ahead": 1, "keep": 0, "schedule_poll_seconds": 0.2}
    with open(tmp_path / "schedule.log", "w") as log:
        scheduler = subprocess.Popen([IM2VEC, "schedule", "--root", root,
                                      *(a for k, v in settings.items() for a in ("--set", f"{k}={v}"))],
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        name = example.split(".")[0]
        trained = subprocess.run([sys.executable, str(REPO / "examples" / example), "--root", root, "--epochs",
                                  str(EPOCHS), "--consumer", name, "--poll-seconds", "0.2", "--out",
                                  str(tmp_path / out)], capture_output=True, text=True, timeout=900)
        assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
        assert scheduler.wait(timeout=300) == 0
    finally:
        if scheduler.poll() is None:
            os.killpg(scheduler.pid, signal.SIGKILL)   # the driver and its JVM: the group this test started
            scheduler.wait()
    schedule_log = (tmp_path / "schedule.log").read_text()
    # Sampled ahead of the example, one epoch at a time as it went; deleted behind it.
    assert all(f"made epoch {e}:" in schedule_log for e in range(1, EPOCHS + 1)), schedule_log[-3000:]
    assert all(f"deleted epoch {e} " in schedule_log for e in range(1, EPOCHS - 1)), schedule_log[-3000:]
    assert sorted(epochs.folders(root)) == [EPOCHS]
    assert [(c.name, c.epoch) for c in consumers.read_all(root)] == [(name, EPOCHS)]
    assert storage.exists(str(tmp_path / out))

    figures = score_test_split(root, scores(tmp_path / out))
    print(example, figures)
    assert figures["model"]["f1"] > 3 * figures["popularity"]["f1"]
    assert figures["model"]["n_plus"] > figures["popularity"]["n_plus"]
