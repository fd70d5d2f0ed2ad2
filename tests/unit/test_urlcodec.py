import random
from urllib.parse import quote_plus, unquote_plus

import pyarrow as pa

from pipeline.urlcodec import url_decode


def test_decodes_like_unquote_plus_on_random_text():
    rng = random.Random(7)
    alphabet = "ab ,+&%=:/?#éü東京\t😀"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12))) for _ in range(3000)]
    encoded = [quote_plus(t) for t in texts]
    decoded, bad = url_decode(pa.array(encoded))
    assert decoded.to_pylist() == texts
    assert not bad.any()


def test_plus_comma_and_ampersand():
    decoded, bad = url_decode(pa.array(["new+york%2C+ny", "rock+%26+roll", "a%2Bb"]))
    assert decoded.to_pylist() == ["new york, ny", "rock & roll", "a+b"]
    assert not bad.any()


def test_broken_escapes_are_flagged_per_value_and_left_raw():
    values = ["100%", "%zz", "ok%41", "x%2", "%", "%4", None, "fine"]
    decoded, bad = url_decode(pa.array(values))
    assert bad.tolist() == [True, True, False, True, True, True, False, False]
    assert decoded.to_pylist() == ["100%", "%zz", "okA", "x%2", "%", "%4", None, "fine"]


def test_escape_cannot_borrow_the_next_values_bytes():
    # "ab%4" ends inside its value; the "1" belongs to the next value.
    decoded, bad = url_decode(pa.array(["ab%4", "1cd"]))
    assert bad.tolist() == [True, False]
    assert decoded.to_pylist() == ["ab%4", "1cd"]


def test_sliced_arrays_and_nulls():
    arr = pa.array(["skip", None, "a+b", "%C3%A9"])[1:]
    decoded, bad = url_decode(arr)
    assert decoded.to_pylist() == [None, "a b", "é"]


def test_invalid_utf8_becomes_replacement_character_like_unquote_plus():
    decoded, bad = url_decode(pa.array(["caf%E9", "%C3%A9"]))
    assert decoded.to_pylist() == [unquote_plus("caf%E9"), "é"]
    assert not bad.any()
