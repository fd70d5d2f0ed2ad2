"""The clean stage's own reader: byte ranges of uncompressed files -> lines, as Hadoop splits them."""
import pytest

from jobs.clean import plan_byte_ranges, read_byte_range


@pytest.mark.parametrize("ending", [b"\n", b""])
def test_every_range_size_gives_every_line_once_in_order(tmp_path, ending):
    lines = [b"a\tb", b"", b"ccccccccc", b"d", b"\t\t", b"eeee" * 5, b"f"]
    path = tmp_path / "input.tsv"
    path.write_bytes(b"\n".join(lines) + ending)
    uri = path.as_uri()
    for range_bytes in range(1, path.stat().st_size + 2):
        got = []
        for source, start, length in plan_byte_ranges([uri], range_bytes):
            got += [line.rstrip("\n").encode() for line in read_byte_range(source, start, length).to_pylist()]
        assert got == lines, range_bytes


def test_lines_keep_their_terminator_and_crlf_is_left_to_the_parser(tmp_path):
    path = tmp_path / "crlf.tsv"
    path.write_bytes(b"x\r\ny\r\n")
    assert read_byte_range(path.as_uri(), 0, 6).to_pylist() == ["x\r\n", "y\r\n"]


def test_a_files_ranges_are_of_one_size_and_never_above_the_limit(tmp_path):
    path = tmp_path / "input.tsv"
    path.write_bytes(b"x" * 1000)
    uri = path.as_uri()
    # Not 300, 300, 300 and 100: four ranges of 250, so no task gets a stub.
    assert plan_byte_ranges([uri], 300) == [(uri, 0, 250), (uri, 250, 250), (uri, 500, 250), (uri, 750, 250)]
    assert plan_byte_ranges([uri], 1000) == [(uri, 0, 1000)]
    for limit in range(1, 1200):
        lengths = [length for _, _, length in plan_byte_ranges([uri], limit)]
        assert sum(lengths) == 1000 and max(lengths) <= limit and max(lengths) - min(lengths) < len(lengths), limit


def test_compressed_files_are_left_to_spark_and_empty_files_have_no_splits(tmp_path):
    (tmp_path / "a.bz2").write_bytes(b"BZh9")
    (tmp_path / "empty.tsv").write_bytes(b"")
    assert plan_byte_ranges([(tmp_path / "a.bz2").as_uri(), (tmp_path / "empty.tsv").as_uri()], 100) == []
