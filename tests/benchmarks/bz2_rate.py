"""The clean stage on .bz2 input beside `bzip2 -dc` on the same file: the part bench_bz2.py and
bench_ladder.py's bz2 rung share.

Rates are in compressed MB (10^6 bytes of the .bz2 file) per second per core: the stage runs on
``cores`` cores, so its rate is divided by them; `bzip2 -dc` (libbz2, C) runs on one. The
figures per CPU second (compressed MB over the CPU seconds of every process involved: driver,
JVM, Python workers; for bzip2 the command itself) hold better than wall clock on a busy machine.
"""
from __future__ import annotations

import os
import resource
import subprocess
import time


def compress(plain: str, path: str, level: int = 9) -> int:
    """Write the file ``plain`` bzip2-compressed at ``level`` (blocks of level x 100 kB; 9 is
    bzip2's default) to ``path`` with the bzip2 command, streaming, so the file never sits in
    this process's memory; returns the compressed bytes."""
    with open(plain, "rb") as source, open(path, "wb") as out:
        subprocess.run(["bzip2", "-c", f"-{level}"], stdin=source, stdout=out, check=True)
    return os.path.getsize(path)


def bzip2_rate(path: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of `bzip2 -dc path > /dev/null`, best of two by wall clock."""
    best = None
    for _ in range(2):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        with open(os.devnull, "wb") as sink:
            subprocess.run(["bzip2", "-dc", path], stdout=sink, check=True)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        best = (wall, cpu) if best is None or wall < best[0] else best
    return best


def text_tasks(spark, uri: str) -> int:
    """Tasks Spark's text reader (the clean stage's reader of compressed input) splits ``uri``
    into under the session's current settings; a .bz2 file splits at bzip2 block boundaries."""
    return spark.read.text(uri).rdd.getNumPartitions()


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("nan")


def compare(compressed_bytes: int, cores: int, clean_seconds: float, clean_cpu: float,
            bzip2_seconds: float, bzip2_cpu: float, tasks: int, rows: int) -> dict:
    """The clean stage's rate on a .bz2 file beside `bzip2 -dc`'s on the same file.

    Takes the file's compressed bytes, the stage's cores, tasks and rows read, and the wall and
    CPU seconds of each side (the stage's on ``cores`` cores, bzip2's on one). Returns those
    inputs plus: ``clean_mb_per_s_per_core`` and ``bzip2_mb_per_s_per_core`` (compressed MB per
    wall second per core), ``ratio_wall`` (clean's over bzip2's, per core), ``clean_mb_per_cpu_s``
    and ``bzip2_mb_per_cpu_s`` (compressed MB per CPU second), ``ratio_cpu``, and
    ``clean_rows_per_s``. A zero time gives NaN, not an error.
    """
    mb = compressed_bytes / 1e6
    figures = {"compressed_bytes": compressed_bytes, "cores": cores, "tasks": tasks, "rows": rows,
               "clean_seconds": clean_seconds, "clean_cpu": clean_cpu,
               "bzip2_seconds": bzip2_seconds, "bzip2_cpu": bzip2_cpu,
               "clean_mb_per_s_per_core": _ratio(mb, clean_seconds * cores),
               "bzip2_mb_per_s_per_core": _ratio(mb, bzip2_seconds),
               "clean_mb_per_cpu_s": _ratio(mb, clean_cpu), "bzip2_mb_per_cpu_s": _ratio(mb, bzip2_cpu),
               "clean_rows_per_s": _ratio(rows, clean_seconds)}
    figures["ratio_wall"] = _ratio(figures["clean_mb_per_s_per_core"], figures["bzip2_mb_per_s_per_core"])
    figures["ratio_cpu"] = _ratio(figures["clean_mb_per_cpu_s"], figures["bzip2_mb_per_cpu_s"])
    return figures


def describe(f: dict) -> list[str]:
    """Three lines of text for the figures of :func:`compare`: bzip2 -dc, the clean stage, their ratios."""
    clean_side = f"clean stage ({f['cores']} cores, {f['tasks']} tasks):"
    width = max(len(clean_side), len("bzip2 -dc (1 core):"))
    return [
        f"{'bzip2 -dc (1 core):':<{width}} {f['bzip2_seconds']:7.1f} s, {f['bzip2_mb_per_s_per_core']:5.2f} compressed "
        f"MB/s per core ({f['bzip2_cpu']:.1f} CPU s, {f['bzip2_mb_per_cpu_s']:.2f} MB per CPU s)",
        f"{clean_side:<{width}} {f['clean_seconds']:7.1f} s, {f['clean_mb_per_s_per_core']:5.2f} compressed "
        f"MB/s per core ({f['clean_cpu']:.1f} CPU s, {f['clean_mb_per_cpu_s']:.2f} MB per CPU s); "
        f"{f['rows']:,} rows, {f['clean_rows_per_s']:,.0f} rows/s",
        f"clean / bzip2 -dc, per core: {f['ratio_wall']:.2f}x (wall), {f['ratio_cpu']:.2f}x (CPU); "
        f"{f['compressed_bytes'] / 1e6:,.1f} MB of bzip2",
    ]
