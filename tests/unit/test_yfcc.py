import hashlib

import pyarrow as pa
import pytest

from pipeline import Im2vecError, tags, yfcc
from tests.yfcc_rows import line

OPTIONS = dict(max_field_bytes=1000, stop=tags.stoplist())


def parse(lines, layout=25):
    return yfcc.parse_lines(pa.array(lines), layout, **OPTIONS)


def test_good_row_parses_every_field():
    out = parse([line(25, photo_id=42, tags=("Dog", "New York", "rock & roll", "a,b", "2015", "canon"),
                      machine_tags=("upcoming:event=1",))])
    row = out["clean"].to_pylist()[0]
    assert row["photo_id"] == 42 and row["user_id"] == "111@N01"
    assert row["tags"] == ["dog", "new york", "rock & roll", "a,b"]
    assert row["machine_tags"] == ["upcoming:event=1"]
    assert row["description"] == "Seen at the beach & the pier"
    assert row["capture_device"] == "Canon EOS 400D Digital"
    assert row["date_taken"].isoformat() == "2012-08-18T19:35:14"
    assert row["date_uploaded"].isoformat() == "2012-08-19T01:16:34"
    assert (row["longitude"], row["latitude"], row["accuracy"]) == (2.351, 48.857, 16)
    assert row["hash"] == hashlib.md5(b"42").hexdigest()
    assert out["rejected"].tolist() == []


@pytest.mark.parametrize("broken, reason", [
    (lambda: "too\tfew\tfields", "field_count"),
    (lambda: line(25) + "\textra", "field_count"),
    (lambda: "", "field_count"),
    (lambda: line(25, photo_id="12x"), "bad_photo_id"),
    (lambda: line(25, photo_id="-5"), "bad_photo_id"),
    (lambda: line(25, photo_id="9223372036854775808"), "bad_photo_id"),
    (lambda: line(25, photo_id="12345678901234567890"), "bad_photo_id"),
    (lambda: line(25, title="x" * 2000), "oversize_field"),
    (lambda: line(25, description="100%"), "bad_escape"),
    (lambda: line(25, user_tags="dog,%zzcat"), "bad_escape"),
    (lambda: line(25, longitude="east"), "bad_number"),
    (lambda: line(25, accuracy="high"), "bad_number"),
    (lambda: line(25, marker="2"), "bad_number"),
    (lambda: line(25, line_number="x"), "bad_number"),
    (lambda: line(25, date_taken="yesterday"), "bad_date"),
])
def test_each_malformed_kind_is_rejected_with_its_reason(broken, reason):
    out = parse([line(25, photo_id=1), broken(), line(25, photo_id=3)])
    assert out["rejected"].tolist() == [1]
    assert out["reasons"] == [reason]
    assert out["clean"]["photo_id"].to_pylist() == [1, 3]


def test_first_failing_check_is_the_reason():
    out = parse([line(25, photo_id="abc", title="x" * 2000)])
    assert out["reasons"] == ["oversize_field"]


def test_videos_are_counted_and_dropped():
    out = parse([line(25, photo_id=1), line(25, photo_id=2, video=True)])
    assert out["videos"] == 1 and out["clean"].num_rows == 1 and len(out["rejected"]) == 0


def test_missing_values_are_null_not_rejected():
    out = parse([line(25, date_taken="null", date_uploaded="", longitude="", latitude="", accuracy="", tags=())])
    row = out["clean"].to_pylist()[0]
    assert row["date_taken"] is None and row["longitude"] is None and row["accuracy"] is None
    assert row["date_uploaded"] is None
    assert row["tags"] == []


def test_largest_int64_photo_id_is_kept():
    out = parse([line(25, photo_id="9223372036854775807")])
    assert out["clean"]["photo_id"].to_pylist() == [9223372036854775807]


def test_layouts_give_the_same_row():
    a = parse([line(25, photo_id=7)], 25)["clean"].drop(["hash"])
    b = parse([line(23, photo_id=7)], 23)["clean"].drop(["hash"])
    assert a.equals(b)


def test_detect_layout():
    assert yfcc.detect_layout([line(25)] * 5, "f") == 25
    assert yfcc.detect_layout([line(23)] * 4 + ["junk"], "f") == 23
    with pytest.raises(Im2vecError, match=r"f\.tsv.*7 tab-separated fields"):
        yfcc.detect_layout(["a\tb\tc\td\te\tf\tg"] * 3, "f.tsv")
    with pytest.raises(Im2vecError, match="empty"):
        yfcc.detect_layout([], "f.tsv")
