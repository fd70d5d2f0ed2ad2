"""The 2014 release's photo hashes (``yfcc100m_hash.bz2``), joined into clean rows in Spark.

The 2014 ten-file layout has no hash column; the release ships the hashes apart, one line per
photo: ``photo_id TAB hash`` (32 hex digits, the MD5 that names the image in the
multimedia-commons bucket: ``{hash[0:3]}/{hash[3:6]}/{hash}.jpg``). ``im2vec clean --hashes PATH``
joins them on photo_id, so ``{hash}`` image templates work for both layouts.

    hash lines = hash_ids (distinct photo ids) + hash_duplicates (lines repeating an earlier
                 line's photo id; the first line wins) + hash_lines_rejected (rejects/hashes/)
    clean rows = rows with a hash (from the 25-column layout, or filled from the file) + hash_missing

Everything runs in Spark: parsing with built-in expressions, a join on photo_id (100M hashes do
not fit a driver or a broadcast). A photo without a hash line keeps a null hash.
"""
from __future__ import annotations

import json
from functools import partial
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession, functions as F

from pipeline import Im2vecError, storage, yfcc

HASH_PATTERN = "^[0-9a-fA-F]{32}$"
# Why a hash line is rejected, the first that applies.
REASONS = ("field_count", "bad_photo_id", "bad_hash")
DETECT_LINES = 50


def check_hash_file(head_lines: list[str], source: str) -> None:
    """Fail naming the file when most of its first lines are not ``photo_id TAB hash``.

    A 23/25-column metadata file or a folder of images given as ``--hashes`` would otherwise
    become millions of rejects.
    """
    lines = [line.rstrip("\r") for line in head_lines if line]
    good = sum(1 for line in lines if _looks_like_hash_line(line))
    if not lines or good * 2 <= len(lines):
        raise Im2vecError(f"{source}: not a YFCC hash file: expected lines of photo id TAB 32 hex digits, "
                          f"{good} of its first {len(lines)} lines are")


def _looks_like_hash_line(line: str) -> bool:
    photo_id, _, digest = line.partition("\t")
    return photo_id.isdigit() and len(digest) == 32 and all(c in "0123456789abcdefABCDEF" for c in digest)


def parse_hash_lines(lines: DataFrame) -> DataFrame:
    """Raw hash-file lines -> parsed lines, one per input line.

    Args:
        lines: ``value`` (the line), ``source_file``, ``block_start`` (the input split's first
            byte) and ``position`` (monotonically_increasing_id over the read: consecutive within
            a split, so a line's index in its split is ``position`` minus the split's first).

    Returns:
        photo_id long, hash string (lower case), reason string (null for a good line, else one of
        REASONS), raw string (the line, rejects only), source_file, block_start, position.
    """
    value = F.regexp_replace("value", "\r$", "")
    fields = F.split(value, "\t")
    photo_text, hash_text = fields.getItem(0), fields.getItem(1)
    # 19 digits may exceed int64: same-length digit strings compare as their numbers do (ANSI-safe, no cast error).
    fits = photo_text.rlike("^[0-9]{1,18}$") | (photo_text.rlike("^[0-9]{19}$") & (photo_text <= str(2**63 - 1)))
    photo_id = F.when(fits, photo_text.cast("bigint"))
    reason = (F.when(F.size(fields) != 2, "field_count")
              .when(photo_id.isNull(), "bad_photo_id")
              .when(~hash_text.rlike(HASH_PATTERN), "bad_hash"))
    return (lines.select(photo_id.alias("photo_id"), F.lower(hash_text).alias("hash"), reason.alias("reason"),
                         "value", "source_file", "block_start", "position")
            .select(F.when(F.col("reason").isNull(), F.col("photo_id")).alias("photo_id"),
                    F.when(F.col("reason").isNull(), F.col("hash")).alias("hash"), "reason",
                    F.when(F.col("reason").isNotNull(), F.col("value")).alias("raw"),
                    "source_file", "block_start", "position"))


def read_hash_lines(spark: SparkSession, uris: list[str]) -> DataFrame:
    """The lines of the hash files (plain or .bz2, split like any text input) with where each came from."""
    return spark.read.text(uris).select(
        "value", F.col("_metadata.file_path").alias("source_file"),
        F.col("_metadata.file_block_start").alias("block_start"),
        F.monotonically_increasing_id().alias("position"))


def first_hash_per_photo(parsed: DataFrame) -> DataFrame:
    """Good parsed lines -> photo_id, hash (of the photo's first line in file order), lines (how many)."""
    order = F.struct("source_file", "block_start", "position")
    return (parsed.where(F.col("reason").isNull())
            .groupBy("photo_id").agg(F.min_by("hash", order).alias("hash"), F.count(F.lit(1)).alias("lines")))


def fill_hashes(clean: DataFrame, hashes: DataFrame) -> DataFrame:
    """Clean rows (CLEAN_SCHEMA's columns) with a null hash filled from ``hashes`` (photo_id, hash).

    A left join on photo_id: every clean row stays, once (``hashes`` has one row per photo_id);
    a hash the row already has (25-column layout) is kept. Adds ``hash_filled`` (boolean).
    """
    joined = clean.join(hashes.select("photo_id", F.col("hash").alias("file_hash")), "photo_id", "left")
    filled = F.col("hash").isNull() & F.col("file_hash").isNotNull()
    return joined.select(*[F.coalesce("hash", "file_hash").alias("hash") if f.name == "hash" else F.col(f.name)
                           for f in yfcc.CLEAN_SCHEMA], filled.alias("hash_filled"))


def write_rows(batches: Iterator[pa.RecordBatch], *, folder_uri: str, parquet_options: dict) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: joined clean rows -> one Parquet file per task attempt (CLEAN_SCHEMA, the clean
    stage's own options), and one stats row: file, rows, hash_filled, hash_missing."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    name = storage.attempt_file(ctx.partitionId(), ctx.taskAttemptId())
    fs, folder = storage.filesystem(folder_uri)
    writer, stats = None, {"rows": 0, "hash_filled": 0, "hash_missing": 0}
    for batch in batches:
        if not batch.num_rows:
            continue
        stats["rows"] += batch.num_rows
        stats["hash_filled"] += int(pc.sum(batch.column("hash_filled")).as_py() or 0)
        stats["hash_missing"] += batch.column("hash").null_count
        table = pa.Table.from_batches([batch]).select([f.name for f in yfcc.CLEAN_SCHEMA]).cast(yfcc.CLEAN_SCHEMA)
        if writer is None:
            writer = pq.ParquetWriter(f"{folder}/{name}", yfcc.CLEAN_SCHEMA, filesystem=fs, **parquet_options)
        writer.write_table(table)
    if writer is not None:
        writer.close()
    stats["files"] = [name] if writer is not None else []
    yield pa.RecordBatch.from_arrays([pa.array([json.dumps(stats)])], ["stats"])


def block_offsets(parsed: DataFrame) -> dict[tuple[str, int], tuple[int, int]]:
    """{(file, split start): (lines in the file before the split, the split's first position)}."""
    blocks = parsed.groupBy("source_file", "block_start").agg(
        F.count(F.lit(1)).alias("lines"), F.min("position").alias("first")).collect()
    offsets, before = {}, {}
    for row in sorted(blocks, key=lambda r: (r["source_file"], r["block_start"])):
        seen = before.get(row["source_file"], 0)
        offsets[(row["source_file"], row["block_start"])] = (seen, row["first"])
        before[row["source_file"]] = seen + row["lines"]
    return offsets


def rejects(spark: SparkSession, parsed: DataFrame, offsets: dict) -> DataFrame:
    """Rejected lines as rejects/ rows: source_file, line_number (from 1 in its file), reason, raw."""
    table = spark.createDataFrame([(f, b, before, first) for (f, b), (before, first) in offsets.items()],
                                  "source_file string, block_start long, before long, first long")
    return (parsed.where(F.col("reason").isNotNull()).join(F.broadcast(table), ["source_file", "block_start"])
            .select(F.col("source_file"), (F.col("before") + F.col("position") - F.col("first") + 1).alias("line_number"),
                    "reason", "raw")
            .orderBy("source_file", "line_number"))


def join_hashes(spark: SparkSession, uris: list[str], clean_uri: str, out_uri: str, rejects_uri: str,
                staging_uri: str, parquet_options: dict) -> dict:
    """Read hash files, fill the hashes of the clean rows in ``clean_uri`` into ``out_uri``.

    Args:
        uris: hash file URIs (checked with :func:`check_hash_file` by the caller).
        clean_uri: a folder of clean Parquet files (CLEAN_SCHEMA).
        out_uri: where the filled clean rows go (Parquet part files in CLEAN_SCHEMA).
        rejects_uri: where rejected hash lines go (source_file, line_number, reason, raw).
        staging_uri: scratch folder for the parsed lines (read once, used three times).
        parquet_options: the clean stage's pyarrow writer options.

    Returns:
        The manifest entries: hash_lines, hash_ids, hash_duplicates, hash_lines_rejected,
        hash_reasons, hashes_filled, hash_missing, hash_rejects.
    """
    from pyspark.sql import Observation

    parsed_uri = storage.join(staging_uri, "hash_lines")
    # One pass over the (bz2) text; everything else reads this.
    parse_hash_lines(read_hash_lines(spark, uris)).write.parquet(parsed_uri)
    parsed = spark.read.parquet(parsed_uri)
    offsets = block_offsets(parsed)
    rejects(spark, parsed, offsets).write.parquet(rejects_uri)
    by_reason = {r["reason"]: r["count"] for r in parsed.groupBy("reason").count().collect()}
    good_lines = by_reason.pop(None, 0)

    ids = Observation("hash_ids")
    by_photo = first_hash_per_photo(parsed).observe(ids, F.count(F.lit(1)).alias("ids"))
    joined = fill_hashes(spark.read.parquet(clean_uri), by_photo)
    fs, folder = storage.filesystem(out_uri)
    fs.create_dir(folder, recursive=True)
    stats = [json.loads(r.stats) for r in joined.mapInArrow(
        partial(write_rows, folder_uri=out_uri, parquet_options=parquet_options), "stats string").collect()]
    storage.commit_attempt_files(out_uri, [f for s in stats for f in s["files"]], yfcc.CLEAN_SCHEMA)
    hash_ids = int(ids.get["ids"])
    return {"hash_lines": good_lines + sum(by_reason.values()), "hash_ids": hash_ids,
            "hash_duplicates": good_lines - hash_ids, "hash_lines_rejected": sum(by_reason.values()),
            "hash_reasons": dict(sorted(by_reason.items())),
            "hashes_filled": sum(s["hash_filled"] for s in stats), "hash_missing": sum(s["hash_missing"] for s in stats),
            "rows_joined": sum(s["rows"] for s in stats)}
