"""Benchmark: the clean stage reading .bz2 input, in compressed MB/s per core, beside `bzip2 -dc`.

    .venv/bin/python tests/benchmarks/bench_bz2.py [--rows 1000000] [--cores 2] [--level 9]

The YFCC100M dump comes as bzip2 (ten ~4-5 GB files, or one ~12 GB file), so what a core does
per compressed byte bounds a run: decompressing is most of it. The stage reads .bz2 through
Spark's text reader, which splits at bzip2 block boundaries (Hadoop's BZip2Codec, in Java when
no native Hadoop library is installed, as with pip's pyspark) and hands each task its lines;
the reference is the bzip2 command (libbz2, C) decompressing the same file on one core to
/dev/null. Both run here, one after the other, on the same file; the stage runs on ``--cores``
cores, so its rate is divided by them. CPU seconds (every process: driver, JVM, Python workers)
are printed too: they hold better than wall-clock on a busy machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo, for tests.benchmarks

from pipeline import config as configuration, synth  # noqa: E402
from pipeline.spark import session  # noqa: E402
from tests.benchmarks.bz2_rate import bzip2_rate, compare, compress, describe, text_tasks  # noqa: E402
from tests.benchmarks.cputime import tree_cpu_seconds  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--level", type=int, default=9, help="bzip2 level (9: 900 kB blocks, as bzip2's default)")
    parser.add_argument("--split-mb", type=int, default=0,
                        help="spark.sql.files.maxPartitionBytes in MB; 0 = a split per core")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="im2vec-bench-bz2-") as tmp:
        plain, path = os.path.join(tmp, "yfcc.tsv"), os.path.join(tmp, "yfcc100m_dataset.bz2")
        synth.write(plain, rows=args.rows, layout=25, seed=1)
        raw, size = os.path.getsize(plain), compress(plain, path, args.level)
        os.remove(plain)
        print(f"input: {args.rows:,} rows, {raw / 1e6:.0f} MB, {size / 1e6:.1f} MB as bzip2 level {args.level}")

        wall, cpu = bzip2_rate(path)

        split = (args.split_mb << 20) or max(1 << 20, size // args.cores + 1)
        config = configuration.load(overrides=[f"master=local[{args.cores}]", "spark.ui.enabled=false",
                                               f"spark.sql.files.maxPartitionBytes={split}"])
        spark = session(config, "im2vec bench_bz2")
        from jobs import clean

        warm = os.path.join(tmp, "warm.bz2")   # start-up, JIT and the numba kernels, outside the timing
        synth.write(warm, rows=20_000, layout=25, seed=2)
        clean.run(spark, config, "file://" + os.path.join(tmp, "warm-run"), [warm])

        tasks = text_tasks(spark, path)
        cpu_before, started = tree_cpu_seconds(), time.perf_counter()
        manifest = clean.run(spark, config, "file://" + os.path.join(tmp, "run"), [path])
        stage_wall, stage_cpu = time.perf_counter() - started, tree_cpu_seconds() - cpu_before
        spark.stop()
        print("\n".join(describe(compare(size, args.cores, stage_wall, stage_cpu, wall, cpu, tasks,
                                          manifest["rows_in"]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
