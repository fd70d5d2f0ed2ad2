"""The Airflow DAG in deploy/airflow/: it loads without import errors, and one `airflow dags test` run
against a local root deletes the epoch every live consumer finished and samples the next batch
through spark-submit.

Airflow runs in its own virtualenv (deploy/airflow/venv.sh, built on first use under the user's
cache folder, ~1-2 minutes, then reused), so the project's pins stay as they are; it reaches
im2vec only through the `im2vec` command, as a real deployment does.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jobs import sample
from pipeline import storage
from pipeline.datasets import consumers, epochs
from tests.integration.test_sample import make_config, write_inputs

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "deploy" / "airflow"
IM2VEC = str(Path(sys.executable).with_name("im2vec"))
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def airflow_venv() -> Path:
    built = subprocess.run(["bash", str(DAGS / "venv.sh")], capture_output=True, text=True, timeout=1200)
    assert built.returncode == 0, built.stderr[-3000:]
    return Path(built.stdout.strip().splitlines()[-1])


def airflow_env(home: Path) -> dict:
    return {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
            "IM2VEC_LOCAL_MASTER": "local[2]", "SPARK_DRIVER_MEMORY": "1g"}


def test_the_dag_loads_without_import_errors(airflow_venv, tmp_path):
    script = ("import json; from airflow.models import DagBag; bag = DagBag(dag_folder=%r); "
              "print(json.dumps({'errors': bag.import_errors, 'dags': {d: sorted(t.task_id for t in bag.dags[d].tasks) "
              "for d in bag.dag_ids}}))" % str(DAGS))
    loaded = subprocess.run([str(airflow_venv / "bin" / "python"), "-c", script], capture_output=True, text=True,
                            env=airflow_env(tmp_path / "home"), timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    bag = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert bag == {"errors": {}, "dags": {"im2vec_schedule": ["delete_finished", "sample", "wait_for_consumers"]}}


def test_a_dag_run_deletes_finished_epochs_and_samples_the_next_batch(airflow_venv, spark, tmp_path):
    root = "file://" + str(tmp_path / "run")
    write_inputs(root, images=1500)
    settings = {"num_epochs": 4, "ahead": 2, "keep": 1, "output_partitions": 2, "spark.ui.enabled": False}
    config_file = tmp_path / "im2vec.yaml"
    config_file.write_text(yaml.safe_dump(settings))
    sample.run(spark, make_config(**settings), root, epochs=(1, 2))
    consumers.report(root, "fast", epoch=2, step=20)
    consumers.report(root, "slow", epoch=2, step=10)
    # What the sensor will see: epoch 1 is finished by both, epochs 3-4 are what the fastest needs next.
    planned = subprocess.run([IM2VEC, "schedule", "--root", root, "--config", str(config_file), "--plan"],
                             capture_output=True, text=True, timeout=120)
    assert planned.returncode == 0, planned.stderr[-3000:]
    assert {k: json.loads(planned.stdout)[k] for k in ("sample", "delete")} == {"sample": [3, 4], "delete": [1]}

    env = airflow_env(tmp_path / "home")
    airflow = str(airflow_venv / "bin" / "airflow")
    migrated = subprocess.run([airflow, "db", "migrate"], capture_output=True, text=True, env=env, timeout=600)
    assert migrated.returncode == 0, migrated.stdout[-3000:] + migrated.stderr[-3000:]
    conf = {"root": root, "config": str(config_file), "profile": "local", "im2vec": IM2VEC}
    ran = subprocess.run([airflow, "dags", "test", "im2vec_schedule", "--conf", json.dumps(conf)],
                         capture_output=True, text=True, env=env, timeout=900)
    log = ran.stdout + ran.stderr
    assert ran.returncode == 0 and "state=success" in log, log[-5000:]
    assert "sample --root" in log and "--epochs 3-4" in log     # the spark-submit line the sample step printed
    complete = sorted(e for e, uri in epochs.folders(root).items() if storage.read_manifest(uri) is not None)
    assert complete == [2, 3, 4] and sorted(epochs.folders(root)) == [2, 3, 4]
    assert storage.read_manifest(epochs.uri(root, 3))["rows_out"] > 0
