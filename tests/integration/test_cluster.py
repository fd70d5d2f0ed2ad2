"""Running on a real cluster: spark-submit profiles, a standalone cluster on 127.0.0.1, progress.

The slow test starts a master and two one-core workers from the pyspark installation, submits
the clean, vocab and sample stages to it with spark-submit (through deploy/profiles/standalone.conf,
as `im2vec STAGE --submit standalone` does) and checks that they produce the same data as a run
in a local session: clean/ and vocab/ the same rows, the sampled epochs the same rows in the
same order (counter-based sampling).
"""
import io
import os
import re
import sys
import time

import pytest

from jobs import clean, sample, vocab
from pipeline import Im2vecError, config as configuration, progress, storage, submit, synth
from pipeline.app import main as app_main
from tests import cluster as standalone
from pipeline.datasets import epochs as epochs_data

EPOCHS = (1, 2)


# --- profiles and the spark-submit command line (fast) -----------------------------------------

ENV = {"SPARK_HOME": "/opt/spark", "SPARK_MASTER_URL": "spark://10.0.0.5:7077", "K8S_API_SERVER": "https://k8s:6443",
       "IM2VEC_IMAGE": "reg/im2vec:1", "IM2VEC_GPU_IMAGE": "reg/im2vec:1-gpu"}


def conf_of(command: list[str]) -> dict[str, str]:
    """{key: value} of the --conf options of a spark-submit command line."""
    pairs = [command[i + 1] for i, arg in enumerate(command) if arg == "--conf"]
    return dict(p.split("=", 1) for p in pairs)


@pytest.mark.parametrize("profile", ["local", "standalone", "yarn", "k8s", "k8s-gpu"])
def test_every_profile_builds_a_command(profile):
    command = submit.submit_command("vocab", profile, ["--root", "s3a://b/run", "--submit", profile], environ=ENV)
    assert command[0] == "/opt/spark/bin/spark-submit"
    assert command[1] == "--master" and command[2]
    app = next(a for a in command if a.endswith("pipeline/app/main.py"))
    assert command[command.index(app) + 1:command.index(app) + 4] == ["vocab", "--root", "s3a://b/run"]
    assert "--submit" not in command
    conf = conf_of(command)
    assert all(value for value in conf.values()), "empty values are left out"
    assert not any("${" in arg for arg in command)
    if conf.get("spark.submit.deployMode", "client") == "client":
        assert conf["spark.pyspark.driver.python"] == sys.executable
    else:
        assert "spark.pyspark.driver.python" not in conf


def test_profiles_fill_environment_and_defaults():
    env = dict(ENV, SPARK_EXECUTOR_CORES="3")
    command = submit.submit_command("clean", "standalone", ["--root", "r", "--input", "x.tsv"], environ=env)
    conf = conf_of(command)
    assert command[1:3] == ["--master", "spark://10.0.0.5:7077"]
    assert conf["spark.executor.cores"] == "3"
    assert "spark.executor.memory" not in conf      # ${SPARK_EXECUTOR_MEMORY:-} unset: Spark's default
    assert command[-6:] == [app_main.__file__, "clean", "--root", "r", "--input", "x.tsv"]

    k8s = submit.submit_command("features", "k8s-gpu", ["--root", "s3a://b/run"], environ=ENV)
    assert k8s[k8s.index("local:///opt/im2vec/pipeline/app/main.py") + 1] == "features"
    gpu = conf_of(k8s)
    assert gpu["spark.executor.resource.gpu.discoveryScript"] == "/opt/im2vec/deploy/gpu/get_gpus_resources.sh"
    assert gpu["spark.task.resource.gpu.amount"] == "0.125"
    # non-Spark keys are im2vec config, given to the stage with --set
    assert k8s[-4:] == ["--set", "gpus_per_executor=1", "--set", "gpus_per_task=0.125"]


def test_profile_errors_are_clear(tmp_path):
    env = {k: v for k, v in ENV.items() if k != "SPARK_MASTER_URL"}
    with pytest.raises(Im2vecError, match="SPARK_MASTER_URL"):
        submit.submit_command("clean", "standalone", [], environ=env)
    with pytest.raises(Im2vecError, match="no profile 'mesos'.*known: .*standalone"):
        submit.submit_command("clean", "mesos", [], environ=ENV)
    with pytest.raises(Im2vecError, match="no job for stage"):
        submit.submit_command("polish", "local", [], environ=ENV)
    typo = tmp_path / "typo.conf"
    typo.write_text("spark.master local[2]\nnegativs 5\n")
    with pytest.raises(Im2vecError, match="unknown config key 'negativs'"):
        submit.submit_command("sample", str(typo), [], environ=ENV)


def test_printed_command_masks_secrets(tmp_path):
    own = tmp_path / "own.conf"
    own.write_text("# a user's profile\nspark.master\tlocal[1]\nspark.hadoop.fs.s3a.secret.key   ${MY_SECRET}\n")
    command = submit.submit_command("clean", str(own), ["--root", "r"], environ=dict(ENV, MY_SECRET="hunter2"))
    assert "spark.hadoop.fs.s3a.secret.key=hunter2" in command     # spark-submit needs it ...
    shown = submit.masked(command)
    assert "hunter2" not in shown and "spark.hadoop.fs.s3a.secret.key=***" in shown   # ... nobody else


# --- progress (local session) --------------------------------------------------------------------

def test_progress_reports_tasks_and_eta(spark):
    def slow(rows):
        time.sleep(0.4)
        yield sum(1 for _ in rows)

    out = io.StringIO()
    with progress.report(spark, "demo", every=1, stream=out) as reporter:
        assert spark.sparkContext.parallelize(range(1000), 12).mapPartitions(slow).sum() == 1000
    lines = out.getvalue().splitlines()
    assert reporter.lines == len(lines) >= 2
    done = [int(m.group(1)) for m in (re.search(r"stage \d+ \w+: (\d+)/12 tasks", x) for x in lines) if m]
    assert len(done) == len(lines) and done == sorted(done) and done[-1] > done[0]
    assert all(line.startswith("[im2vec] demo ") for line in lines)
    assert any(re.search(r"ETA \d+:\d\d$", line) for line in lines)
    assert not reporter.is_alive()


def test_progress_clock_and_eta():
    assert progress.clock(75.2) == "1:15" and progress.clock(3725) == "1:02:05"
    assert progress.eta(0, 10, 5.0) is None
    assert progress.eta(4, 10, 8.0) == pytest.approx(12.0)


# --- the standalone cluster (slow) ---------------------------------------------------------------

@pytest.fixture(scope="module")
def metadata(tmp_path_factory):
    path = tmp_path_factory.mktemp("yfcc") / "yfcc.tsv"
    synth.write(str(path), rows=20_000, layout=25, seed=7)
    return str(path)


def local_run(spark, root: str, metadata: str) -> None:
    config = configuration.load()
    clean.run(spark, config, root, [metadata])
    vocab.run(spark, config, root)
    sample.run(spark, config, root, epochs=EPOCHS)


def assert_same_tables(left, right, what: str) -> None:
    assert left.schema == right.schema, what
    assert left.num_rows == right.num_rows and left.num_rows > 0, what
    assert left.equals(right), f"{what}: same rows, different values"


def assert_same_outputs(root_a: str, root_b: str) -> None:
    """The data under two run roots is the same: clean/vocab row sets, epochs in written order."""
    for stage, keys in [("clean", ["photo_id"]), ("rejects/clean", ["source_file", "line_number"]),
                        ("vocab", ["tag_id"]), ("tagged", ["photo_id"])]:
        assert_same_tables(standalone.read_sorted(storage.join(root_a, stage), *keys),
                           standalone.read_sorted(storage.join(root_b, stage), *keys), stage)
    for epoch in range(EPOCHS[0], EPOCHS[1] + 1):
        a, b = (standalone.read_in_written_order(epochs_data.uri(r, epoch)) for r in (root_a, root_b))
        assert_same_tables(a, b, f"epoch {epoch} in written order")
    for stage in ("clean", "vocab", "epochs"):
        ma, mb = (storage.read_manifest(storage.join(r, stage)) for r in (root_a, root_b))
        assert (ma["rows_in"], ma["rows_out"], ma["rows_rejected"]) == \
               (mb["rows_in"], mb["rows_out"], mb["rows_rejected"]), stage


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_stages_on_standalone_cluster_match_local_run(spark, metadata, tmp_path):
    local_root = "file://" + str(tmp_path / "local")
    local_run(spark, local_root, metadata)

    cluster_root = "file://" + str(tmp_path / "cluster")
    with standalone.standalone_cluster(tmp_path / "spark", workers=2, cores=1) as cluster:
        # clean and vocab shuffle into as few partitions as the local session (fewer, faster tasks);
        # sample keeps the default 8 against the local 4: its epochs must not depend on it.
        few = ["--set", "spark.sql.shuffle.partitions=4"]
        for stage, args in [("clean", ["--input", metadata, *few]), ("vocab", few),
                            ("sample", ["--epochs", f"{EPOCHS[0]}-{EPOCHS[1]}"])]:
            log = tmp_path / f"{stage}.log"
            driver = standalone.submit(stage, ["--root", cluster_root, *args], cluster, log)
            assert driver.returncode == 0, f"{stage} failed on the cluster:\n{log.read_text()[-3000:]}"
        apps = cluster.state()["completedapps"]
        groups = [p.pid for p in (cluster.master, *cluster.workers)]
    # The work ran on the cluster's executors: one app per stage, each given both workers' cores.
    assert sorted(a["name"] for a in apps) == ["im2vec clean", "im2vec sample", "im2vec vocab"]
    assert all(a["cores"] == 2 for a in apps), apps
    assert_same_outputs(local_root, cluster_root)
    for group in groups:   # no JVM of the cluster is left running
        with pytest.raises(ProcessLookupError):
            os.killpg(group, 0)
