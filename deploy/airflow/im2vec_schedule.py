"""Airflow DAG: sample im2vec epochs ahead of the run's consumers, one batch per Spark application.

Copy this file into your DAGs folder (it imports nothing from im2vec: every step is an ``im2vec``
command, so Airflow keeps its own environment and im2vec its pinned one). Each run:

1. ``wait_for_consumers`` (a sensor) pokes ``im2vec schedule --root ROOT --plan``, which reads the
   consumers' progress files (``ROOT/consumers/NAME.json``) and the epochs' manifests and prints
   what one pass of the scheduler would do, as JSON. It is done once there is work: the fastest
   live consumer has come within ``ahead`` epochs of the last sampled epoch (``sample`` holds the
   first run of missing epochs, ``[A, B]``), or every live consumer has finished an epoch that is
   still on disk (``delete``). With nothing to do within 9 minutes the run ends as skipped, and the
   next one (every 10 minutes, one at a time) looks again.
2. ``sample`` runs ``im2vec sample --root ROOT --epochs A-B --submit PROFILE``: the batch is its own
   Spark application, so no executor is held between batches.
3. ``delete_finished`` runs ``im2vec schedule --root ROOT --delete-only``, which deletes the epochs
   every live consumer has finished (keeping ``keep``), judged afresh.

The policy (``ahead``, ``keep``, ``consumer_stale_seconds``, ``num_epochs``) is im2vec's config: give a
YAML file as the ``config`` param; all three steps read it (a profile's keys reach the sample step only).

Params (defaults from the environment of the Airflow worker):
    root       the run root URI (``IM2VEC_ROOT``)
    profile    a profile name in deploy/profiles/ or a .conf path (``IM2VEC_PROFILE``, default ``local``)
    config     an im2vec YAML config file, or "" (``IM2VEC_CONFIG``)
    im2vec     the ``im2vec`` executable (``IM2VEC``, default ``im2vec`` on PATH)

Tested with Airflow 3.3 (tests/integration/test_airflow_dag.py):
``airflow dags test im2vec_schedule --conf '{"root": "file:///data/run1"}'``.
"""
from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import Param, PokeReturnValue, dag, task

PARAMS = {
    "root": Param(os.environ.get("IM2VEC_ROOT", ""), type="string",
                  description="run root URI (file://, hdfs://, s3a://)"),
    "profile": Param(os.environ.get("IM2VEC_PROFILE", "local"), type="string",
                     description="spark-submit profile: a name in deploy/profiles/ or a .conf path"),
    "config": Param(os.environ.get("IM2VEC_CONFIG", ""), type="string",
                    description="im2vec YAML config file (ahead, keep, epochs, ...), or empty"),
    "im2vec": Param(os.environ.get("IM2VEC", "im2vec"), type="string", description="the im2vec executable"),
}
# The shell steps take the params through their environment, so no value needs quoting.
ENV = {"IM2VEC": "{{ params.im2vec }}", "ROOT": "{{ params.root }}", "CONFIG": "{{ params.config }}",
       "PROFILE": "{{ params.profile }}"}
IM2VEC = '"$IM2VEC" {} --root "$ROOT" ${{CONFIG:+--config "$CONFIG"}}'


def im2vec_argv(params: dict, command: str, *args: str) -> list[str]:
    """``im2vec COMMAND --root ROOT [--config FILE] ARGS...`` from the run's params."""
    if not params["root"]:
        raise ValueError("set the root param (or IM2VEC_ROOT): the run root URI")
    config = ["--config", params["config"]] if params["config"] else []
    return [params["im2vec"], command, "--root", params["root"], *config, *args]


@dag(dag_id="im2vec_schedule", schedule=timedelta(minutes=10), start_date=datetime(2026, 1, 1), catchup=False,
     max_active_runs=1, params=PARAMS, default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
     doc_md=__doc__, tags=["im2vec"])
def im2vec_schedule():
    @task.sensor(poke_interval=60, timeout=timedelta(minutes=9).total_seconds(), mode="reschedule", soft_fail=True)
    def wait_for_consumers(params=None) -> PokeReturnValue:
        """Done when the scheduler's plan has epochs to sample or to delete; the plan goes to XCom."""
        argv = im2vec_argv(params, "schedule", "--plan")
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        plan = json.loads(done.stdout)
        print(f"consumers: {plan['consumers']}; sampled epochs: {plan['sampled']}; "
              f"to sample: {plan['sample']}; to delete: {plan['delete']}")
        return PokeReturnValue(is_done=bool(plan["sample"] or plan["delete"]), xcom_value=plan)

    plan = wait_for_consumers()
    sample = BashOperator(
        task_id="sample",
        env={**ENV, "EPOCHS": "{{ ti.xcom_pull(task_ids='wait_for_consumers')['sample'] | join('-') }}"},
        append_env=True,
        # Exit code 99 marks the task skipped: the plan had only epochs to delete.
        bash_command='if [ -z "$EPOCHS" ]; then echo "no epochs to sample"; exit 99; fi; '
                     + IM2VEC.format("sample") + ' --epochs "$EPOCHS" --submit "$PROFILE"',
        skip_on_exit_code=99)
    delete = BashOperator(task_id="delete_finished", env=ENV, append_env=True,
                          bash_command=IM2VEC.format("schedule") + " --delete-only", trigger_rule="none_failed")
    plan >> sample >> delete


im2vec_schedule()
