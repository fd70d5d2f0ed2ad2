"""The clean stage's numba kernels against what they replace: urllib's unquote_plus, pyarrow's
strptime, Hadoop's line rule and the reject reasons of pipeline.yfcc."""
import random
import re
from urllib.parse import unquote_plus

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from jobs.clean import plan_byte_ranges, read_byte_range
from pipeline import tags, yfcc, yfcc_scan as scan
from tests.yfcc_rows import line

OPTIONS = dict(max_field_bytes=1000, stop=tags.stoplist())
CHARS = "éü東京😀"
BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def random_encoded(rng: random.Random, n: int, alphabet: str = "abcXYZ019 .-_~!&=:/?#") -> list[str]:
    """n URL-encoded-looking values: ASCII, "+", valid and broken escapes, raw multi-byte UTF-8,
    escaped bytes >= 0x80 that are valid UTF-8 and that are not."""
    def escaped(text: str) -> str:
        return "".join(f"%{b:02X}" for b in text.encode())
    pieces = [
        lambda: rng.choice(alphabet), lambda: "+", lambda: "%2B", lambda: "%2C",
        lambda: f"%{rng.randrange(128):02X}",                    # escaped ASCII
        lambda: f"%{rng.randrange(256):02x}",                    # any byte, lower-case hex: often not UTF-8
        lambda: escaped(rng.choice(CHARS)),                      # escaped multi-byte character
        lambda: escaped(rng.choice(CHARS))[:-3],                 # ... cut short: not UTF-8
        lambda: rng.choice(["%", "%4", "%zz", "%4g", "%%41", "%+1", "%2"]),   # malformed escapes
        lambda: rng.choice(CHARS),                               # raw multi-byte character
    ]
    return ["".join(rng.choice(pieces)() for _ in range(rng.randrange(0, 12))) for _ in range(n)]


def extract(values: list[str], decode: bool = True, tags_too: bool = False):
    """scan.extract over one field per value of a string array."""
    offsets, data = scan.string_buffers(pa.array(values, pa.string()))
    bounds = np.stack([offsets[:-1], offsets[1:] + 1], axis=1).astype(np.int32)
    rows = np.arange(len(values))
    return scan.extract(data, bounds, rows, [] if tags_too else [0], [] if tags_too else [decode], [0] if tags_too else [])


def parse(lines, layout=25):
    return yfcc.parse_lines(pa.array(lines), layout, **OPTIONS)


def test_decodes_like_unquote_plus_on_random_text():
    values = random_encoded(random.Random(7), 5000)
    [decoded], _ = extract(values)
    assert decoded.to_pylist() == [unquote_plus(v) for v in values]
    assert any("\ufffd" in unquote_plus(v) for v in values) and any("%" in unquote_plus(v) for v in values)


def test_long_values_decode_like_unquote_plus():
    # Past SHORT_FIELD bytes the kernel copies runs between escapes in bulk.
    rng = random.Random(8)
    values = ["".join(random_encoded(rng, 8)) * 3 for _ in range(500)]
    [decoded], _ = extract(values)
    assert decoded.to_pylist() == [unquote_plus(v) for v in values]


def test_tags_split_on_the_raw_comma_then_decode_like_unquote_plus():
    rng = random.Random(9)
    fields = [",".join(random_encoded(rng, rng.randrange(0, 5), alphabet="abc, ")) for _ in range(3000)]
    _, [(values, parents)] = extract(fields, tags_too=True)
    expected = [(i, unquote_plus(t)) for i, f in enumerate(fields) if f for t in f.split(",")]
    assert list(zip(parents.tolist(), values.to_pylist())) == expected


def test_plus_comma_ampersand_and_invalid_utf8():
    [decoded], _ = extract(["new+york%2C+ny", "rock+%26+roll", "a%2Bb", "caf%E9", "%C3%A9", ""])
    assert decoded.to_pylist() == ["new york, ny", "rock & roll", "a+b", unquote_plus("caf%E9"), "é", ""]


def test_an_escape_cannot_borrow_the_next_fields_bytes():
    [decoded], _ = extract(["ab%4", "1cd", "x%", "41"])
    assert decoded.to_pylist() == ["ab%4", "1cd", "x%", "41"]


def test_copied_fields_are_byte_exact():
    values = random_encoded(random.Random(10), 1000)
    [copied], _ = extract(values, decode=False)
    assert copied.to_pylist() == values


def test_malformed_escapes_reject_the_row_and_the_rest_decode_like_unquote_plus():
    rng = random.Random(11)
    texts = random_encoded(rng, 1500)
    tag_fields = [",".join(random_encoded(rng, 3, alphabet="abc")) for _ in range(1500)]
    lines = [line(25, photo_id=i, description=t) for i, t in enumerate(texts)]
    lines += [line(25, photo_id=10_000 + i, user_tags=t) for i, t in enumerate(tag_fields)]
    out = parse(lines)
    bad = [bool(BAD_ESCAPE.search(v)) for v in texts + tag_fields]
    assert out["rejected"].tolist() == [i for i, b in enumerate(bad) if b]
    assert set(out["reasons"]) == {"bad_escape"}
    kept = out["clean"].to_pydict()
    assert kept["description"][:len(texts) - sum(bad[:len(texts)])] == \
        [unquote_plus(t) for t, b in zip(texts, bad) if not b]


def test_dates_parse_like_pyarrow_strptime():
    # Random digits in the "YYYY-MM-DD HH:MM:SS" shape (every field also out of range), other
    # spellings strptime accepts or not, and fractions.
    rng = np.random.default_rng(12)
    n = 20_000
    parts = [rng.integers(0, 10_000, n)] + [rng.integers(0, 100, n) % rng.choice([hi, 100], n)
                                           for hi in (14, 33, 25, 61, 63)]
    dates = [f"{y:04d}-{m:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d}" for y, m, d, h, mi, s in zip(*parts)]
    dates += ["2012-8-18 1:2:3", " 2012-08-18 19:35:14", "2012-08-18  9:35:14", "2012-08-18T19:35:14",
              "2012-08-18 19:35:14.0", "2012-08-18 19:35:14.", "2012-08-18 19:35:14.5x", "2012-08-18",
              "2012-08-18 19:35:1é", "null", "NULL", "", "2012-02-30 10:00:00", "1969-12-31 23:59:59", "1969-12-31 23:59:58",
              "1970-01-01 00:00:00"]
    out = parse([line(25, photo_id=i, date_taken=d) for i, d in enumerate(dates)])

    # The rule the kernel replaces: strptime on the first 19 characters, then digits after a dot.
    values = pa.array(dates)
    missing = pc.is_in(pc.utf8_lower(values), value_set=pa.array(["", "null"])).to_numpy(zero_copy_only=False)
    taken = pc.strptime(pc.utf8_slice_codeunits(values, 0, 19), format="%Y-%m-%d %H:%M:%S", unit="s",
                        error_is_null=True)
    fraction = pc.match_substring_regex(values, r"^.{19}(\.[0-9]+)?$|^.{0,18}$").to_numpy(zero_copy_only=False)
    ok = missing | (pc.is_valid(taken).to_numpy(zero_copy_only=False) & fraction)
    assert out["rejected"].tolist() == np.flatnonzero(~ok).tolist()
    assert set(out["reasons"]) == {"bad_date"}
    expected = pc.if_else(pa.array(missing), None, taken).filter(pa.array(ok))
    assert out["clean"]["date_taken"].combine_chunks().equals(expected)
    assert 1000 < ok.sum() < n   # both outcomes are exercised


def awkward_file(tmp_path, ending: bytes):
    """Lines every split must handle: CRLF, empty lines, wrong field counts, no final newline."""
    lines = [line(25, photo_id=1).encode() + b"\r\n", b"\n", line(25, photo_id=2).encode() + b"\n",
             line(25, photo_id=3).encode()[:-2] + b"\n",                         # 24 fields
             line(25, photo_id=4).encode() + b"\textra\n", b"\r\n",              # 26 fields; CRLF alone
             line(25, photo_id=5).encode() + b"\r\r\n", b"\t" * 24 + b"\n",
             line(25, photo_id=6).encode() + ending]
    path = tmp_path / "awkward.tsv"
    path.write_bytes(b"".join(lines))
    return path


@pytest.mark.parametrize("ending", [b"\n", b""])
def test_every_split_size_parses_every_line_once(tmp_path, ending):
    path = awkward_file(tmp_path, ending)
    size = path.stat().st_size
    for range_bytes in [13, 37, 100, 211, 333, 334, 500, 777, 1000, 1500, size - 1, size, size + 1]:
        kept, rejected = [], []
        for source, start, length in plan_byte_ranges([path.as_uri()], range_bytes):
            lines = read_byte_range(source, start, length)
            out = yfcc.parse_lines(lines, 25, **OPTIONS)
            kept += out["clean"]["photo_id"].to_pylist()
            rejected += [(raw.rstrip("\r\n"), reason) for raw, reason
                         in zip(lines.take(pa.array(out["rejected"])).to_pylist(), out["reasons"])]
            assert len(lines) == out["clean"].num_rows + len(out["rejected"]) + out["videos"]
        assert kept == [1, 2, 5, 6], range_bytes
        assert [reason for _, reason in rejected] == ["field_count"] * 4 + ["bad_photo_id"], range_bytes
        assert rejected[0][0] == "" and rejected[1][0].startswith("0\t3\t")


def test_crlf_and_spark_lines_without_terminators_parse_alike():
    rows = [line(25, photo_id=i, video=i == 2) for i in range(4)]
    plain = parse(rows)
    for terminated in ([r + "\r\n" for r in rows], [r + "\n" for r in rows]):
        out = parse(terminated)
        assert out["clean"].equals(plain["clean"]) and out["videos"] == plain["videos"] == 1


def test_oversize_counts_the_last_field_with_its_terminator():
    # The old parser measured the raw last field, terminator included; the reason stays the same.
    out = yfcc.parse_lines(pa.array([line(25, marker="0" * 1000) + "\n"]), 25, **OPTIONS)
    assert out["reasons"] == ["oversize_field"]


def test_numbers_that_overflow_are_rejected_not_a_crash():
    out = parse([line(25, date_uploaded="99999999999999999999"), line(25, accuracy="2147483648"),
                 line(25, accuracy="2147483647")])
    assert out["reasons"] == ["bad_number", "bad_number"]
    assert out["clean"]["accuracy"].to_pylist() == [2147483647]


def test_kernels_are_cached_on_disk():
    kernels = [f for f in vars(scan).values() if isinstance(f, numba.core.registry.CPUDispatcher)]
    assert {"scan_lines", "copy_rows", "first_tags"} <= {k.__name__ for k in kernels}
    assert all(not isinstance(k._cache, numba.core.caching.NullCache) for k in kernels)


def test_decimal_check_matches_the_regex_the_float_cast_reads():
    decimal = re.compile(r"^-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?$")
    rng = random.Random(0)
    for _ in range(20_000):
        text = "".join(rng.choice("0123456789-+.eE x") for _ in range(rng.randint(0, 7)))
        data = np.frombuffer(text.encode(), np.uint8) if text else np.zeros(0, np.uint8)
        assert bool(scan._is_decimal(data, 0, len(data))) == bool(decimal.match(text)), text
