import numpy as np
import pyarrow as pa

from pipeline import tags, yfcc_scan


def clean(raw, **kwargs):
    """Raw tag fields -> tag_lists's result, split and decoded by the clean stage's kernel."""
    kwargs.setdefault("stop", tags.stoplist())
    offsets, data = yfcc_scan.string_buffers(pa.array(raw, pa.string()))
    bounds = np.stack([offsets[:-1], offsets[1:] + 1], axis=1).astype(np.int32)   # one field per value
    _, [(values, parents)] = yfcc_scan.extract(data, bounds, np.arange(len(raw)), [], [], [0])
    return tags.tag_lists(values, parents, len(raw), **kwargs)


def test_split_on_raw_comma_then_decode():
    out = clean(["my%2Cmemories,new+york,rock+%26+roll,a%2Bb"])
    assert out["tags"].to_pylist() == [["my,memories", "new york", "rock & roll", "a+b"]]


def test_nfkc_lower_trim_collapse_and_dedupe_keep_first_order():
    out = clean(["Zebra,%EF%BC%A6%EF%BD%95%EF%BD%8C%EF%BD%8C,++New+++York++,new+york,NEW%09YORK,zebra,,+"])
    assert out["tags"].to_pylist() == [["zebra", "full", "new york"]]
    assert out["dropped"]["empty"] == 2


def test_machine_tags_go_to_their_own_column():
    out = clean(["dog,upcoming%3Aevent%3D123,geo%3Alat%3D48.8,not%3Aa+machine+tag"])
    assert out["tags"].to_pylist() == [["dog", "not:a machine tag"]]
    assert out["machine_tags"].to_pylist() == [["upcoming:event=123", "geo:lat=48.8"]]


def test_noise_rules():
    raw = ["2015,1%2C000,2015-04-03,canon,nikon+d90,eos5dmarkii,iphone6s,50mm,f%2F1.8,flickr,"
           "iphoneography,canonical,sunset,5d,photo,dog"]
    out = clean(raw)
    assert out["tags"].to_pylist() == [["canonical", "sunset", "dog"]]
    assert out["dropped"] == {"empty": 0, "numeric": 3, "camera": 7, "stoplist": 3}


def test_noise_rules_can_be_turned_off():
    out = clean(["2015,canon,flickr,dog"], drop_numeric=False, drop_camera=False, stop=None)
    assert out["tags"].to_pylist() == [["2015", "canon", "flickr", "dog"]]


def test_empty_and_null_fields_give_empty_lists_not_null():
    out = clean(["", None, ","])
    assert out["tags"].to_pylist() == [[], [], []]
    assert out["tags"].null_count == 0


def test_stoplist_is_normalized():
    stop = tags.stoplist()
    assert {"flickr", "iphoneography", "photo"} <= stop
    assert all(t == t.strip().lower() for t in stop)


def test_nfkc_composes_like_unicodedata():
    import unicodedata

    raw = ["cafe\u0301", "caf\u00e9", "ﬁsh", "Ｔｏｋｙｏ", "plain", "Straße", "Ⅻ"]
    got = tags.normalize(pa.array(raw)).to_pylist()
    assert got == [unicodedata.normalize("NFKC", t).lower() for t in raw]
    assert got[0] == got[1] == "caf\u00e9"
