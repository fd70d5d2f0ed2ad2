"""im2vec schedule: epochs kept ahead of the consumers, old ones deleted, a kill -9 survived."""
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path


from jobs import sample, schedule
from pipeline import status, storage
from pipeline.datasets import consumers, epochs
from tests.integration.test_sample import make_config, read_epoch, write_inputs
from pipeline.datasets import epochs as epochs_data

IM2VEC = str(Path(sys.executable).with_name("im2vec"))


def set_progress(root: str, epoch: int) -> None:
    consumers.report(root, "trainer", epoch, step=100 * epoch)


def complete_epochs(root: str) -> list[int]:
    return sorted(e for e, uri in epochs.folders(root).items() if storage.read_manifest(uri) is not None)


def test_once_keeps_ahead_deletes_behind_and_remakes_partial_epochs(spark, root):
    write_inputs(root, images=1500)
    config = make_config(num_epochs=4, ahead=2, keep=1, output_partitions=2)
    # Debris of a killed run: a staging folder and an epoch folder without a manifest.
    epochs_dir = Path(storage.filesystem(storage.join(root, "epochs"))[1])
    (epochs_dir / "_staging-epoch=00002-deadbeef0000").mkdir(parents=True)
    (epochs_dir / "epoch=00002").mkdir()
    (epochs_dir / "epoch=00002" / "part-00000-junk.parquet").write_bytes(b"partial")

    made = schedule.run(config, root, once=True)  # no consumer has reported yet: all at epoch 0
    assert [m["epoch"] for m in made] == [1, 2]
    assert complete_epochs(root) == [1, 2] and sorted(epochs.folders(root)) == [1, 2]
    assert not list(epochs_dir.glob("_staging-*")) and not list(epochs_dir.glob("epoch=00002/*junk*"))

    assert schedule.run(config, root, once=True) == []  # up to date: nothing to do
    set_progress(root, 2)
    made = schedule.run(config, root, once=True)
    assert [m["epoch"] for m in made] == [3, 4]
    assert sorted(epochs.folders(root)) == [2, 3, 4]  # epoch 1 <= 2 - keep is gone
    set_progress(root, 4)
    assert schedule.run(make_config(num_epochs=4, ahead=2, keep=0), root) == []  # not --once: exits, all made
    assert epochs.folders(root) == {}


def test_two_consumers_at_different_speeds_and_one_going_stale(spark, root):
    write_inputs(root, images=1500)
    config = make_config(num_epochs=6, ahead=2, keep=0, output_partitions=2, consumer_stale_seconds=600)
    consumers.report(root, "fast", 0)
    consumers.report(root, "slow", 0)
    assert [m["epoch"] for m in schedule.run(config, root, once=True)] == [1, 2]
    consumers.report(root, "fast", 2)
    # Sampled ahead of the faster; kept for the slower, which has finished nothing.
    assert [m["epoch"] for m in schedule.run(config, root, once=True)] == [3, 4]
    assert complete_epochs(root) == [1, 2, 3, 4]
    consumers.report(root, "slow", 1)
    assert schedule.run(config, root, once=True) == [] and complete_epochs(root) == [2, 3, 4]
    # slow falls silent: stale after 600 s, it no longer holds epochs 2-4 back.
    consumers.report(root, "slow", 1, now=datetime.now(timezone.utc) - timedelta(seconds=601))
    consumers.report(root, "fast", 4)
    assert [m["epoch"] for m in schedule.run(config, root, once=True)] == [5, 6]
    assert sorted(epochs.folders(root)) == [5, 6]
    text = status.status_text(root, stale_seconds=600)
    assert "consumer fast: finished epoch 4" in text and "consumer slow: finished epoch 1" in text
    assert [line for line in text.splitlines() if "STALE" in line] == [next(line for line in text.splitlines()
                                                                           if line.startswith("consumer slow"))]


def test_with_submit_each_batch_is_a_spark_application_of_its_own(root, monkeypatch):
    write_inputs(root, images=800)
    monkeypatch.setenv("IM2VEC_LOCAL_MASTER", "local[2]")
    monkeypatch.setenv("SPARK_DRIVER_MEMORY", "1g")
    consumers.report(root, "trainer", 0)
    settings = ["--set", "output_partitions=2", "--set", "spark.ui.enabled=false"]
    made = schedule.run(make_config(num_epochs=3, ahead=2, keep=0), root, once=True, submit="local", stage_args=settings)
    assert [m["epoch"] for m in made] == [1, 2] and complete_epochs(root) == [1, 2]
    # One `im2vec sample --epochs 1-2` application made both (its summary manifest lists them).
    assert [e["epoch"] for e in storage.read_manifest(storage.join(root, "epochs"))["epochs"]] == [1, 2]
    consumers.report(root, "trainer", 2)
    made = schedule.run(make_config(num_epochs=3, ahead=2, keep=0), root, once=True, submit="local", stage_args=settings)
    assert [m["epoch"] for m in made] == [3] and sorted(epochs.folders(root)) == [3]


def test_a_killed_schedule_restarts_and_ends_with_exactly_the_right_epochs(spark, tmp_path):
    root = "file://" + str(tmp_path / "run")
    write_inputs(root, images=10000)
    command = [IM2VEC, "schedule", "--root", root, *sum((["--set", s] for s in (
        "master=local[2]", "num_epochs=3", "ahead=3", "output_partitions=2", "spark.ui.enabled=false",
        "schedule_poll_seconds=0.2")), [])]
    epochs_dir = tmp_path / "run" / "epochs"
    with open(tmp_path / "first.log", "w") as out:
        first = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 240
        while not list(epochs_dir.glob("_staging-epoch=00002-*")):
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.time() < deadline, "the schedule never started epoch 2"
            time.sleep(0.05)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the driver and its JVM: the group this test started
        first.wait()
    assert complete_epochs(root) == [1]
    assert list(epochs_dir.glob("_staging-*"))

    restarted = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert restarted.returncode == 0, restarted.stdout[-3000:] + restarted.stderr[-3000:]
    assert "left by an earlier run" in restarted.stdout
    assert "made epoch 1" not in restarted.stdout and "made epoch 3" in restarted.stdout
    assert complete_epochs(root) == [1, 2, 3] and sorted(epochs.folders(root)) == [1, 2, 3]
    assert not list(epochs_dir.glob("_staging-*"))

    # The epoch the kill interrupted is the one an undisturbed run makes.
    fresh = str(tmp_path / "fresh")
    for name in ("vocab", "tagged"):
        shutil.copytree(tmp_path / "run" / name, Path(fresh) / name)
    sample.run(spark, make_config(output_partitions=3), "file://" + fresh, epochs=(2, 2))
    assert read_epoch(root, 2).equals(read_epoch("file://" + fresh, 2))
    assert storage.read_manifest(epochs_data.uri(root, 2))["rows_out"] == read_epoch(root, 2).num_rows
