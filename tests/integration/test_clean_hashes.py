"""`im2vec clean --hashes`: the 2014 release's hash file joined into the 23-column layout, in Spark."""
import bz2
import hashlib

import pyarrow.parquet as pq
import pytest

from jobs import clean
from pipeline import Im2vecError, cli, config as configuration
from tests.yfcc_rows import line

CONFIG = configuration.load(overrides=["master=local[2]"])
PHOTOS = list(range(7000, 7060))
MISSING = {7003, 7017, 7030, 7031, 7059}     # photos without a hash line


def md5(photo_id) -> str:
    return hashlib.md5(f"photo {photo_id}".encode()).hexdigest()


def hash_lines():
    """(lines of a hash file, {1-based line: reason} of its bad lines), in shuffled photo order."""
    lines = [f"{p}\t{md5(p)}" for p in reversed(PHOTOS) if p not in MISSING]
    lines[10] = lines[10].upper()                          # upper-case hex: read as lower case
    bad = {4: ("12x\t" + md5(1), "bad_photo_id"), 9: ("7005", "field_count"),
           15: ("7006\tnot-a-hash", "bad_hash"), 20: ("99999999999999999999\t" + md5(2), "bad_photo_id"),
           33: ("7007\t" + md5(1) + "\textra", "field_count"), 40: ("", "field_count")}
    for number in sorted(bad):
        lines.insert(number - 1, bad[number][0])
    lines.append(f"{PHOTOS[0]}\t{md5(-1)}")                  # a second line for a photo: the first one wins
    lines += [f"{p}\t{md5(p)}" for p in range(90000, 90005)]   # photos not in this clean/
    expected_bad = {}
    for number, text in enumerate(lines, 1):
        for bad_text, reason in bad.values():
            if text == bad_text:
                expected_bad[number] = reason
    return lines, expected_bad


def write(path, lines, compress):
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(bz2.compress(data) if compress else data)
    return str(path)


@pytest.fixture
def small_splits(small_byte_ranges):
    small_byte_ranges(1024)


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "bz2"])
def test_hashes_fill_the_23_column_layout_and_missing_ones_are_counted(spark, tmp_path, small_splits, compress):
    suffix = ".bz2" if compress else ""
    metadata = write(tmp_path / f"yfcc100m_dataset-0{suffix}", [line(23, photo_id=p) for p in PHOTOS], compress)
    lines, expected_bad = hash_lines()
    hashes = write(tmp_path / f"yfcc100m_hash{suffix}", lines, compress)
    root = "file://" + str(tmp_path / "run")
    manifest = clean.run(spark, CONFIG, root, [metadata], hashes=[hashes])

    table = pq.read_table(tmp_path / "run" / "clean")
    # Written as the clean stage writes its files (pyarrow, CLEAN_SCHEMA), not by Spark.
    unhashed = clean.run(spark, CONFIG, "file://" + str(tmp_path / "plain"), [metadata])
    plain = pq.read_table(tmp_path / "plain" / "clean")
    assert table.schema.equals(plain.schema) and unhashed["rows_out"] == plain.num_rows == len(PHOTOS)
    assert table.sort_by("photo_id").drop(["hash"]).equals(plain.sort_by("photo_id").drop(["hash"]))
    got = dict(zip(table["photo_id"].to_pylist(), table["hash"].to_pylist()))
    assert got == {p: (None if p in MISSING else md5(p)) for p in PHOTOS}
    assert manifest["rows_out"] == len(PHOTOS) == manifest["hashes_filled"] + manifest["hash_missing"]
    assert manifest["hash_missing"] == len(MISSING)

    assert manifest["hash_lines"] == len(lines)
    assert manifest["hash_lines"] == manifest["hash_ids"] + manifest["hash_duplicates"] + manifest["hash_lines_rejected"]
    assert (manifest["hash_duplicates"], manifest["hash_ids"]) == (1, len(PHOTOS) - len(MISSING) + 5)
    assert manifest["hash_reasons"] == {"bad_hash": 1, "bad_photo_id": 2, "field_count": 3}
    rejects = pq.read_table(tmp_path / "run" / "rejects" / "hashes").to_pylist()
    assert {r["line_number"]: r["reason"] for r in rejects} == expected_bad
    assert all(r["raw"] == lines[r["line_number"] - 1] and r["source_file"].endswith(f"yfcc100m_hash{suffix}")
               for r in rejects)


def test_a_25_column_hash_is_kept_and_clean_without_hashes_is_unchanged(spark, tmp_path):
    metadata = write(tmp_path / "yfcc100m_dataset", [line(25, photo_id=p) for p in PHOTOS[:5]], False)
    hashes = write(tmp_path / "hashes", [f"{p}\t{md5(p)}" for p in PHOTOS[:5]], False)
    manifest = clean.run(spark, CONFIG, "file://" + str(tmp_path / "a"), [metadata], hashes=[hashes])
    table = pq.read_table(tmp_path / "a" / "clean")
    assert table["hash"].to_pylist() == [hashlib.md5(str(p).encode()).hexdigest() for p in sorted(PHOTOS[:5])]
    assert (manifest["hashes_filled"], manifest["hash_missing"]) == (0, 0)
    plain = clean.run(spark, CONFIG, "file://" + str(tmp_path / "b"), [metadata])
    assert "hash_lines" not in plain
    assert pq.read_table(tmp_path / "b" / "clean").sort_by("photo_id").equals(table.sort_by("photo_id"))


def test_a_file_that_is_no_hash_file_fails_naming_it(spark, tmp_path):
    metadata = write(tmp_path / "yfcc100m_dataset-0", [line(23, photo_id=p) for p in PHOTOS[:3]], False)
    with pytest.raises(Im2vecError, match=r"yfcc100m_dataset-0: not a YFCC hash file"):
        clean.run(spark, CONFIG, "file://" + str(tmp_path / "run"), [metadata], hashes=[metadata])


def test_hashes_option_is_the_hashes_config_key():
    args = cli.build_parser().parse_args(["clean", "--root", "r", "--input", "a", "--hashes", "h1.bz2", "h 2",
                                          "--set", "seed=3"])
    config = configuration.load(overrides=args.overrides)
    assert config["hashes"] == ["h1.bz2", "h 2"] and config["seed"] == 3
