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


def owner_clean(raw, nicknames, **kwargs):
    """clean() with each photo's uploader nickname, as the clean stage passes it."""
    return clean(raw, drop_owner=True, owners=pa.array(nicknames, pa.string()), **kwargs)


def test_owner_rule_drops_the_uploaders_name_and_web_site_seeds_example():
    raw = ["Guenter,G%C3%BCnter,Leitenbauer,www.leitenbauer.net,venice,gondola",
           "Guenter,Leitenbauer,venice"]
    out = owner_clean(raw, ["G\u00fcnter Leitenbauer", "someone else"])
    # Another uploader's photo keeps "guenter" and "leitenbauer": they are noise only on his own photos.
    assert out["tags"].to_pylist() == [["venice", "gondola"], ["guenter", "leitenbauer", "venice"]]
    assert out["dropped"]["owner"] == 3 and out["dropped"]["web_address"] == 1


def test_owner_rule_whole_nickname_camel_case_and_short_words():
    raw = ["john smith,johnsmith,smith,al,sunset,jo",
           "light,painter,lightpainter,light painter,night",
           "beach"]
    out = owner_clean(raw, ["Al JohnSmith", "Light-Painter", None])
    # "al" and "jo" stay: nickname words shorter than OWNER_MIN_CHARS are too often real tags.
    assert out["tags"].to_pylist() == [["john smith", "al", "sunset", "jo"], ["night"], ["beach"]]
    assert out["dropped"]["owner"] == 2 + 4   # johnsmith, smith; light, painter, lightpainter, light painter


def test_web_addresses():
    raw = ["www.example.org,http%3A%2F%2Fx.y%2Fz,https%3A%2F%2Ffoo,leitenbauer.net,mysite.de%2Fgallery,"
           "flickr.com,st.+paul,dr.no,node.js,a.m.,cafe.,sunset"]
    out = owner_clean(raw, ["nobody"], stop=None)
    assert out["tags"].to_pylist() == [["st. paul", "dr.no", "node.js", "a.m.", "cafe.", "sunset"]]
    assert out["dropped"]["web_address"] == 6


def test_owner_rule_can_be_turned_off_and_is_counted_after_the_other_rules():
    raw = ["canon,leitenbauer,www.x.com"]
    off = clean(raw, drop_owner=False, owners=pa.array(["Canon Leitenbauer"]))
    assert off["tags"].to_pylist() == [["leitenbauer", "www.x.com"]]
    assert "owner" not in off["dropped"] and "web_address" not in off["dropped"]
    on = owner_clean(raw, ["Canon Leitenbauer"])
    assert on["tags"].to_pylist() == [[]]
    assert on["dropped"]["camera"] == 1 and on["dropped"]["owner"] == 1   # canon counts once, as camera


def test_owner_spellings():
    spellings, owner = tags.owner_spellings(pa.array(["Günter Leitenbauer", "ab", None]))
    got = set(zip(owner.tolist(), spellings.to_pylist()))
    assert {(0, "günter leitenbauer"), (0, "günterleitenbauer"), (0, "günter"), (0, "guenter"), (0, "gunter"),
            (0, "leitenbauer"), (0, "guenterleitenbauer")} <= got
    assert not [s for o, s in got if o != 0]   # "ab" is too short, None has none
