"""Benchmark: the scale ladder. How each stage's time and memory grow with the input, rung by rung.

    .venv/bin/python tests/benchmarks/bench_ladder.py [--rungs 1M,4M,16M,64M] [--work DIR]
                                                     [--train-rows 100000] [--bz2-rung ROWS|none] [--keep]

At each rung (rows of synthetic YFCC metadata, pipeline.synth, 25-column layout) a fresh child
process synthesizes the input, then runs the stages as `im2vec` runs them, on Spark
local[--cores] with the default memory settings (driver 4g):

    synth   pipeline.synth.write (a subprocess of the rung's process)
    parse   pyarrow's streaming CSV read of the same file: the machine's speed in the same run,
            the reference the clean stage's rows/s is divided by (as bench_clean.py does)
    clean   jobs.clean.run
    vocab   jobs.vocab.run, max_size --max-size (default: no cap, so the vocabulary grows with
            the data as on the real dump: 400k+ tags at 100M rows)
    sample  jobs.sample.run, one epoch, without features
    train   one pass of the trainer's step (model.train.make_train_step, default model, joint tag
            table) over --train-rows rows: the rung's sampled tag ids with synthetic float16
            features, against a table of the rung's vocabulary size (as bench_train.py trains
            without the features stage); its rows are fixed, so its exponent is against V

One rung, ``--bz2-rung`` (default: the smallest rung, so 1M with the default rungs; ``none``
for no bz2 rung), also runs from bzip2, the form the dump comes in, with three stages more (bz2_rate.py):

    compress   the rung's input compressed with `bzip2 -9` (its own figure, part of no other)
    bzip2-dc   `bzip2 -dc FILE > /dev/null` on that file, one core, best of two
    clean-bz2  jobs.clean.run on that file, which Spark's text reader splits across tasks at
               bzip2 block boundaries (default settings; the rung fails unless it makes 2+ tasks)

and prints compressed MB/s per core of clean-bz2 and of bzip2 -dc, their ratio, and the same
per CPU second (bench_bz2.py's figures, here in the same run as the rest of the ladder).

Per stage and rung it prints seconds, rows/s, the peak RSS of the driver (the rung's Python
process), of the Spark JVM (in local mode the driver's child and the executor) and of the
Python workers (the JVM's descendants; RSS summed, so pages the daemon shares with the workers
it forked count more than once), sampled from /proc every 0.2 s; the shuffle bytes Spark
wrote and read (the UI's REST API) and the stage's output bytes on disk. Then each stage's
growth exponent between rungs, log(time ratio) / log(rows ratio): 1 is linear; the first rung
is the baseline every ratio is taken against.

Before a rung it prints the disk the rung needs (input + outputs + shuffle, from the bytes per
row of the rung before, or an estimate; plus the .bz2 file at the bz2 rung) and refuses (exit 3) when the work folder's disk has
less. The input file is deleted once clean has read it, and each rung's data when the rung is done
(--keep keeps both). Logs and results.json stay in WORK/logs; --report prints an earlier run's tables.
Not a pytest module.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks import bz2_rate, cputime  # noqa: E402

STAGES = ["synth", "parse", "clean", "vocab", "sample", "train"]
BZ2_STAGES = ["compress", "bzip2-dc", "clean-bz2"]   # the bz2 rung's, beside clean; no exponents
EVENT = "LADDER "                 # prefix of the child's event lines on stdout
# Disk a rung needs per input row before one has been measured. The peak is at the end of clean:
# input 463 B + clean 160 B per row (measured at 1M and 4M rows), then the input is deleted; later
# stages add ~40 B per row (tagged, one epoch, shuffle files) and a fixed ~250 MB (the train epoch).
BYTES_PER_ROW_GUESS = 700
# The bz2 rung's .bz2 file, there until clean-bz2 is done: ~120 B per row at bzip2 -9 (the
# generator's rows, 200k and 400k rows), with a margin.
BZ2_BYTES_PER_ROW = 140
SAFETY = 1.1                      # margin on a measured bytes-per-row figure (100M rows: ~68 GB)
SAMPLE_SECONDS = 0.2


def parse_rows(text: str) -> int:
    """'4M' -> 4_000_000, '250k' -> 250_000, '1000' -> 1000."""
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def label(rows: int) -> str:
    return f"{rows / 1e6:g}M" if rows >= 1_000_000 else f"{rows / 1e3:g}k"


# ----------------------------------------------------------------------------- /proc sampling


def tree_memory(table: dict[int, cputime.Process], root: int) -> dict[str, int]:
    """Resident bytes of ``root`` (the driver), of its java descendants (the JVM) and of the
    JVM's descendants (Python workers and their daemon); other descendants (the synth
    subprocess) count as ``other``. ``table``: one look at /proc (cputime.process_table)."""
    children = cputime.children(table)
    memory = {"driver": table[root].rss if root in table else 0, "jvm": 0, "workers": 0, "other": 0}
    frontier = [(pid, "other") for pid in children.get(root, [])]
    while frontier:
        pid, kind = frontier.pop()
        if kind == "other" and table[pid].name == "java":
            kind = "jvm"
        memory[kind] += table[pid].rss
        below = "workers" if kind in ("jvm", "workers") else "other"
        frontier += [(child, below) for child in children.get(pid, [])]
    return memory


class Sampler(threading.Thread):
    """Samples the rung process tree every SAMPLE_SECONDS: ``peaks[stage]`` keeps the largest memory
    of each kind seen while ``stage`` was the current one, ``cpu`` every process's CPU time, kept
    after it exits (cputime.TreeCpu: Python workers come and go within a stage)."""

    def __init__(self, root: int):
        super().__init__(daemon=True)
        self.root, self.stage, self.peaks, self.running = root, None, {}, True
        self.cpu = cputime.TreeCpu(root)

    def cpu_seconds(self) -> float:
        """The tree's CPU seconds so far, from a sample taken now."""
        self.cpu.sample()
        return self.cpu.seconds()

    def run(self) -> None:
        while self.running:
            stage = self.stage
            table = self.cpu.sample()
            if stage is not None:
                peak = self.peaks.setdefault(stage, {})
                for kind, value in tree_memory(table, self.root).items():
                    peak[kind] = max(peak.get(kind, 0), value)
            time.sleep(SAMPLE_SECONDS)


def folder_bytes(path: str | Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


# ----------------------------------------------------------------------------- parent


def run_rung(args, rows: int, work: Path, logs: Path) -> list[dict]:
    """Run one rung in a child process; returns one record per stage (see :func:`child_main`)."""
    rung_dir = work / f"rung-{label(rows)}"
    shutil.rmtree(rung_dir, ignore_errors=True)
    rung_dir.mkdir(parents=True)
    log = logs / f"rung-{label(rows)}.log"
    command = [sys.executable, __file__, "--child", str(rows), "--work", str(rung_dir),
               "--cores", str(args.cores), "--train-rows", str(args.train_rows), "--max-size", str(args.max_size),
               "--seed", str(args.seed), *(["--keep"] if args.keep else []),
               *(["--bz2-child"] if rows == args.bz2_rung else [])]
    records, peak_disk = [], 0
    with open(log, "w") as err:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1,
                                 env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        sampler = Sampler(child.pid)
        sampler.start()
        for line in child.stdout:
            if not line.startswith(EVENT):
                print(f"    | {line.rstrip()}", flush=True)
                continue
            event = json.loads(line[len(EVENT):])
            if event["event"] == "start":
                sampler.stage = event["stage"]
                cpu_started = sampler.cpu_seconds()
                print(f"  {time.strftime('%H:%M:%S')} {label(rows)}: {event['stage']} ...", flush=True)
                continue
            time.sleep(SAMPLE_SECONDS)              # one more sample of the stage's end
            sampler.stage = None
            peak_disk = max(peak_disk, folder_bytes(rung_dir), event.get("disk", 0))
            # bzip2-dc reports its own CPU seconds (of its best run, as its wall seconds)
            cpu = event["cpu"] if "cpu" in event else sampler.cpu_seconds() - cpu_started
            record = {**event, "rung": rows, "cores": args.cores, "cpu": cpu,
                      **{f"rss_{k}": v for k, v in sampler.peaks.get(event["stage"], {}).items()}}
            records.append(record)
            print(f"  {time.strftime('%H:%M:%S')} {label(rows)}: {format_record(record)}", flush=True)
        sampler.running = False
        code = child.wait()
    if code != 0:
        tail = log.read_text(errors="replace").splitlines()[-30:]
        print("\n".join(f"    ! {line}" for line in tail))
        raise SystemExit(f"rung {label(rows)} failed (exit {code}); log: {log}")
    if not args.keep:
        shutil.rmtree(rung_dir, ignore_errors=True)
    for record in records:
        record["disk_peak"] = peak_disk
    figures = bz2_figures(records)
    if figures:
        next(r for r in records if r["stage"] == "clean-bz2")["bz2"] = figures   # into results.json
        print("\n".join(f"  {label(rows)} bz2: {line}" for line in bz2_rate.describe(figures)), flush=True)
    return records


def bz2_figures(records: list[dict]) -> dict | None:
    """bz2_rate.compare's figures from a rung's clean-bz2 and bzip2-dc records; None for a rung without them."""
    by = {r["stage"]: r for r in records}
    clean, bzip2 = by.get("clean-bz2"), by.get("bzip2-dc")
    if not clean or not bzip2:
        return None
    return bz2_rate.compare(clean["compressed_bytes"], clean["cores"], clean["seconds"], clean["cpu"],
                            bzip2["seconds"], bzip2["cpu"], clean["tasks"], clean["rows"])


def format_record(r: dict) -> str:
    mb = 2 ** 20
    return (f"{r['stage']:<9} {r['seconds']:8.1f}s {r.get('cpu', 0):8.1f} CPU-s {r['rows'] / max(r['seconds'], 1e-9):>11,.0f} rows/s  "
            f"RSS driver {r.get('rss_driver', 0) / mb:6,.0f} MB, JVM {r.get('rss_jvm', 0) / mb:6,.0f} MB, "
            f"workers {r.get('rss_workers', 0) / mb:6,.0f} MB, other {r.get('rss_other', 0) / mb:5,.0f} MB; "
            f"shuffle w/r {r.get('shuffle_write', 0) / mb:,.0f}/{r.get('shuffle_read', 0) / mb:,.0f} MB; "
            f"output {r.get('output_bytes', 0) / mb:,.0f} MB"
            + (f"; {r['note']}" if r.get("note") else ""))


def exponent(a: dict, b: dict, x: str, time: str = "seconds") -> float:
    """log(time ratio) / log(x ratio) between records a and b (x = 'rows' of the rung or 'vocab';
    time = 'seconds' (wall clock) or 'cpu' (CPU seconds of the rung's process tree))."""
    xa, xb = (a["rung"], b["rung"]) if x == "rows" else (a["vocab_size"], b["vocab_size"])
    if xa == xb or min(a.get(time, 0), b.get(time, 0)) <= 0:
        return float("nan")
    return math.log(b[time] / a[time]) / math.log(xb / xa)


def summary(results: dict[int, list[dict]]) -> None:
    """Print the ladder's table, the exponents between rungs and the ratios to the first rung."""
    rungs = sorted(results)
    by = {rows: {r["stage"]: r for r in results[rows]} for rows in rungs}
    mb = 2 ** 20
    print("\nscale ladder (wall seconds | CPU seconds of the rung's processes | rows/s (wall) | peak RSS MB "
          "driver/JVM/workers | shuffle write MB | output MB)")
    print(f"{'rung':>6} {'stage':<10}{'seconds':>9}{'CPU-s':>8}{'rows/s':>12}{'driver':>8}{'JVM':>7}{'workers':>8}"
          f"{'shuffle':>9}{'output':>9}")
    for rows in rungs:
        for stage in STAGES + BZ2_STAGES:
            r = by[rows].get(stage)
            if r is None:
                continue
            print(f"{label(rows):>6} {stage:<10}{r['seconds']:9.1f}{r.get('cpu', 0):8.1f}"
                  f"{r['rows'] / max(r['seconds'], 1e-9):12,.0f}"
                  f"{r.get('rss_driver', 0) / mb:8,.0f}{r.get('rss_jvm', 0) / mb:7,.0f}"
                  f"{r.get('rss_workers', 0) / mb:8,.0f}{r.get('shuffle_write', 0) / mb:9,.0f}"
                  f"{r.get('output_bytes', 0) / mb:9,.0f}")
        vocab = by[rows].get("vocab", {})
        clean, parse = by[rows].get("clean"), by[rows].get("parse")
        ratio = f", clean / pyarrow parse {parse['seconds'] / clean['seconds']:.2f}x" if clean and parse else ""
        print(f"{'':>6} distinct tags {vocab.get('distinct_tags', 0):,}, vocabulary {vocab.get('vocab_size', 0):,}, "
              f"disk peak {results[rows][0]['disk_peak'] / 2 ** 30:.1f} GiB{ratio}")
        figures = bz2_figures(results[rows])
        if figures:
            print("\n".join(f"{'':>6} bz2: {line}" for line in bz2_rate.describe(figures)))
    if len(rungs) < 2:
        return
    pairs = list(zip(rungs, rungs[1:])) + ([(rungs[0], rungs[-1])] if len(rungs) > 2 else [])
    print("\ngrowth exponents: log(time ratio) / log(rows ratio) (train: / log(vocabulary ratio)); "
          "1.0 = linear; wall clock / CPU time, driver RSS ratio in brackets")
    print(f"{'stage':<8}" + "".join(f"{label(a) + '->' + label(b):>22}" for a, b in pairs))
    for stage in STAGES:
        cells = []
        for a, b in pairs:
            ra, rb = by[a].get(stage), by[b].get(stage)
            if not ra or not rb:
                cells.append(f"{'-':>22}")
                continue
            if stage == "train":
                ra, rb = {**ra, "vocab_size": by[a]["vocab"]["vocab_size"]}, {**rb, "vocab_size": by[b]["vocab"]["vocab_size"]}
            x = "vocab" if stage == "train" else "rows"
            cells.append(f"{exponent(ra, rb, x):>9.2f} /{exponent(ra, rb, x, 'cpu'):5.2f} "
                         f"({rb.get('rss_driver', 0) / max(ra.get('rss_driver', 1), 1):.2f}x)")
        print(f"{stage:<8}" + "".join(cells))
    top, below = rungs[-1], rungs[-2]
    cores = args_cores(results)
    print(f"\nprojected to 100M rows from the {label(top)} rung: time x (100M / {label(top)}) ** max(1, CPU-time exponent "
          f"{label(below)}->{label(top)}); 'idle' = the rung's CPU seconds spread over the cores (what an otherwise "
          "idle machine would take if the stage kept every core busy); N cores assumes the stage scales with cores "
          "(bench_scale: clean 1.97x from 1 to 2 workers)")
    for stage in ("clean", "vocab", "sample"):
        ra, rb = by[below].get(stage), by[top].get(stage)
        if not ra or not rb:
            continue
        measured = exponent(ra, rb, "rows", "cpu")      # CPU time: what a shared machine skews least
        e = max(1.0, measured if measured == measured else exponent(ra, rb, "rows"))
        wall, idle = (rb[key] * (100e6 / top) ** e / 60 for key in ("seconds", "cpu"))
        print(f"  {stage:<7} exponent {e:.2f}: {wall:7.1f} min wall as measured on {cores} cores; idle: "
              f"{idle / cores:6.1f} min on {cores} cores, {idle / 64:5.1f} min on 64")
    base = rungs[0]
    print(f"\nrows/s against the first rung ({label(base)}, the baseline; 1.0 = linear time):")
    for stage in STAGES:
        if stage == "train":
            continue
        cells = []
        for rows in rungs[1:]:
            ra, rb = by[base].get(stage), by[rows].get(stage)
            cells.append(f"{label(rows)} {rb['rows'] / rb['seconds'] / (ra['rows'] / ra['seconds']):.2f}x"
                         if ra and rb else f"{label(rows)} -")
        print(f"  {stage:<7} " + ", ".join(cells))


def args_cores(results: dict) -> int:
    return next(iter(results.values()))[0].get("cores", os.cpu_count() or 2)


def disk_needed(rows: int, bytes_per_row: float, bz2: bool = False) -> int:
    """Bytes of disk a rung of ``rows`` needs at ``bytes_per_row`` (input, outputs, shuffle),
    plus the .bz2 file's BZ2_BYTES_PER_ROW when it is the bz2 rung."""
    return int(rows * (bytes_per_row + (BZ2_BYTES_PER_ROW if bz2 else 0)))


def plain_disk(records: list[dict]) -> int:
    """A finished rung's disk peak plus its shuffle bytes, less its .bz2 file if it had one: what
    a rung of plain input needs, the next rung's estimate."""
    compressed = sum(r.get("output_bytes", 0) for r in records if r["stage"] == "compress")
    return records[0]["disk_peak"] + max(r.get("shuffle_write", 0) for r in records) - compressed


def bz2_rung(parser, args, rungs: list[int]) -> int:
    """The rows of the bz2 rung from ``--bz2-rung`` (default: the smallest rung); 0 for 'none'."""
    if (args.bz2_rung or "").lower() == "none":
        return 0
    rows = parse_rows(args.bz2_rung) if args.bz2_rung else rungs[0]
    if rows not in rungs:
        parser.error(f"--bz2-rung {args.bz2_rung} is not one of --rungs {args.rungs}")
    if args.cores < 2:
        parser.error("--bz2-rung needs --cores 2 or more (it measures bz2 input split across tasks); 'none' skips it")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rungs", default="1M,4M,16M,64M", help="comma-separated rows per rung, e.g. 1M,4M,100M")
    parser.add_argument("--work", default=None, help="work folder (default: a new one under the temp dir)")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--train-rows", type=int, default=100_000)
    parser.add_argument("--max-size", type=int, default=100_000_000, help="vocab max_size (default: no cap)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--bz2-rung", default=None,
                        help="the rung that also runs from bzip2, one of --rungs (default: the smallest); 'none': no bz2 rung")
    parser.add_argument("--keep", action="store_true", help="keep each rung's data")
    parser.add_argument("--report", default=None, help="print the tables of an earlier run's results.json and exit")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--bz2-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        from tests.benchmarks.ladder_rung import child_main

        return child_main(args)

    if args.report:
        saved = json.loads(Path(args.report).read_text())
        summary({parse_rows(rung): records for rung, records in saved.items()})
        return 0
    work = Path(args.work or tempfile.mkdtemp(prefix="im2vec-ladder-"))
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    rungs = sorted(parse_rows(r) for r in args.rungs.split(","))
    args.bz2_rung = bz2_rung(parser, args, rungs)
    print(f"scale ladder: rungs {', '.join(map(label, rungs))}; bz2 rung {label(args.bz2_rung) if args.bz2_rung else 'none'}; "
          f"local[{args.cores}], driver memory as configured "
          f"(defaults.yaml); train {args.train_rows:,} rows; work {work}; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores", flush=True)
    results, bytes_per_row = {}, BYTES_PER_ROW_GUESS
    for rows in rungs:
        needed = disk_needed(rows, bytes_per_row, bz2=rows == args.bz2_rung)
        free = shutil.disk_usage(work).free
        bz2_file = f" + {BZ2_BYTES_PER_ROW} for the .bz2 file" if rows == args.bz2_rung else ""
        print(f"rung {label(rows)}: needs ~{needed / 2 ** 30:.1f} GiB of disk ({bytes_per_row:,.0f}{bz2_file} B/row), "
              f"{free / 2 ** 30:.1f} GiB free", flush=True)
        if needed > free:
            print(f"rung {label(rows)}: refused, not enough disk under {work}; the ladder stops here")
            summary(results)
            return 3
        started = time.time()
        results[rows] = run_rung(args, rows, work, logs)
        # Spark's shuffle files live in its local dir, outside the rung folder: counted as written.
        bytes_per_row = SAFETY * plain_disk(results[rows]) / rows
        print(f"rung {label(rows)} done in {time.time() - started:.0f}s; load average {os.getloadavg()[0]:.1f}",
              flush=True)
        (logs / "results.json").write_text(json.dumps({label(k): v for k, v in results.items()}, indent=1))
    summary(results)
    print(f"\nrecords: {logs / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
