"""The clean stage on a real local Spark session, end to end through files."""
import bz2
import json

import pyarrow.parquet as pq
import pytest

from jobs import clean
from pipeline import Im2vecError, cli, config as configuration, storage
from tests.yfcc_rows import line

CONFIG = configuration.load(overrides=["master=local[2]"])

# (line, expected reason) for every kind of malformed row the cleaner knows.
MALFORMED = [
    ("only\tthree\tfields", "field_count"),
    ("", "field_count"),
    (None, "field_count"),               # filled in below: a good line with an extra field
    (line(25, photo_id="12ab"), "bad_photo_id"),
    (line(25, title="x" * 70000), "oversize_field"),
    (line(25, user_tags="dog,100%"), "bad_escape"),
    (line(25, description="%zz"), "bad_escape"),
    (line(25, latitude="north"), "bad_number"),
    (line(25, date_taken="2012-13-45 99:00:00.0"), "bad_date"),
]
MALFORMED[2] = (line(25, photo_id=999) + "\tsurplus", "field_count")


@pytest.fixture
def small_splits(small_byte_ranges):
    """Several byte ranges even for small files (line numbers must survive)."""
    small_byte_ranges(8192)


def write_lines(path, lines, compress=False):
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(bz2.compress(data) if compress else data)
    return str(path)


def mixed_lines():
    """400 rows: photos, videos and every malformed kind, at known 1-based line numbers."""
    lines, expected = [], {}
    for i in range(360):
        lines.append(line(25, photo_id=10_000 + i, user_id=f"{i % 7}@N01", video=(i % 50 == 0),
                          tags=("dog", f"tag{i % 11}")))
    for k, (text, reason) in enumerate(MALFORMED * 4):
        at = 5 + k * 9   # spread them over the file, so they fall into different splits
        lines.insert(at, text)
    for number, text in enumerate(lines, start=1):
        for bad, reason in MALFORMED:
            if text == bad:
                expected[number] = reason
    return lines, expected


def test_counts_add_up_and_every_reject_has_file_line_reason_and_raw(spark, tmp_path, root, small_splits):
    lines, expected = mixed_lines()
    path = write_lines(tmp_path / "meta.tsv", lines)
    manifest = clean.run(spark, CONFIG, root, [path])

    raw_line_count = open(path, "rb").read().count(b"\n")
    assert manifest["rows_in"] == raw_line_count == len(lines)
    assert manifest["rows_in"] == manifest["rows_out"] + manifest["rows_rejected"] + manifest["videos"]
    assert manifest["videos"] == 360 // 50 + 1
    kept = pq.read_table(tmp_path / "run" / "clean")
    assert kept.num_rows == manifest["rows_out"] == 360 - manifest["videos"]

    rejects = pq.read_table(tmp_path / "run" / "rejects" / "clean").to_pylist()
    assert len(rejects) == manifest["rows_rejected"] == len(expected)
    assert {r["line_number"]: r["reason"] for r in rejects} == expected
    for r in rejects:
        assert r["raw"] == lines[r["line_number"] - 1]
        assert r["source_file"] == "file://" + path
    assert sum(manifest["rejects_by_reason"].values()) == manifest["rows_rejected"]


def test_tags_decode_through_the_stage(spark, tmp_path, root):
    path = write_lines(tmp_path / "m.tsv", [
        line(25, photo_id=1, user_tags="new+york%2C+ny,rock+%26+roll,caf%C3%A9,C%2B%2B,Dog,dog"),
        line(25, photo_id=2, user_tags=""),
    ])
    clean.run(spark, CONFIG, root, [path])
    rows = {r["photo_id"]: r for r in pq.read_table(tmp_path / "run" / "clean").to_pylist()}
    assert rows[1]["tags"] == ["new york, ny", "rock & roll", "café", "c++", "dog"]
    assert rows[2]["tags"] == []           # an untagged photo: an empty list, never null


def test_bz2_23_columns_and_plain_25_columns_give_the_same_rows(spark, tmp_path):
    photos = [dict(photo_id=500 + i, user_id=f"{i % 3}@N02", tags=("sea", f"t{i}"), title=f"Photo {i}")
              for i in range(50)]
    p25 = write_lines(tmp_path / "yfcc100m_dataset", [line(25, **p) for p in photos])
    p23 = write_lines(tmp_path / "yfcc100m_dataset-0.bz2", [line(23, **p) for p in photos], compress=True)
    m25 = clean.run(spark, CONFIG, "file://" + str(tmp_path / "a"), [p25])
    m23 = clean.run(spark, CONFIG, "file://" + str(tmp_path / "b"), [p23])
    assert list(m25["layouts"].values()) == [25] and list(m23["layouts"].values()) == [23]
    a = pq.read_table(tmp_path / "a" / "clean").sort_by("photo_id")
    b = pq.read_table(tmp_path / "b" / "clean").sort_by("photo_id")
    assert a.num_rows == b.num_rows == 50
    assert a.drop(["hash"]).equals(b.drop(["hash"]))
    assert b["hash"].null_count == 50 and a["hash"].null_count == 0


def test_folder_and_glob_inputs(spark, tmp_path, root):
    folder = tmp_path / "in"
    folder.mkdir()
    write_lines(folder / "part-0", [line(23, photo_id=i) for i in range(1, 11)])
    write_lines(folder / "part-1.bz2", [line(23, photo_id=i) for i in range(11, 21)], compress=True)
    assert clean.run(spark, CONFIG, root, [str(folder)])["rows_out"] == 20
    assert clean.run(spark, CONFIG, root, [str(folder / "part-*")])["rows_out"] == 20


def test_a_file_of_neither_layout_fails_naming_it(spark, tmp_path, root):
    good = write_lines(tmp_path / "good.tsv", [line(25, photo_id=1)])
    bad = write_lines(tmp_path / "notes.txt", ["a\tb\tc", "d\te\tf"])
    with pytest.raises(Im2vecError, match=r"notes\.txt.*3 tab-separated fields"):
        clean.run(spark, CONFIG, root, [good, bad])
    assert not storage.exists(root + "/clean")


def test_missing_input_is_a_clear_error(spark, tmp_path, root):
    with pytest.raises(Im2vecError, match="cannot read input"):
        clean.run(spark, CONFIG, root, [str(tmp_path / "nope.tsv")])


def test_s3a_input_without_hadoop_aws_names_what_is_missing(spark, root):
    with pytest.raises(Im2vecError, match="hadoop-aws"):
        clean.run(spark, CONFIG, root, ["s3a://im2vec-bucket/yfcc/"])


def test_rerun_replaces_output_and_manifest_is_last(spark, tmp_path, root):
    first = write_lines(tmp_path / "1.tsv", [line(25, photo_id=i) for i in range(1, 6)])
    second = write_lines(tmp_path / "2.tsv", [line(25, photo_id=i) for i in range(100, 103)])
    clean.run(spark, CONFIG, root, [first])
    clean.run(spark, CONFIG, root, [second])
    ids = pq.read_table(tmp_path / "run" / "clean")["photo_id"].to_pylist()
    assert sorted(ids) == [100, 101, 102]
    assert storage.read_manifest(root + "/clean")["rows_out"] == 3
    assert not [p for p in (tmp_path).iterdir() if p.name.startswith("_staging")]
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith("_staging")]


def test_cli_clean_and_status(spark, tmp_path, root, capsys):
    path = write_lines(tmp_path / "m.tsv", [line(25, photo_id=i) for i in range(1, 4)] + ["junk"])
    assert cli.main(["clean", "--root", root, "--input", path, "--set", "max_field_bytes=5000"]) == 0
    manifest = json.loads((tmp_path / "run" / "clean" / "_manifest.json").read_text())
    assert manifest["parameters"]["max_field_bytes"] == 5000
    assert cli.main(["status", "--root", root]) == 0
    out = capsys.readouterr().out
    assert "clean" in out and "complete" in out and "vocab" in out and "missing" in out
