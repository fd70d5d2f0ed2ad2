"""A .bz2 input split across several tasks gives the same clean/ as the plain file, row for row.

Spark's text reader splits bzip2 at block boundaries (Hadoop's BZip2Codec); compressing at level 1
makes 100 kB blocks, so a few MB of synthetic YFCC hold dozens of them, and a small
maxPartitionBytes cuts the file into several tasks. pbzip2 writes one bzip2 stream per block,
concatenated: that spelling is read too.
"""
import bz2

import pyarrow.parquet as pq
import pytest

from jobs import clean
from pipeline import config as configuration, synth

CONFIG = configuration.load(overrides=["master=local[2]"])
ROWS = 12_000


@pytest.fixture(scope="module")
def plain(tmp_path_factory, spark):
    """The synthetic 25-column file (the 2016 single-file release), cleaned as a plain file."""
    folder = tmp_path_factory.mktemp("bz2")
    path = folder / "yfcc100m_dataset"
    synth.write(str(path), rows=ROWS, layout=25, seed=5)
    manifest = clean.run(spark, CONFIG, "file://" + str(folder / "plain"), [str(path)])
    return {"folder": folder, "path": path, "manifest": manifest}


def read(folder, name):
    return pq.read_table(folder / name)   # part files in name order: the input's order


@pytest.mark.parametrize("streams", [1, 3], ids=["bzip2", "pbzip2-like"])
def test_bz2_split_into_tasks_gives_the_plain_files_output(spark, plain, streams):
    data = plain["path"].read_bytes()
    cuts = [len(data) * k // streams for k in range(streams + 1)]
    cuts = [data.rfind(b"\n", 0, c) + 1 if 0 < c < len(data) else c for c in cuts]   # streams end at lines
    compressed = plain["folder"] / f"yfcc100m_dataset-{streams}.bz2"
    compressed.write_bytes(b"".join(bz2.compress(data[a:b], 1) for a, b in zip(cuts, cuts[1:])))
    split_bytes = compressed.stat().st_size // 6
    spark.conf.set("spark.sql.files.maxPartitionBytes", str(split_bytes))
    try:
        tasks = spark.read.text(str(compressed)).rdd.getNumPartitions()
        root = plain["folder"] / f"from-bz2-{streams}"
        manifest = clean.run(spark, CONFIG, "file://" + str(root), [str(compressed)])
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
    assert tasks >= 5
    assert len(list((root / "clean").glob("part-*.parquet"))) >= 5   # one per task that kept rows

    expected = plain["manifest"]
    for key in ("rows_in", "rows_out", "rows_rejected", "videos", "rejects_by_reason", "dropped_tags"):
        assert manifest[key] == expected[key], key
    assert manifest["rows_in"] == ROWS
    assert read(root, "clean").equals(read(plain["folder"] / "plain", "clean"))
    ours, theirs = read(root, "rejects/clean"), read(plain["folder"] / "plain", "rejects/clean")
    assert ours.num_rows == expected["rows_rejected"] > 0
    assert ours.drop(["source_file"]).equals(theirs.drop(["source_file"]))   # line numbers, reasons, raw text
