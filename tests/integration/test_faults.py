"""Faults on a real standalone cluster (master + 2 one-core workers on 127.0.0.1).

* A worker dies (kill -9 of its process group: its JVM, its executor, their Python workers)
  in the middle of the clean stage: Spark re-runs the lost tasks on the other worker, the
  clean stage keeps only the part files of committed task attempts, and the output is the
  same as a run without faults.
* A driver killed mid-stage leaves no manifest, so `im2vec status` does not call the stage
  complete; a re-run replaces what it left, and re-running again gives the same bytes.
"""
import re
import shutil
import time
from pathlib import Path

import pytest

from jobs import clean, vocab
from pipeline import config as configuration, status, storage, synth
from tests import cluster as standalone

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]
# Small input splits: the clean stage becomes ~40 short tasks, so a kill lands mid-stage.
SPLIT_BYTES = 256 * 1024
SMALL_SPLITS = ["--set", f"spark.sql.files.maxPartitionBytes={SPLIT_BYTES}"]


@pytest.fixture(scope="module")
def metadata(tmp_path_factory):
    path = tmp_path_factory.mktemp("yfcc") / "yfcc.tsv"
    synth.write(str(path), rows=20_000, layout=25, seed=11)
    return str(path)


@pytest.fixture(scope="module")
def reference(spark, metadata, tmp_path_factory):
    """A fault-free local run of clean and vocab: the run root URI."""
    root = "file://" + str(tmp_path_factory.mktemp("reference") / "run")
    config = configuration.load()
    clean.run(spark, config, root, [metadata])
    vocab.run(spark, config, root)
    return root


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with standalone.standalone_cluster(tmp_path_factory.mktemp("spark"), workers=2, cores=1) as running:
        yield running


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout:.0f}s")
        time.sleep(0.1)


def finished_parts(root: str) -> int:
    """Files the clean stage's task attempts wrote so far (a small task's appears as it ends; the
    driver renames them part-* only once every task is done)."""
    return len(list(Path(root.removeprefix("file://")).glob("_staging-clean-*/clean/_attempt-*.parquet")))


def status_state(root: str, stage: str) -> str:
    line = next(x for x in status.status_text(root).splitlines() if x.startswith(stage + " "))
    return line.split()[1]


def assert_clean_matches(root: str, reference: str) -> None:
    for stage, keys in [("clean", ["photo_id"]), ("rejects/clean", ["source_file", "line_number"])]:
        got, want = (standalone.read_sorted(storage.join(r, stage), *keys) for r in (root, reference))
        assert got.num_rows == want.num_rows > 0 and got.equals(want), stage
    got, want = (storage.read_manifest(storage.join(r, "clean")) for r in (root, reference))
    for key in ("rows_in", "rows_out", "rows_rejected", "videos", "rejects_by_reason"):
        assert got[key] == want[key], key


def test_worker_killed_mid_stage_the_stage_completes(cluster, metadata, reference, tmp_path):
    root = "file://" + str(tmp_path / "run")
    log = tmp_path / "clean.log"
    # INFO: the driver's log then names every task attempt it starts
    driver = standalone.submit("clean", ["--root", root, "--input", metadata, *SMALL_SPLITS], cluster, log,
                               wait=False, IM2VEC_SPARK_LOG_LEVEL="INFO")
    try:
        wait_for(lambda: finished_parts(root) >= 3 or standalone.exited(driver, 0), 180, "3 finished clean tasks")
        cluster.kill_worker(1)
        assert standalone.exited(driver, 240), f"clean did not finish after the worker died; log: {log}"
        code = standalone.kill_group(driver)
        text = log.read_text()
        assert code == 0, text[-3000:]
        # The kill took an executor with a running task, and Spark ran that task again (attempt 1).
        assert re.search(r"Lost executor \d+ on 127.0.0.1: worker lost", text)
        assert re.search(r"Starting task \d+\.1 in stage", text), "no task was re-run"
        assert_clean_matches(root, reference)
        assert status_state(root, "clean") == "complete"
    finally:
        standalone.kill_group(driver)
        cluster.add_worker()
        cluster.wait(lambda state: state["aliveworkers"] >= 2, 90, "a replacement worker")


def test_killed_driver_leaves_no_manifest_and_a_rerun_replaces_it(spark, cluster, metadata, reference, tmp_path):
    root = "file://" + str(tmp_path / "run")
    driver = standalone.submit("clean", ["--root", root, "--input", metadata, *SMALL_SPLITS], cluster,
                               tmp_path / "killed.log", wait=False)
    try:
        wait_for(lambda: finished_parts(root) >= 2, 180, "2 finished clean tasks")
    finally:
        standalone.kill_group(driver)
    assert storage.read_manifest(storage.join(root, "clean")) is None
    assert status_state(root, "clean") in ("missing", "partial")
    cluster.wait(lambda state: not state["activeapps"], 60, "the master to drop the killed app")

    rerun = standalone.submit("clean", ["--root", root, "--input", metadata, *SMALL_SPLITS], cluster,
                              tmp_path / "rerun.log")
    assert rerun.returncode == 0, (tmp_path / "rerun.log").read_text()[-3000:]
    assert status_state(root, "clean") == "complete"
    assert_clean_matches(root, reference)

    # Idempotent: the same input split the same way gives the same part files, byte for byte.
    folder = Path(root.removeprefix("file://")) / "clean"
    before = {p.name: p.read_bytes() for p in folder.glob("part-*.parquet")}
    spark.conf.set("spark.sql.files.maxPartitionBytes", str(SPLIT_BYTES))
    try:
        clean.run(spark, configuration.load(), root, [metadata])
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
    after = {p.name: p.read_bytes() for p in folder.glob("part-*.parquet")}
    assert len(before) > 1 and before == after
    assert_clean_matches(root, reference)


def test_killed_vocab_rerun_shows_partial_then_replaces(spark, cluster, reference, tmp_path):
    root = "file://" + str(tmp_path / "run")
    shutil.copytree(reference.removeprefix("file://"), tmp_path / "run")
    manifest = tmp_path / "run" / "vocab" / storage.MANIFEST
    assert status_state(root, "vocab") == "complete"

    driver = standalone.submit("vocab", ["--root", root], cluster, tmp_path / "vocab.log", wait=False)
    try:
        # vocab drops its old manifest first: from then on, vocab/ is not a finished stage
        wait_for(lambda: not manifest.exists() or standalone.exited(driver, 0), 120, "vocab to start")
    finally:
        standalone.kill_group(driver)
    assert not manifest.exists(), "the driver finished before it could be killed"
    assert status_state(root, "vocab") == "partial"

    vocab.run(spark, configuration.load(), root)
    assert status_state(root, "vocab") == "complete"
    for stage, keys in [("vocab", ["tag_id"]), ("tagged", ["photo_id"])]:
        got, want = (standalone.read_sorted(storage.join(r, stage), *keys) for r in (root, reference))
        assert got.num_rows == want.num_rows > 0 and got.equals(want), stage
