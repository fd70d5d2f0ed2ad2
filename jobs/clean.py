"""clean: raw YFCC metadata (plain or .bz2, 23- or 25-column layout) -> clean/ and rejects/clean/.

One Spark job: a task per byte range reads its lines (Spark's text reader only for compressed
files), parses whole batches of them (pipeline.yfcc.parse_lines: numba kernels over the raw
bytes, pipeline.yfcc_scan, then pyarrow for tags and types) and writes the clean rows and
its rejects straight to Parquet with pyarrow: handing 100M parsed rows back to the JVM only to
write them again would cost more than the parse. What returns to Spark is one stats row per
task; from those the driver numbers the rejects' lines (rejects/clean/), commits the tasks'
files and writes the manifest.

    rows read = rows kept (clean/) + rows rejected (rejects/clean/) + videos
"""
from __future__ import annotations

import json
import sys
import time
from functools import partial, reduce
from typing import Iterator, NamedTuple
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from py4j.protocol import Py4JJavaError
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.utils import AnalysisException

from pipeline import (Im2vecError, config as configuration, hashes as photo_hashes, spark as spark_session, storage,
                      tags as tagging, yfcc, yfcc_scan)
from pipeline.datasets import clean as clean_data, rejects as rejects_data

DETECT_LINES = 50
DETECT_BYTES = 1 << 20       # at most this much of a file's head is read to detect its layout
# Lines per parse call. Each call also works once on its distinct tags and nicknames (normalizing,
# noise rules, owner spellings), which repeat from chunk to chunk: 100k lines (~50 MB) cost 7%
# less CPU than 50k, while 300k save nothing more and triple the memory.
CHUNK_LINES = 100_000
NEWLINE = ord("\n")
# Spark's text reader splits these (bz2 at block boundaries); tasks read the other files themselves.
COMPRESSED = (".bz2", ".gz", ".deflate", ".zst", ".lz4", ".snappy")
ROW_GROUP_ROWS = 131072
# Measured on clean rows (257k, 136 MB in memory): the write is ~40% of a task's CPU. lz4 takes
# 7-13% less of it than zstd at level 1 (0.35 s against 0.38-0.44 s; zstd at levels -1 to -5
# about as fast as lz4, snappy no faster than zstd) for files 28% larger (54 MB against 42.5),
# which readers decompress faster too. Dictionaries only pay on repetitive columns, and
# statistics only on columns that queries filter by. Ids, timestamps and hex digests shrink by at
# most half, and compressing them cost ~15% of the write, so they are stored uncompressed.
UNCOMPRESSED = ("photo_id", "hash", "date_taken", "date_uploaded", "secret", "secret_original")
_LEAVES = [f.name + ".list.element" if pa.types.is_list(f.type) else f.name for f in yfcc.CLEAN_SCHEMA]
PARQUET_OPTIONS = dict(
    compression={leaf: "none" if leaf in UNCOMPRESSED else "lz4" for leaf in _LEAVES},
    use_dictionary=["user_id", "user_nickname", "capture_device", "tags.list.element", "machine_tags.list.element",
                    "license_name", "license_url", "server_id", "farm_id", "extension_original"],
    write_statistics=["photo_id", "user_id", "date_taken", "date_uploaded", "longitude", "latitude"])

# A task's reject rows as it writes them (lines numbered within their byte range) ...
SPLIT_REJECTS = pa.schema([
    ("source_file", pa.string()),
    ("block_start", pa.int64()),      # the byte range's first byte in source_file
    ("row_in_block", pa.int64()),     # 0-based line index within that range
    ("reason", pa.string()),
    ("raw", pa.string()),
])
# ... and rejects/clean/ as the driver rewrites them.
REJECTS = pa.schema([("source_file", pa.string()), ("line_number", pa.int64()), ("reason", pa.string()),
                     ("raw", pa.string())])


def file_uri(path: str) -> str:
    """One spelling per file: Spark says ``file:/x`` in one place and ``file:///x`` in another."""
    parsed = urlparse(path)
    if parsed.scheme in ("", "file"):
        return "file://" + parsed.path
    return path


def input_files(spark: SparkSession, inputs: list[str]) -> list[str]:
    """Expand files, folders and globs to the list of files Spark will read (URIs, sorted)."""
    uris = [storage.to_uri(p) for p in inputs]
    try:
        files = spark.read.text(uris).inputFiles()
    except AnalysisException as err:
        raise Im2vecError(f"cannot read input {', '.join(inputs)}: {err.desc.splitlines()[0]}") from None
    except Py4JJavaError as err:   # e.g. s3a:// without hadoop-aws on the classpath
        raise spark_session.missing_filesystem(err, uris) or err
    if not files:
        raise Im2vecError(f"no input files found in {', '.join(inputs)}")
    return sorted(file_uri(f) for f in files)


def detect_layouts(spark: SparkSession, files: list[str]) -> dict[str, int]:
    """{file URI: 23 or 25}, from each file's first lines; a file of neither layout fails the job.

    The driver reads an uncompressed file's head itself; a compressed one takes a small Spark job.
    """
    return {f: yfcc.detect_layout(_head_lines(spark, f), f) for f in files}


def _head_lines(spark: SparkSession, uri: str) -> list[str]:
    if uri.endswith(COMPRESSED):
        return [r.value for r in spark.read.text(uri).limit(DETECT_LINES).collect()]
    fs, path = storage.filesystem(uri)
    with fs.open_input_file(path) as f:
        head = f.read(DETECT_BYTES)
        complete = len(head) < DETECT_BYTES
    lines = head.decode("utf-8", "replace").split("\n")
    if not complete:
        lines = lines[:-1]   # cut off mid-line
    return [line.rstrip("\r") for line in lines[:DETECT_LINES]]


class Chunk(NamedTuple):
    """Raw lines handed to :func:`clean_chunks`, with where each came from."""
    lines: pa.StringArray      # string[n], a line may keep its terminator
    files: list[str]           # distinct source file URIs of this chunk
    file_code: np.ndarray      # int[n], index into files
    block_start: np.ndarray    # int64[n], first byte of the line's byte range
    row_in_block: np.ndarray   # int64[n], 0-based line index within that range


def clean_chunks(chunks: Iterator[Chunk], *, layouts: dict[str, int], staging_clean: str,
                 staging_range_rejects: str, options: dict, lines_per_block: dict) -> Iterator[pa.RecordBatch]:
    """The task body shared by both readers: parse chunks, write clean rows and rejects, yield
    one ``stats`` row (JSON) for the driver.

    Clean rows and rejects (:data:`SPLIT_REJECTS`) go to one Parquet file each per task attempt
    (:func:`pipeline.storage.attempt_file`), which no reader takes for data until the driver
    commits it; the stats name them (``files``, ``rejects_files``). The rejects still number their
    lines within their byte range; the driver, once every task has counted its ranges' lines
    (``lines_per_block``, {(file, range start): lines}, filled by the chunk producer), rewrites
    them with line numbers (:func:`write_rejects`).
    """
    from pyspark import TaskContext

    ctx = TaskContext.get()
    name = storage.attempt_file(ctx.partitionId(), ctx.taskAttemptId())
    fs, folder = storage.filesystem(staging_clean)
    rejects_fs, rejects_folder = storage.filesystem(staging_range_rejects)
    writer, rejects_writer, pending, pending_rows = None, None, [], 0
    stats = {"rows_read": 0, "rows_kept": 0, "videos": 0, "reasons": {}, "dropped_tags": {}}
    from pipeline import progress

    counter = progress.task_counter("rows")   # the driver's progress line, while the task runs

    def flush():
        nonlocal writer, pending, pending_rows
        if not pending:
            return
        if writer is None:
            writer = pq.ParquetWriter(f"{folder}/{name}", yfcc.CLEAN_SCHEMA, filesystem=fs, **PARQUET_OPTIONS)
        writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
        pending, pending_rows = [], 0

    for chunk in chunks:
        stats["rows_read"] += len(chunk.lines)
        counter.add(len(chunk.lines))
        layout_of_row = np.array([layouts[f] for f in chunk.files])[chunk.file_code]
        for layout in np.unique(layout_of_row):
            rows = np.flatnonzero(layout_of_row == layout)
            lines = chunk.lines if len(rows) == len(chunk.lines) else chunk.lines.take(pa.array(rows))
            parsed = yfcc.parse_lines(lines, int(layout), **options)
            pending.append(parsed["clean"])
            pending_rows += parsed["clean"].num_rows
            stats["rows_kept"] += parsed["clean"].num_rows
            stats["videos"] += parsed["videos"]
            for rule, count in parsed["dropped_tags"].items():
                stats["dropped_tags"][rule] = stats["dropped_tags"].get(rule, 0) + count
            for reason in parsed["reasons"]:
                stats["reasons"][reason] = stats["reasons"].get(reason, 0) + 1
            if len(parsed["rejected"]):
                at = rows[parsed["rejected"]]
                if rejects_writer is None:
                    rejects_writer = pq.ParquetWriter(f"{rejects_folder}/{name}", SPLIT_REJECTS,
                                                      filesystem=rejects_fs, compression="zstd")
                rejects_writer.write_batch(pa.RecordBatch.from_arrays([
                    pa.array(np.array(chunk.files, dtype=object)[chunk.file_code[at]], pa.string()),
                    pa.array(chunk.block_start[at], pa.int64()), pa.array(chunk.row_in_block[at], pa.int64()),
                    pa.array(parsed["reasons"], pa.string()),
                    pc.utf8_rtrim(lines.take(pa.array(parsed["rejected"])), "\r\n")], schema=SPLIT_REJECTS))
        if pending_rows >= ROW_GROUP_ROWS:
            flush()
    flush()
    for file in (writer, rejects_writer):
        if file is not None:
            file.close()
    counter.close()
    stats["files"] = [name] if writer is not None else []
    stats["rejects_files"] = [name] if rejects_writer is not None else []
    stats["blocks"] = [[f, b, c] for (f, b), c in lines_per_block.items()]
    yield pa.RecordBatch.from_arrays([pa.array([json.dumps(stats)])], ["stats"])


def text_chunks(batches: Iterator[pa.RecordBatch], lines_per_block: dict) -> Iterator[Chunk]:
    """Chunks from Spark's text reader: batches of ``value``, ``file_path``, ``file_block_start``.

    Lines of one byte range arrive contiguously and in file order, so a running count per
    range gives each line's index in it; the driver adds the lines of earlier ranges to get
    line numbers.
    """
    for batch in batches:
        if batch.num_rows == 0:
            continue
        # Usually one file per batch: map the few distinct paths, not every row.
        paths = pc.dictionary_encode(batch.column("file_path"))
        files = [file_uri(p) for p in paths.dictionary.to_pylist()]
        codes = paths.indices.to_numpy(zero_copy_only=False)
        blocks = batch.column("file_block_start").to_numpy(zero_copy_only=False)
        yield Chunk(batch.column("value"), files, codes, blocks,
                    _running_index(codes, blocks, files, lines_per_block))


def byte_range_chunks(ranges: Iterator[tuple[str, int, int]], lines_per_block: dict) -> Iterator[Chunk]:
    """Chunks read straight from the files: ``(file, start, bytes)`` byte ranges of uncompressed files.

    Each split's lines are read with pyarrow, split on newlines with numpy, and handed on
    ``CHUNK_LINES`` at a time, as zero-copy slices.
    """
    for source, start, length in ranges:
        lines = read_byte_range(source, start, length)
        lines_per_block[(source, start)] = len(lines)
        for first in range(0, len(lines), CHUNK_LINES):
            part = lines.slice(first, CHUNK_LINES)
            n = len(part)
            yield Chunk(part, [source], np.zeros(n, np.int32), np.full(n, start, np.int64),
                        np.arange(first, first + n, dtype=np.int64))


def read_byte_range(uri: str, start: int, length: int) -> pa.StringArray:
    """The lines of one byte range of an uncompressed text file, each with its ``\n``.

    A range owns the lines whose preceding newline lies in ``[start, start + length)``, plus the
    file's first line when ``start`` is 0 (Hadoop's rule, so Spark's splits and these agree): it
    skips the partial line it starts in and reads past its end to finish its last line.

    Returns:
        string[n], zero-copy over the bytes read (over the page cache itself for a local file);
        the last line lacks a terminator when the file does.
    """
    data = _range_bytes(uri, start, length)
    newlines = yfcc_scan.newlines(data)
    if start > 0:   # the line this range starts in belongs to the range before
        owned = newlines[newlines < length]
        if not len(owned):
            return pa.array([], pa.string())
        begin = int(owned[0]) + 1
        newlines = newlines[newlines >= begin]
    else:
        begin = 0
    ends = newlines + 1
    if len(data) > begin and (not len(ends) or ends[-1] < len(data)):
        ends = np.append(ends, len(data))   # a last line without a terminator
    offsets = np.concatenate([[begin], ends]).astype(np.int32) if len(ends) else np.zeros(1, np.int32)
    return pa.StringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(data))


def _range_bytes(uri: str, start: int, length: int) -> np.ndarray:
    """uint8: the file's bytes from ``start``: ``length`` of them, then up to and including the
    next newline (or to the end of the file)."""
    fs, path = storage.filesystem(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        # A memory map hands over the page cache's pages: no read into a buffer, no copy.
        mapped = pa.memory_map(path)
        mapped.seek(min(start, mapped.size()))
        data = np.frombuffer(mapped.read_buffer(), dtype=np.uint8)
        look = length
        while look < len(data):   # finish the last line, looking a little further each time
            cut = np.flatnonzero(data[look:look + (look - length) + (1 << 16)] == NEWLINE)
            if len(cut):
                return data[:look + int(cut[0]) + 1]
            look += (look - length) + (1 << 16)
        return data
    with fs.open_input_file(path) as f:
        f.seek(start)
        pieces = [f.read(length)]
        if len(pieces[0]) == length:   # finish the last line: read to the next newline (or the end)
            while True:
                more = f.read(1 << 20)
                cut = more.find(b"\n")
                if more:
                    pieces.append(more if cut < 0 else more[:cut + 1])
                if cut >= 0 or not more:
                    break
    return np.frombuffer(pieces[0] if len(pieces) == 1 else b"".join(pieces), dtype=np.uint8)


def _running_index(codes: np.ndarray, blocks: np.ndarray, files: list[str], seen: dict) -> np.ndarray:
    """Each row's index within its (file, range), continuing counts from earlier batches.

    ``codes`` index ``files``; rows of one range are contiguous and in file order.
    """
    n = len(codes)
    change = np.flatnonzero((codes[1:] != codes[:-1]) | (blocks[1:] != blocks[:-1])) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [n]])
    index = np.empty(n, dtype=np.int64)
    for s, e in zip(starts, ends):
        key = (files[codes[s]], int(blocks[s]))
        first = seen.get(key, 0)
        index[s:e] = np.arange(first, first + e - s)
        seen[key] = int(first + e - s)
    return index


def _clean_text(batches, **task_options):
    """mapInArrow body over Spark's text reader (compressed files)."""
    seen: dict = {}
    return clean_chunks(text_chunks(batches, seen), lines_per_block=seen, **task_options)


def _clean_byte_ranges(batches, ranges: list[tuple[str, int, int]], **task_options):
    """mapInArrow body over byte ranges read by the task itself (uncompressed files): batches
    of ``id``, an index into ``ranges``."""
    seen: dict = {}
    ids = (int(i) for batch in batches for i in batch.column("id").to_pylist())
    return clean_chunks(byte_range_chunks((ranges[i] for i in ids), seen), lines_per_block=seen, **task_options)


def plan_byte_ranges(files: list[str], range_bytes: int) -> list[tuple[str, int, int]]:
    """``(file, start, bytes)`` byte ranges of the uncompressed files, at most ``range_bytes`` each,
    a file's ranges all of one size (the last may be a few bytes shorter).

    Equal ranges, not full ones and a remainder: a short last range ends early and leaves its core
    idle while the others finish full ones (966 MB in ranges of 128 MiB: 7 full ones and one of
    27 MB, so one of 2 cores cleaned 4 full ranges and the other 3.2; now 8 of 121 MB, 4 each).

    Args:
        files: input file URIs; compressed ones (:data:`COMPRESSED`) are left to Spark's reader.
        range_bytes: Spark's ``spark.sql.files.maxPartitionBytes``, the largest a task's input gets.
    """
    ranges = []
    for uri in files:
        if uri.endswith(COMPRESSED):
            continue
        fs, path = storage.filesystem(uri)
        size = fs.get_file_info(path).size
        step = -(-size // -(-size // range_bytes)) if size else 1   # ceil(size / ceil(size / range_bytes))
        ranges += [(uri, start, min(step, size - start)) for start in range(0, size, step)]
    return ranges


def line_offsets(blocks: list[list]) -> dict[tuple[str, int], int]:
    """{(file, range start): lines in the file before that range}, from the tasks' range counts."""
    per_file: dict[str, list[tuple[int, int]]] = {}
    for source, start, count in blocks:
        per_file.setdefault(source, []).append((int(start), int(count)))
    offsets = {}
    for source, ranges in per_file.items():
        before = 0
        for start, count in sorted(ranges):
            offsets[(source, start)] = before
            before += count
    return offsets


def with_line_numbers(rejects: pa.Table, offsets: dict[tuple[str, int], int]) -> pa.Table:
    """Split-relative rejects (:data:`SPLIT_REJECTS`) -> :data:`REJECTS` rows, whose
    ``line_number`` counts from 1 in the source file.

    Args:
        rejects: one task's rejects: source_file, block_start, row_in_block, reason, raw.
        offsets: {(file, range start): lines before that range}, from :func:`line_offsets`.
    """
    files = pc.dictionary_encode(rejects.column("source_file").combine_chunks())
    names = files.dictionary.to_pylist()
    ranges, range_of_row = np.unique(
        np.stack([files.indices.to_numpy(zero_copy_only=False).astype(np.int64),
                  rejects.column("block_start").to_numpy()]), axis=1, return_inverse=True)
    before = np.array([offsets.get((names[f], int(b)), 0) for f, b in ranges.T], dtype=np.int64)
    line_number = before[range_of_row.ravel()] + rejects.column("row_in_block").to_numpy() + 1
    return pa.table([rejects.column("source_file"), pa.array(line_number), rejects.column("reason"),
                     rejects.column("raw")], schema=REJECTS)


def write_rejects(range_rejects: str, files: list[str], offsets: dict[tuple[str, int], int], out: str) -> None:
    """Rewrite the tasks' committed reject files (``files`` in ``range_rejects``) into ``out`` with
    line numbers: one ``part-NNNNN.parquet`` per task file, in task order (so by file and line),
    or one empty file when nothing was rejected. Rejects are few next to the clean rows, and
    this runs on the driver one file at a time, without a Spark job.
    """
    fs, folder = storage.filesystem(range_rejects)
    out_fs, out_folder = storage.filesystem(out)
    out_fs.create_dir(out_folder, recursive=True)
    for index, name in enumerate(sorted(files) or [None]):
        table = (with_line_numbers(pq.read_table(f"{folder}/{name}", filesystem=fs), offsets) if name
                 else REJECTS.empty_table())
        pq.write_table(table, f"{out_folder}/part-{index:05d}.parquet", filesystem=out_fs, compression="zstd")


def tag_options(config: dict) -> dict:
    """The parse options of :func:`pipeline.yfcc.parse_lines` from the run configuration."""
    stop = set()
    if config["drop_stoplist_tags"]:
        stop |= tagging.stoplist()
    extra = config.get("extra_stoplist") or []
    if extra:
        stop |= set(tagging.normalize(pa.array([str(t) for t in extra])).to_pylist())
    return {"max_field_bytes": int(config["max_field_bytes"]), "drop_numeric": bool(config["drop_numeric_tags"]),
            "drop_camera": bool(config["drop_camera_tags"]), "stop": frozenset(stop),
            "drop_owner": bool(config["drop_owner_tags"])}


PARAMETER_KEYS = ("max_field_bytes", "drop_numeric_tags", "drop_camera_tags", "drop_stoplist_tags", "extra_stoplist",
                  "drop_owner_tags")


def hash_files(spark: SparkSession, inputs: list[str]) -> list[str]:
    """The hash files (``--hashes``: files, folders or globs, plain or .bz2) as URIs, each checked to be one."""
    files = input_files(spark, inputs)
    for uri in files:
        photo_hashes.check_hash_file(_head_lines(spark, uri), uri)
    return files


def parse(spark: SparkSession, files: list[str], **task_options) -> list[dict]:
    """The one Spark job: every task cleans its part of ``files``, writes clean rows and rejects to
    files (``task_options``: see :func:`clean_chunks`) and returns one stats row; -> the stats."""
    compressed = [f for f in files if f.endswith(COMPRESSED)]
    ranges = plan_byte_ranges(files, int(spark.conf.get("spark.sql.files.maxPartitionBytes", str(128 << 20)).rstrip("b")))
    outputs = []
    if compressed:
        lines = spark.read.text(compressed).select("value", "_metadata.file_path", "_metadata.file_block_start")
        outputs.append(lines.mapInArrow(partial(_clean_text, **task_options), "stats string"))
    if ranges:
        # One task per range: the task's row of spark.range names its range, so no Python
        # pass is needed to turn the range list into a DataFrame.
        outputs.append(spark.range(0, len(ranges), 1, len(ranges)).mapInArrow(
            partial(_clean_byte_ranges, ranges=ranges, **task_options), "stats string"))
    return [json.loads(row.stats) for row in reduce(DataFrame.unionByName, outputs).collect()]


def run(spark: SparkSession, config: dict, root: str, inputs: list[str], hashes: list[str] | None = None) -> dict:
    """Clean raw YFCC metadata into ``ROOT/clean/`` and ``ROOT/rejects/clean/``.

    Args:
        spark: the session.
        config: run configuration (keys in PARAMETER_KEYS).
        root: run root URI.
        inputs: files, folders or globs of YFCC metadata (plain or .bz2).
        hashes: files, folders or globs of the 2014 release's hash file (``photo_id TAB hash``),
            joined on photo_id to fill the hash of rows that have none (:mod:`pipeline.hashes`);
            its rejects go to ``ROOT/rejects/hashes/``.

    Returns:
        The manifest written to ``ROOT/clean/_manifest.json``.
    """
    started = time.time()
    final_clean, final_rejects = clean_data.DATASET.uri(root), rejects_data.CLEAN.uri(root)
    hashes = hashes if hashes is not None else list(config.get("hashes") or [])
    files = input_files(spark, inputs)
    layouts = detect_layouts(spark, files)
    print(f"[im2vec] clean: {len(files)} input file(s): "
          + ", ".join(f"{f.rsplit('/', 1)[-1]} ({layouts[f]} columns)" for f in files[:5])
          + (" ..." if len(files) > 5 else ""), file=sys.stderr)

    staging = storage.staging_uri(final_clean)
    staging_clean, staging_rejects, range_rejects = (storage.join(staging, d)
                                                     for d in ("clean", "rejects", "range_rejects"))
    for folder in (staging_clean, range_rejects):
        fs, path = storage.filesystem(folder)
        fs.create_dir(path, recursive=True)
    options = tag_options(config)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(CHUNK_LINES))
    try:
        parse_started = time.time()
        stats = parse(spark, files, layouts=layouts, staging_clean=staging_clean, options=options,
                      staging_range_rejects=range_rejects)
        parse_finished = time.time()
        offsets = line_offsets([b for s in stats for b in s["blocks"]])
        write_rejects(range_rejects, [f for s in stats for f in s["rejects_files"]], offsets, staging_rejects)
        storage.commit_attempt_files(staging_clean, [f for s in stats for f in s["files"]], yfcc.CLEAN_SCHEMA)

        totals = _sum_stats(stats)
        rows_rejected = sum(totals["reasons"].values())
        if totals["rows_read"] != totals["rows_kept"] + rows_rejected + totals["videos"]:
            raise RuntimeError(f"clean: counts do not add up: {totals}")  # a bug, never bad input
        hash_counts = {}
        if hashes:
            staging_clean, hash_counts = _fill_hashes(spark, hash_files(spark, hashes), staging, staging_clean,
                                                      storage.join(root, "rejects", "hashes"))
            if hash_counts.pop("rows_joined") != totals["rows_kept"]:
                raise RuntimeError(f"clean: the hash join changed the row count: {hash_counts}")  # a bug
        else:   # an earlier run's, which this manifest would not vouch for
            storage.delete(storage.join(root, "rejects", "hashes"))
        storage.replace(staging_rejects, final_rejects)
        storage.replace(staging_clean, final_clean)
        return storage.write_manifest(
            final_clean, "clean", rows_in=totals["rows_read"], rows_out=totals["rows_kept"],
            rows_rejected=rows_rejected, videos=totals["videos"], rejects=final_rejects,
            covers=(final_rejects, *([hash_counts["hash_rejects"]] if hash_counts else [])),
            rejects_by_reason=totals["reasons"], dropped_tags=totals["dropped_tags"], **hash_counts,
            layouts={f: layouts[f] for f in files},
            parameters=configuration.redacted({k: config[k] for k in PARAMETER_KEYS}),
            inputs=files, started=started,
            # Where the time went: listing and planning on the driver, the parallel parse (every
            # task), then the driver's rejects and commit steps; only "parse" grows with the input.
            phases={"plan": round(parse_started - started, 3), "parse": round(parse_finished - parse_started, 3),
                    "rejects_and_commit": round(time.time() - parse_finished, 3)})
    finally:
        storage.delete(staging)


def _fill_hashes(spark: SparkSession, files: list[str], staging: str, staging_clean: str,
                 final_rejects: str) -> tuple[str, dict]:
    """Join the hash files into the staged clean rows: (the folder of the filled rows, manifest entries)."""
    filled, rejects = storage.join(staging, "hashed"), storage.join(staging, "hash_rejects")
    counts = photo_hashes.join_hashes(spark, files, staging_clean, filled, rejects, staging, PARQUET_OPTIONS)
    storage.replace(rejects, final_rejects)
    return filled, {**counts, "hash_inputs": files, "hash_rejects": final_rejects}


def _sum_stats(stats: list[dict]) -> dict:
    totals = {"rows_read": 0, "rows_kept": 0, "videos": 0, "reasons": {}, "dropped_tags": {}}
    for s in stats:
        for key in ("rows_read", "rows_kept", "videos"):
            totals[key] += s[key]
        for key in ("reasons", "dropped_tags"):
            for k, v in s[key].items():
                totals[key][k] = totals[key].get(k, 0) + v
    return totals

