"""Benchmark: what a Spark task costs beyond its own work, with pyspark's Python daemon and with
im2vec's (jobs.daemon), one after the other in the same run.

    .venv/bin/python tests/benchmarks/bench_worker.py [--tasks 200] [--cores 2]

Each task imports what a stage's task imports (numpy, pyarrow, numba, jobs.clean) and returns one
row, so nearly all its time is the worker's between-task cost: pyspark's worker reads every zip
archive's directory again before each task on Python 3.11, and its daemon runs a full garbage
collection after each. Both daemons run the same jobs on a fresh session of ``local[cores]``,
after a warm-up job that starts every worker. Prints seconds and CPU seconds (driver, JVM and
Python workers) per task, and the ratio (target: im2vec's daemon <= 0.5x pyspark's CPU per task).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo, for tests.benchmarks

from pipeline import config as configuration  # noqa: E402
from pipeline.spark import session  # noqa: E402
from tests.benchmarks.cputime import tree_cpu_seconds  # noqa: E402


def one_row(batches):
    import numba  # noqa: F401  - a stage's task imports these
    import numpy  # noqa: F401

    import jobs.clean  # noqa: F401
    for batch in batches:
        yield pa.RecordBatch.from_arrays([pa.array([os.getpid()] * batch.num_rows)], ["pid"])


def per_task(daemon: str, tasks: int, cores: int) -> tuple[float, float, int]:
    """(seconds, CPU seconds) per task of ``tasks`` one-row tasks, and how many workers ran them."""
    config = configuration.load(overrides=[f"master=local[{cores}]", "spark.ui.enabled=false",
                                           f"spark.python.daemon.module={daemon}"])
    spark = session(config, f"im2vec bench_worker {daemon}")
    try:
        spark.range(0, 4 * cores, 1, 4 * cores).mapInArrow(one_row, "pid long").collect()   # warm-up
        started, cpu = time.perf_counter(), tree_cpu_seconds()
        rows = spark.range(0, tasks, 1, tasks).mapInArrow(one_row, "pid long").collect()
        seconds, cpu = time.perf_counter() - started, tree_cpu_seconds() - cpu
    finally:
        spark.stop()
    return seconds / tasks, cpu / tasks, len({r.pid for r in rows})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    args = parser.parse_args()

    figures = {}
    for daemon in ("pyspark.daemon", "jobs.daemon"):
        seconds, cpu, workers = per_task(daemon, args.tasks, args.cores)
        figures[daemon] = cpu
        print(f"{daemon:15s}: {seconds * 1000:7.1f} ms and {cpu * 1000:7.1f} CPU-ms per task "
              f"({args.tasks} tasks on {workers} workers, local[{args.cores}])", flush=True)
    ratio = figures["jobs.daemon"] / figures["pyspark.daemon"]
    print(f"CPU per task, jobs.daemon / pyspark.daemon: {ratio:.2f}  (target <= 0.5)")
    print(f"saved per task: {(figures['pyspark.daemon'] - figures['jobs.daemon']) * 1000:.0f} CPU-ms; "
          f"a clean task of 121 MB takes ~1,100")
    return 0


if __name__ == "__main__":
    sys.exit(main())
