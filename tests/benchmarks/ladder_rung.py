"""One rung of bench_ladder.py, in its own process: synth, parse, clean, vocab, sample, train
(and at the bz2 rung compress, bzip2-dc and clean-bz2 too).

Run by bench_ladder.py (``--child ROWS --work DIR``), never by hand. Each stage prints a start
and an end event (``LADDER {json}``) on stdout; the parent samples this process tree's memory
between them. A fresh process per rung gives every rung a fresh driver and JVM, so one rung's
heap does not carry into the next one's peaks.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EVENT = "LADDER "


def emit(**event) -> None:
    print(EVENT + json.dumps(event), flush=True)


def folder_bytes(*paths) -> int:
    total = 0
    for path in paths:
        for folder, _, files in os.walk(path):
            total += sum(os.lstat(os.path.join(folder, name)).st_size for name in files)
    return total


def shuffle_totals(spark) -> tuple[int, int]:
    """(shuffle bytes written, read) by every stage of this application so far, from the UI's REST API;
    (0, 0) when the UI is off or does not answer."""
    context = spark.sparkContext
    if not context.uiWebUrl:
        return 0, 0
    time.sleep(0.5)     # the UI's listener catches up with the last job's task ends
    url = f"{context.uiWebUrl}/api/v1/applications/{context.applicationId}/stages"
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            stages = json.load(answer)
    except OSError as err:
        print(f"shuffle bytes unavailable: {err}", file=sys.stderr)
        return 0, 0
    return (sum(s.get("shuffleWriteBytes", 0) for s in stages), sum(s.get("shuffleReadBytes", 0) for s in stages))


def synthesize(path: Path, rows: int, seed: int) -> dict:
    """pipeline.synth.write in a subprocess (its memory is not the driver's); returns its counts."""
    code = ("import json, sys; from pipeline import synth; "
            "print(json.dumps(synth.write(sys.argv[1], int(sys.argv[2]), layout=25, seed=int(sys.argv[3]))))")
    out = subprocess.run([sys.executable, "-c", code, str(path), str(rows), str(seed)], cwd=REPO,
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def pyarrow_rows(path: Path) -> int:
    """Rows of the TSV read by pyarrow's streaming multithreaded CSV reader into string columns."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from pipeline import yfcc

    names = yfcc.LAYOUTS[25]
    reader = pacsv.open_csv(
        str(path), read_options=pacsv.ReadOptions(column_names=names, use_threads=True, block_size=16 << 20),
        parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False, escape_char=False,
                                         newlines_in_values=False, invalid_row_handler=lambda row: "skip"),
        convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names}))
    return sum(batch.num_rows for batch in reader)


def training_epoch(folder: Path, pos_ids, neg_ids, feature_dim: int, seed: int = 0) -> None:
    """An epoch folder as the sample stage writes one with features: the given tag ids, synthetic
    float16 features (CNN-like: >= 0, skewed), 32 MiB row groups."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs import sample

    rows, positives = pos_ids.shape
    negatives = neg_ids.shape[1]
    feature = np.random.default_rng(seed).gamma(1.0, 0.5, size=(rows, feature_dim)).astype(np.float16)
    folder.mkdir(parents=True)
    row_group = (32 << 20) // (2 * feature_dim + 4 * (positives + negatives) + 8)
    table = pa.table({
        "photo_id": pa.array(np.arange(rows, dtype=np.int64)),
        "feature": pa.Array.from_buffers(pa.binary(), rows, [
            None, pa.py_buffer(np.arange(rows + 1, dtype=np.int32) * 2 * feature_dim), pa.py_buffer(feature)]),
        "pos_ids": pa.ListArray.from_arrays(pa.array(np.arange(rows + 1, dtype=np.int32) * positives),
                                            pa.array(pos_ids.ravel())),
        "neg_ids": pa.ListArray.from_arrays(pa.array(np.arange(rows + 1, dtype=np.int32) * negatives),
                                            pa.array(neg_ids.ravel())),
    })
    pq.write_table(table, folder / "part-00000.parquet", row_group_size=row_group,
                   compression=sample.column_compression(table.schema))


def train_pass(work: Path, epoch_folder: str, vocab_size: int, train_rows: int) -> dict:
    """One pass of the trainer's step over ``train_rows`` rows of the rung's sampled ids with a
    joint tag table of ``vocab_size`` rows; returns seconds of the pass and of building the model."""
    import pyarrow.dataset as ds

    from model import data, memory
    from tests.benchmarks import bench_train

    memory.keep_freed_memory()
    head = ds.dataset(epoch_folder, format="parquet").head(train_rows, columns=["pos_ids", "neg_ids"])
    rows = head.num_rows
    pos_ids = head.column("pos_ids").combine_chunks().flatten().to_numpy().reshape(rows, -1)
    neg_ids = head.column("neg_ids").combine_chunks().flatten().to_numpy().reshape(rows, -1)
    folder = work / "train" / "epoch=00001"
    training_epoch(folder, pos_ids, neg_ids, bench_train.D)
    started = time.time()
    step = bench_train.model(vocab_size, [1024], tag_learning_rate=0.05)
    built = time.time() - started
    dataset = data.epoch_dataset("file://" + str(folder), feature_dim=bench_train.D, positives=pos_ids.shape[1],
                                 negatives=neg_ids.shape[1], batch_size=bench_train.BATCH, seed=0)
    rate, _ = bench_train.timed(step, dataset)
    return {"rows": rows, "seconds": rows / rate, "build_seconds": built,
            "output_bytes": folder_bytes(work / "train")}


def stop_jvm(spark) -> None:
    """Stop Spark and its JVM (spark.stop() leaves pyspark's gateway JVM running, which would
    count in the next stage's memory)."""
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    spark.stop()
    if gateway is not None and getattr(gateway, "proc", None) is not None:
        gateway.shutdown()
        gateway.proc.stdin.close()      # the gateway server exits when its stdin closes
        try:
            gateway.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            gateway.proc.kill()
    SparkContext._gateway = SparkContext._jvm = None


def timed_stage(spark, work: Path, name: str, body, outputs: list[Path], rows_of, **fields) -> dict:
    """Run ``body`` (a stage's run, returning its manifest) between a start and an end event; the
    end event says its rows (``rows_of(manifest)``), seconds, the rung folder's bytes, the shuffle
    bytes, the bytes of ``outputs``, the manifest's distinct_tags and vocab_size, and ``fields``."""
    emit(event="start", stage=name)
    before = shuffle_totals(spark)
    started = time.time()
    manifest = body()
    seconds = time.time() - started
    after = shuffle_totals(spark)
    extra = {**{key: manifest[key] for key in ("distinct_tags", "vocab_size") if key in manifest}, **fields}
    emit(event="end", stage=name, rows=rows_of(manifest), seconds=seconds, disk=folder_bytes(work),
         shuffle_write=after[0] - before[0], shuffle_read=after[1] - before[1],
         output_bytes=folder_bytes(*outputs), **extra,
         note=", ".join(f"{k} {v:,}" for k, v in extra.items()))
    return manifest


def bz2_reference(spark, metadata: Path, compressed: Path, rows: int) -> tuple[int, int]:
    """The bz2 rung's compress and bzip2-dc stages: ``metadata`` written to ``compressed`` with
    bzip2 -9, then `bzip2 -dc` timed on it. Returns (compressed bytes, the tasks Spark's text
    reader splits it into); fails the rung (SystemExit) before timing anything on it when that is
    one task, as the rung measures bz2 input split across tasks."""
    from tests.benchmarks import bz2_rate

    emit(event="start", stage="compress")
    started = time.time()
    size = bz2_rate.compress(str(metadata), str(compressed))
    emit(event="end", stage="compress", rows=rows, seconds=time.time() - started, output_bytes=size,
         note=f"{metadata.stat().st_size / 1e6:,.0f} MB -> {size / 1e6:,.1f} MB with bzip2 -9")
    tasks = bz2_rate.text_tasks(spark, "file://" + str(compressed))
    if tasks < 2:
        raise SystemExit(f"bz2 rung: Spark reads {compressed.name} ({size / 1e6:.1f} MB) as {tasks} task, "
                         "not split; choose a bigger --bz2-rung")
    emit(event="start", stage="bzip2-dc")
    wall, cpu = bz2_rate.bzip2_rate(str(compressed))
    emit(event="end", stage="bzip2-dc", rows=rows, seconds=wall, cpu=cpu, compressed_bytes=size, output_bytes=0,
         note="1 core, best of two")
    return size, tasks


def child_main(args) -> int:
    """Run one rung (args.child rows) in args.work; see bench_ladder.py."""
    sys.path.insert(0, str(REPO))
    from pipeline import config as configuration, storage
    from pipeline.spark import session

    rows, work = args.child, Path(args.work)
    metadata, root = work / "yfcc.tsv", "file://" + str(work / "run")
    run = work / "run"

    emit(event="start", stage="synth")
    started = time.time()
    counts = synthesize(metadata, rows, args.seed)
    emit(event="end", stage="synth", rows=rows, seconds=time.time() - started,
         output_bytes=metadata.stat().st_size, note=f"{counts['untagged']:,} untagged")

    emit(event="start", stage="parse")
    started = time.time()
    parsed = pyarrow_rows(metadata)
    emit(event="end", stage="parse", rows=parsed, seconds=time.time() - started, output_bytes=0)

    config = configuration.load(overrides=[f"master=local[{args.cores}]", "spark.ui.enabled=true",
                                           f"max_size={args.max_size}"])
    spark = session(config, f"im2vec ladder {rows:,}")
    from jobs import clean, sample, vocab

    # Warm-up: start the JVM's and Python workers' modules on a small file, as the other benchmarks do.
    warm = work / "warm.tsv"
    synthesize(warm, 20_000, args.seed + 1)
    clean.run(spark, config, "file://" + str(work / "warm"), [str(warm)])

    def stage(name: str, body, outputs: list[str], rows_of, folder: Path = run, **fields) -> dict:
        return timed_stage(spark, work, name, body, [folder / o for o in outputs], rows_of, **fields)

    compressed = work / "yfcc.tsv.bz2"
    if args.bz2_child:
        size, tasks = bz2_reference(spark, metadata, compressed, rows)
    cleaned = stage("clean", lambda: clean.run(spark, config, root, [str(metadata)]), ["clean", "rejects"],
                    lambda m: m["rows_in"])
    if not args.keep:
        metadata.unlink()     # read by clean only: the rung's disk peak is then input + clean, not input + all
    if args.bz2_child:
        bz2_run = work / "run-bz2"
        from_bz2 = stage("clean-bz2", lambda: clean.run(spark, config, "file://" + str(bz2_run), [str(compressed)]),
                         ["clean", "rejects"], lambda m: m["rows_in"], folder=bz2_run, tasks=tasks, compressed_bytes=size)
        if from_bz2["rows_in"] != cleaned["rows_in"]:
            raise SystemExit(f"bz2 rung: clean read {from_bz2['rows_in']:,} rows from the .bz2 file, "
                             f"{cleaned['rows_in']:,} from the plain one")
        if not args.keep:
            compressed.unlink()
            storage.delete("file://" + str(bz2_run))
    vocab_manifest = stage("vocab", lambda: vocab.run(spark, config, root), ["vocab", "tagged", "zero_shot"],
                           lambda m: m["rows_in"])
    stage("sample", lambda: sample.run(spark, config, root, (1, 1)), ["epochs"], lambda m: m["rows_in"])
    stop_jvm(spark)

    emit(event="start", stage="train")
    result = train_pass(work, str(run / "epochs" / "epoch=00001"), vocab_manifest["vocab_size"], args.train_rows)
    emit(event="end", stage="train", rows=result["rows"], seconds=result["seconds"], output_bytes=result["output_bytes"],
         vocab_size=vocab_manifest["vocab_size"],
         note=f"V {vocab_manifest['vocab_size']:,}, model built in {result['build_seconds']:.1f}s")
    storage.delete(root)
    return 0
