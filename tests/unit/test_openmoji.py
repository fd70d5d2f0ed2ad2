"""pipeline.openmoji on a 40-emoji slice of the real npm package (fetched by `make openmoji`) and on
a hand-made package with every kind of row that is skipped. Tags are read back through the clean
stage's own parser (pipeline.yfcc.parse_lines)."""
from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import unicodedata
from pathlib import Path
from urllib.parse import unquote, unquote_plus, urlparse

import pyarrow as pa
import pytest
from PIL import Image

from pipeline import Im2vecError, cli, openmoji, yfcc
from pipeline.yfcc import COLUMNS_25

HEADER = ["emoji", "hexcode", "group", "subgroups", "annotation", "tags", "openmoji_tags", "openmoji_author",
          "openmoji_date", "skintone", "skintone_combination", "skintone_base_emoji", "skintone_base_hexcode",
          "unicode", "order"]
needs_package = pytest.mark.skipif(not (openmoji.DEFAULT_SOURCE / openmoji.CSV_PATH).is_file(),
                                   reason=f"the openmoji npm package is not in {openmoji.DEFAULT_SOURCE}: run "
                                          "`make openmoji`")
needs_rsvg = pytest.mark.skipif(not shutil.which("rsvg-convert"), reason="apt-get install librsvg2-bin")


def read_metadata(folder: Path) -> list[dict]:
    lines = (folder / "metadata.tsv").read_text(encoding="utf-8").split("\n")
    assert lines[-1] == ""
    rows = [line.split("\t") for line in lines[:-1]]
    assert all(len(fields) == 25 for fields in rows)
    return [dict(zip(COLUMNS_25, fields)) for fields in rows]


def clean_tags(folder: Path) -> dict[int, list[str]]:
    """{photo_id: tags} as the clean stage parses metadata.tsv, without its noise rules."""
    lines = (folder / "metadata.tsv").read_text(encoding="utf-8").splitlines()
    assert yfcc.detect_layout(lines[:5], "metadata.tsv") == 25
    parsed = yfcc.parse_lines(pa.array(lines), 25, max_field_bytes=1 << 20, drop_numeric=False,
                              drop_camera=False, stop=frozenset())
    assert len(parsed["rejected"]) == 0 and parsed["videos"] == 0
    table = parsed["clean"]
    return dict(zip(table.column("photo_id").to_pylist(), table.column("tags").to_pylist()))


def expected_tags(csv_row: dict) -> list[str]:
    """The CSV's two tag columns, normalized as the README says tags are (NFKC, lower case, spaces)."""
    tags = (re.sub(r"\s+", " ", unicodedata.normalize("NFKC", t).lower()).strip()
            for field in ("tags", "openmoji_tags") for t in csv_row[field].split(","))
    return list(dict.fromkeys(t for t in tags if t))


def path_of(uri: str) -> Path:
    parsed = urlparse(uri)
    assert parsed.scheme == "file"
    return Path(unquote(parsed.path))


def photo_id_of(hexcode: str) -> int:
    digest = hashlib.sha1(f"color/svg/{hexcode}.svg".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**62 - 1)


# --- the real package ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_slice(tmp_path_factory):
    """40 consecutive rows of the real CSV, from three skin-tone variants whose base (U+1FAF5) lies
    before the slice to the thumbs up and down and their variants, as a package of their own."""
    base = tmp_path_factory.mktemp("openmoji")
    with open(openmoji.DEFAULT_SOURCE / openmoji.CSV_PATH, encoding="utf-8", newline="") as src:
        rows = list(csv.DictReader(src))
    start = next(i for i, row in enumerate(rows) if row["hexcode"] == "1F44D") - 3
    chosen = rows[start:start + 40]
    package = base / "package"
    (package / "data").mkdir(parents=True)
    (package / "color/svg").mkdir(parents=True)
    with open(package / openmoji.CSV_PATH, "w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(chosen)
    for row in chosen:
        shutil.copy(openmoji.DEFAULT_SOURCE / "color/svg" / f"{row['hexcode']}.svg", package / "color/svg")
    summary = openmoji.write_demo_data(str(base / "out"), source=package)
    return chosen, summary, base / "out", package


@needs_package
@needs_rsvg
def test_real_slice_keeps_one_emoji_per_skin_tone_family(real_slice):
    chosen, summary, out, _ = real_slice
    rows = read_metadata(out)
    kept = {row["photo_id"] for row in rows}
    by_hexcode = {row["hexcode"]: row for row in chosen}
    variants = [row for row in chosen if row["skintone"]]
    assert chosen[0]["skintone_base_hexcode"] == "1FAF5" and "1FAF5" not in by_hexcode
    assert len(variants) >= 20 and all(not row["tags"] and not row["openmoji_tags"] for row in variants)
    # The base is kept where it is in the slice; where it is not, the first variant stands in.
    assert str(photo_id_of("1F44D")) in kept and str(photo_id_of("1F44E")) in kept
    assert str(photo_id_of(chosen[0]["hexcode"])) in kept
    for row in variants[1:]:
        assert str(photo_id_of(row["hexcode"])) not in kept, row["hexcode"]
    assert summary["skipped"] == {"skin_tone_variant": len(variants) - 1}
    assert summary["rows"] == 40 == summary["images"] + sum(summary["skipped"].values())
    assert summary["images"] == len(rows) == 40 - len(variants) + 1


@needs_package
@needs_rsvg
def test_real_slice_rows_are_yfcc_with_the_csv_tags(real_slice):
    chosen, summary, out, package = real_slice
    rows = read_metadata(out)
    by_id = {photo_id_of(row["hexcode"]): row for row in chosen}
    tags = clean_tags(out)
    assert [int(r["line_number"]) for r in rows] == list(range(len(rows)))
    for row in rows:
        source = by_id[int(row["photo_id"])]
        svg = path_of(row["page_url"])
        assert svg == package / "color/svg" / f"{source['hexcode']}.svg"
        assert row["hash"] == hashlib.md5(svg.read_bytes()).hexdigest()
        assert unquote_plus(row["title"]) == source["annotation"]
        assert unquote_plus(row["user_nickname"]) == source["openmoji_author"]
        assert row["user_id"] == openmoji.user_id(source["openmoji_author"])
        assert row["date_taken"] == f"{source['openmoji_date']} 00:00:00.0"
        assert tags[int(row["photo_id"])] == expected_tags(source), source["hexcode"]
    thumbs_up = tags[photo_id_of("1F44D")]
    assert "+1" in thumbs_up and "thumbs up" in thumbs_up and thumbs_up.count("thumbs up") == 1
    assert summary["tagged"] == sum(bool(t) for t in tags.values())
    assert summary["users"] == len({r["user_id"] for r in rows})


@needs_package
@needs_rsvg
def test_real_slice_images_are_rendered_squares(real_slice):
    out, rows = real_slice[2], read_metadata(real_slice[2])
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(f"{r['photo_id']}.png" for r in rows)
    for row in rows:
        assert path_of(row["download_url"]) == out / "images" / f"{row['photo_id']}.png"
        with Image.open(out / "images" / f"{row['photo_id']}.png") as image:
            assert image.format == "PNG" and image.size == (openmoji.SIZE, openmoji.SIZE)
            alpha = image.convert("RGBA").getchannel("A")
            assert alpha.getextrema() == (0, 255), "a drawing on a transparent background"
    categories = dict(line.split("\t") for line in (out / "categories.tsv").read_text().splitlines())
    assert categories[str(photo_id_of("1F44D"))] == "people-body/hand-fingers-closed"


def test_makefile_fetches_into_the_default_source():
    makefile = (Path(__file__).parents[2] / "Makefile").read_text()
    version = re.search(r"^OPENMOJI_VERSION := (\S+)$", makefile, re.M).group(1)
    folder = re.search(r"^OPENMOJI_DIR := (\S+)$", makefile, re.M).group(1).replace("$(OPENMOJI_VERSION)", version)
    assert version == openmoji.VERSION
    assert Path(__file__).parents[2] / folder == openmoji.DEFAULT_SOURCE
    assert re.search(r"^test: .*\bopenmoji\b", makefile, re.M), "CI's `make test` must fetch it"


# --- a hand-made package ---------------------------------------------------------------------------

def _svg(color: str, radius: int = 20) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 72 72">'
            f'<circle cx="36" cy="36" r="{radius}" fill="{color}"/></svg>')


def _row(hexcode: str, tags: str = "", openmoji_tags: str = "", author: str = "Ann Lee", skintone: str = "",
         base: str = "", group: str = "animals-nature", subgroup: str = "animal-mammal") -> dict:
    return {"emoji": "x", "hexcode": hexcode, "group": group, "subgroups": subgroup, "annotation": f"emoji {hexcode}",
            "tags": tags, "openmoji_tags": openmoji_tags, "openmoji_author": author, "openmoji_date": "2019-03-01",
            "skintone": skintone, "skintone_combination": "single" if base else "", "skintone_base_emoji": "",
            "skintone_base_hexcode": base, "unicode": "1", "order": "1"}


@pytest.fixture
def hand_made(tmp_path):
    """A package of 13 rows: 4 converted, 9 skipped (every reason), and their svgs."""
    package = tmp_path / "package"
    (package / "data").mkdir(parents=True)
    (package / "color/svg").mkdir(parents=True)
    rows = [
        _row("A1", "cat, +1, 100%, rock & roll, Big  Cat", "cat, whiskers, , big cat"),
        _row("B1", "hand, wave", "hello", author="Bob", group="people-body", subgroup="hand-fingers-open"),
        _row("B1-T1", skintone="1", base="B1", author="Bob"),
        _row("B1-T2", skintone="2", base="B1", author="Bob"),
        _row("C1-T1", skintone="1", base="C1", author="Bob"),   # no base row: this one stands in
        _row("C1-T3", skintone="3", base="C1", author="Bob"),
        _row("D1", "dog"),
        _row("D2", "doggo"),       # the same drawing as D1
        _row("A1", "again"),       # a hexcode seen before
        _row("E1", "ghost"),       # no svg
        _row("F1", "broken"),      # an svg rsvg-convert cannot read
    ]
    svgs = {"A1": _svg("#ff0000"), "B1": _svg("#00ff00"), "B1-T1": _svg("#00ee00"), "B1-T2": _svg("#00dd00"),
            "C1-T1": _svg("#0000ff"), "C1-T3": _svg("#0000ee"), "D1": _svg("#888888", 30),
            "D2": _svg("#888888", 30), "F1": "<svg><circle"}
    for hexcode, text in svgs.items():
        (package / "color/svg" / f"{hexcode}.svg").write_text(text)
    with open(package / openmoji.CSV_PATH, "w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=HEADER)
        writer.writeheader()
        writer.writerows(rows[:7])
        out.write("G1,too,few,fields\r\n")   # a row of 4 fields
        writer.writerows(rows[7:])
        out.write('"",,x,y,z,,,,,,,,,,\r\n')  # no hexcode
    return package, rows


@needs_rsvg
def test_hand_made_package_counts_every_row(hand_made, tmp_path):
    package, rows = hand_made
    summary = openmoji.write_demo_data(str(tmp_path / "out"), source=package)
    assert summary["skipped"] == {"bad_row": 2, "duplicate": 1, "duplicate_hexcode": 1, "missing_svg": 1,
                                  "render_failed": 1, "skin_tone_variant": 3}
    assert summary["rows"] == len(rows) + 2 == summary["images"] + sum(summary["skipped"].values())
    metadata = read_metadata(tmp_path / "out")
    assert [int(r["photo_id"]) for r in metadata] == [photo_id_of(h) for h in ("A1", "B1", "C1-T1", "D1")]
    assert summary["images"] == 4 and summary["users"] == 2 and summary["tagged"] == 3
    a1 = metadata[0]
    assert a1["user_tags"] == "cat,%2B1,100%25,rock+%26+roll,Big++Cat,whiskers,big+cat"
    assert clean_tags(tmp_path / "out")[photo_id_of("A1")] == ["cat", "+1", "100%", "rock & roll", "big cat", "whiskers"]
    assert summary["distinct_tags"] == 11   # as written: "Big  Cat" and "big cat" are two until the clean stage
    with Image.open(tmp_path / "out/images" / f"{photo_id_of('A1')}.png") as image:
        assert image.convert("RGBA").getpixel((128, 128)) == (255, 0, 0, 255)
    assert sorted(p.name for p in (tmp_path / "out/images").iterdir()) == sorted(f"{r['photo_id']}.png" for r in metadata)
    categories = (tmp_path / "out/categories.tsv").read_text().splitlines()
    assert categories[1] == f"{photo_id_of('B1')}\tpeople-body/hand-fingers-open"


@needs_rsvg
def test_cli_converts_openmoji_with_a_limit(hand_made, tmp_path, capsys):
    package, _ = hand_made
    out = tmp_path / "out"
    assert cli.main(["demo-data", "--corpus", "openmoji", "--source", str(package), "--out", str(out),
                     "--limit", "2"]) == 0
    summary = json.loads(capsys.readouterr().out.partition("demo-data: ")[2])
    assert summary["images"] == 2 and summary["rows"] == 2 and summary["skipped"] == {}
    assert len(read_metadata(out)) == 2 and not (out / "images.partial").exists()


def test_missing_package_names_the_make_target(tmp_path, capsys):
    with pytest.raises(Im2vecError, match=r"make openmoji"):
        openmoji.write_demo_data(str(tmp_path / "out"), source=tmp_path / "nowhere")
    assert cli.main(["demo-data", "--corpus", "openmoji", "--source", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "make openmoji" in capsys.readouterr().err
