"""pipeline.spark: which Spark properties a session gets from defaults.yaml, GPU keys, spark-submit and --set.

Precedence, lowest first: defaults.yaml's spark.* < GPU properties from gpus_per_* < what
spark-submit was given (--conf, a profile) < spark.* keys the user set (--config, --set).
"""
import json
import re
import textwrap

import pytest

from pipeline import config as configuration, spark as spark_session, submit

YARN = {"spark.master": "yarn", "spark.submit.deployMode": "cluster"}


def load(*overrides, path=None, **flags):
    return configuration.load(path, list(overrides), **flags)


def test_outside_spark_submit_the_configuration_is_the_session():
    chosen = spark_session.properties(load("spark.executor.memory=3g"))
    assert chosen["spark.sql.shuffle.partitions"] == "8"          # defaults.yaml
    assert chosen["spark.driver.memory"] == "4g"
    assert chosen["spark.ui.showConsoleProgress"] == "false"      # a YAML bool, as Spark spells it
    assert chosen["spark.executor.memory"] == "3g"
    assert chosen["spark.sql.execution.arrow.pyspark.enabled"] == "true"


def test_spark_submit_conf_beats_defaults_and_set_beats_spark_submit(tmp_path):
    launcher = {**YARN, "spark.sql.shuffle.partitions": "2000", "spark.driver.memory": "16g",
                "spark.executor.memory": "8g", "spark.sql.execution.arrow.pyspark.enabled": "false"}
    chosen = spark_session.properties(load(), launcher)
    assert chosen["spark.sql.shuffle.partitions"] == "2000"       # defaults.yaml's 8 is for one machine
    assert chosen["spark.driver.memory"] == "16g"
    assert chosen["spark.sql.execution.arrow.pyspark.enabled"] == "false"
    assert chosen["spark.ui.showConsoleProgress"] == "false"      # the launcher said nothing: the default
    file = tmp_path / "run.yaml"
    file.write_text("spark.executor.memory: 12g\n")
    chosen = spark_session.properties(load("spark.sql.shuffle.partitions=300", path=str(file)), launcher)
    assert chosen["spark.sql.shuffle.partitions"] == "300"        # --set
    assert chosen["spark.executor.memory"] == "12g"               # --config
    assert chosen["spark.driver.memory"] == "16g"


def test_set_gpus_per_executor_gives_gpu_executors_on_a_cluster():
    config = load("gpus_per_executor=1")
    gpu = {"spark.executor.resource.gpu.amount": "1", "spark.task.resource.gpu.amount": "0.125",
           "spark.executor.resource.gpu.discoveryScript": str(spark_session.DISCOVERY_SCRIPT)}
    # Under spark-submit the launcher's master counts, not the config's default local[*].
    assert gpu.items() <= spark_session.properties(config, YARN).items()
    assert gpu.items() <= spark_session.properties(load("gpus_per_executor=1", master="spark://h:7077")).items()
    # Local mode schedules no GPUs; CPU executors by default.
    assert not any("gpu" in key for key in spark_session.properties(config))
    assert not any("gpu" in key for key in spark_session.properties(load(), YARN))


def test_gpu_properties_give_way_to_spark_submit_and_to_set(capsys):
    launcher = {**YARN, "spark.task.resource.gpu.amount": "0.25"}
    chosen = spark_session.properties(load("gpus_per_executor=2"), launcher)
    assert chosen["spark.executor.resource.gpu.amount"] == "2"
    assert chosen["spark.task.resource.gpu.amount"] == "0.25"
    assert "spark.task.resource.gpu.amount=0.25 is kept over 0.125" in capsys.readouterr().err
    chosen = spark_session.properties(load("gpus_per_executor=2", "spark.task.resource.gpu.amount=0.5"), launcher)
    assert chosen["spark.task.resource.gpu.amount"] == "0.5"


def test_submit_passes_set_spark_keys_to_spark_submit_over_the_profile(tmp_path):
    profile = tmp_path / "own.conf"
    profile.write_text("spark.master local[1]\nspark.executor.memory 2g\nnegatives 7\npositives 3\n")
    command = submit.submit_command("vocab", str(profile), [
        "--root", "r", "--set", "spark.executor.memory=5g", "--set", "negatives=9",
        "--set", "spark.sql.shuffle.partitions=8"], environ={})
    confs = [command[i + 1] for i, arg in enumerate(command) if arg == "--conf"]
    assert "spark.executor.memory=5g" in confs and "spark.executor.memory=2g" not in confs
    assert not any(c.startswith("spark.sql.shuffle.partitions") for c in confs)   # = the default: not the user's
    # The profile's own keys reach the stage, except those the user set.
    assert command[-2:] == ["--set", "positives=3"] and "negatives=7" not in command


def test_real_spark_submit_keeps_its_conf_over_defaults(tmp_path):
    """A real spark-submit (local[1]) through pipeline.submit: the session sees the profile's values, not defaults.yaml's."""
    probe = tmp_path / "probe.py"
    out = tmp_path / "conf.json"
    probe.write_text(textwrap.dedent(f"""
        import json, sys
        from pipeline import config, spark
        overrides = [sys.argv[i + 1] for i, a in enumerate(sys.argv) if a == "--set"]
        session = spark.session(config.load(overrides=overrides), "probe")
        conf = dict(session.sparkContext.getConf().getAll())
        conf["sql:spark.sql.shuffle.partitions"] = session.conf.get("spark.sql.shuffle.partitions")
        with open({str(out)!r}, "w") as fh:
            json.dump(conf, fh)
        session.stop()
        """))
    profile = tmp_path / "probe.conf"
    profile.write_text(f"spark.master local[1]\nspark.ui.enabled false\nspark.sql.shuffle.partitions 3\n"
                       f"spark.driver.memory 1g\nspark.executor.memory 1g\nim2vec.app {probe}\n")
    code = submit.submit("clean", str(profile), ["--root", str(tmp_path), "--set", "spark.executor.memory=700m"])
    assert code == 0
    conf = json.loads(out.read_text())
    assert conf["spark.sql.shuffle.partitions"] == conf["sql:spark.sql.shuffle.partitions"] == "3"
    assert conf["spark.driver.memory"] == "1g"          # not defaults.yaml's 4g
    assert conf["spark.executor.memory"] == "700m"      # --set beats the profile
    assert conf["spark.ui.showConsoleProgress"] == "false"   # defaults.yaml where the profile says nothing


@pytest.mark.parametrize("uri, message", [
    ("s3a://bucket/yfcc/part-0.tsv", "no s3a:// filesystem .*hadoop-aws:3.3.4"),
    ("nosuchfs://bucket/x.tsv", 'no filesystem for that scheme .*No FileSystem for scheme "nosuchfs"')])
def test_missing_filesystem_is_told_from_sparks_own_exception(spark, uri, message):
    """pip's pyspark has no hadoop-aws: the real Py4J exception of a read, turned into what to install."""
    with pytest.raises(Exception) as raised:
        spark.read.text([uri]).inputFiles()
    err = spark_session.missing_filesystem(raised.value, [uri])
    assert err is not None and uri in str(err)
    assert re.search(message, str(err)), str(err)
    assert spark_session.missing_filesystem(ValueError("not Spark's"), [uri]) is None
