"""Benchmark: the clean stage on a local standalone cluster with 1 worker, then 2 (one core each).

    .venv/bin/python tests/benchmarks/bench_scale.py [--rows 2000000] [--repeats 2]

Starts a real master and one worker on 127.0.0.1 (tests/cluster.py), submits the clean stage
with spark-submit as `im2vec clean --submit standalone` does, adds a second worker and submits
it again on the same input; each configuration runs ``--repeats`` times and keeps its best
stage time (the manifest's ``seconds``: the driver's run of the stage, without JVM start-up).
Each worker, with its executor and Python workers, is pinned to its own CPU (Spark's "cores"
are task slots only: the executor JVM reads and converts input while Python parses, so an
unpinned one-core worker uses more than a core), and Python workers get one thread each (Spark
sets OMP_NUM_THREADS to the task's cores). Target: speed-up >= 1.7x. The machine must have two
otherwise idle cores for that: the load average is printed alongside.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline import storage, synth  # noqa: E402
from tests import cluster as standalone  # noqa: E402


def clean_seconds(cluster, metadata: str, root: str, log: Path) -> float:
    """Submit the clean stage; returns the stage's seconds from its manifest."""
    storage.delete(root)
    driver = standalone.submit("clean", ["--root", root, "--input", metadata], cluster, log, timeout=3600)
    if driver.returncode != 0:
        raise SystemExit(f"clean failed (exit {driver.returncode}); log: {log}")
    return storage.read_manifest(storage.join(root, "clean"))["seconds"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=2, help="runs per worker count; the best counts")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, outputs)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="im2vec-bench-scale-"))
    metadata = str(tmp / "yfcc.tsv")
    started = time.perf_counter()
    synth.write(metadata, rows=args.rows, layout=25, seed=3)
    print(f"synthetic input: {args.rows:,} rows, {os.path.getsize(metadata) / 1e6:.0f} MB, "
          f"written in {time.perf_counter() - started:.1f}s; work folder {tmp}")
    Path(metadata).read_bytes()   # into the page cache, for every run alike

    best: dict[int, float] = {}
    loads = [os.getloadavg()[0]]
    with standalone.standalone_cluster(tmp / "spark", workers=1, cores=1, pin=True) as cluster:
        for workers in (1, 2):
            if workers == 2:
                cluster.add_worker()
                cluster.wait(lambda state: state["aliveworkers"] >= 2, 90, "the second worker")
            for attempt in range(args.repeats):
                seconds = clean_seconds(cluster, metadata, "file://" + str(tmp / "run"),
                                        tmp / f"clean-{workers}w-{attempt}.log")
                loads.append(os.getloadavg()[0])
                print(f"  {workers} worker(s), run {attempt + 1}: {seconds:7.1f}s  "
                      f"({args.rows / seconds:,.0f} rows/s; load average {loads[-1]:.1f})", flush=True)
                best[workers] = min(best.get(workers, float("inf")), seconds)
    speedup = best[1] / best[2]
    print(f"clean stage, best of {args.repeats}: 1 worker {best[1]:.1f}s, 2 workers {best[2]:.1f}s")
    print(f"speed-up with 2 workers: {speedup:.2f}x  (target >= 1.7x; load average {min(loads):.1f}..{max(loads):.1f} "
          f"on {os.cpu_count()} cores: other work on the machine lowers it)")
    if not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
