"""pipeline.openclipart on the installed corpus (Debian openclipart-svg + openclipart-png) and on
a hand-written corpus with broken, unpaired and duplicate files."""
from __future__ import annotations

import hashlib
import html
import re
import struct
import zlib
from pathlib import Path
from urllib.parse import unquote, unquote_plus, urlparse

import pytest
from PIL import Image

from pipeline import Im2vecError, openclipart
from pipeline.yfcc import COLUMNS_25

LIMIT = 300

pytestmark = pytest.mark.skipif(not Path(openclipart.CORPUS_ROOT, "svg").is_dir(),
                                reason="apt-get install openclipart-svg openclipart-png")


def read_metadata(folder: Path) -> list[dict]:
    lines = (folder / "metadata.tsv").read_text(encoding="utf-8").split("\n")
    assert lines[-1] == ""  # newline-terminated, no partial last line
    rows = [line.split("\t") for line in lines[:-1]]
    assert all(len(fields) == 25 for fields in rows)
    return [dict(zip(COLUMNS_25, fields)) for fields in rows]


def tags_of(row: dict) -> list[str]:
    return [unquote_plus(tag) for tag in row["user_tags"].split(",")] if row["user_tags"] else []


def svg_tags(path: Path) -> list[str]:
    """The dc:subject tags of the first cc:Work, parsed with regular expressions (not ElementTree)."""
    text = path.read_text(encoding="utf-8")
    work = re.search(r"<cc:Work\b.*?</cc:Work>", text, re.S).group(0)
    subject = re.search(r"<dc:subject>(.*?)</dc:subject>", work, re.S)
    items = re.findall(r"<rdf:li>(.*?)</rdf:li>", subject.group(1), re.S) if subject else []
    return list(dict.fromkeys(t for t in (html.unescape(i).strip() for i in items) if t))


def file_path(uri: str) -> Path:
    parsed = urlparse(uri)
    assert parsed.scheme == "file"
    return Path(unquote(parsed.path))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Two conversions into the same folder, a stale image planted between them."""
    out = tmp_path_factory.mktemp("demo")
    first_summary = openclipart.write_demo_data(str(out), limit=LIMIT)
    first_rows = read_metadata(out)
    (out / "images" / "stale.png").write_bytes(b"not from this run")
    summary = openclipart.write_demo_data(str(out), limit=LIMIT)
    return out, first_summary, first_rows, summary, read_metadata(out)


def test_rows_are_yfcc_25_columns_with_unique_stable_ids(demo):
    out, first_summary, first_rows, summary, rows = demo
    assert summary["images"] == len(rows) == LIMIT
    assert rows == first_rows, "a re-run must write the same rows"
    assert {k: v for k, v in summary.items() if k != "seconds"} == \
           {k: v for k, v in first_summary.items() if k != "seconds"}
    assert [int(r["line_number"]) for r in rows] == list(range(LIMIT))
    ids = [int(r["photo_id"]) for r in rows]
    assert len(set(ids)) == LIMIT and all(0 < i < 2**63 for i in ids)
    assert len({r["hash"] for r in rows}) == LIMIT, "each image (PNG content) once"
    for row in rows:
        # The id is a function of the path relative to svg/ alone, so it is the same on any machine.
        relative = file_path(row["page_url"]).relative_to(Path(openclipart.CORPUS_ROOT, "svg")).as_posix()
        digest = hashlib.sha1(relative.encode()).digest()
        assert int(row["photo_id"]) == int.from_bytes(digest[:8], "big") & (2**62 - 1)
        assert row["marker"] == "0" and row["machine_tags"] == ""
        assert row["date_taken"] == "null" or re.fullmatch(r"\d{4}-\d\d-\d\d 00:00:00\.0", row["date_taken"])
    assert summary["tagged"] == sum(bool(tags_of(r)) for r in rows)
    assert summary["distinct_tags"] == len({t for r in rows for t in tags_of(r)})


def test_tags_are_the_svg_dc_subject_tags(demo):
    rows = demo[4]
    sampled = rows[::15]
    for row in sampled:
        assert tags_of(row) == svg_tags(file_path(row["page_url"])), row["page_url"]
    assert sum(len(tags_of(r)) for r in sampled) > len(sampled), "the sample should hold real tags"


def test_every_row_has_its_png(demo):
    out, rows = demo[0], demo[4]
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(f"{r['photo_id']}.png" for r in rows)
    assert not (out / "images.partial").exists() and not (out / "metadata.tsv.partial").exists()
    for row in rows:
        image_path = file_path(row["download_url"])
        assert image_path == out / "images" / f"{row['photo_id']}.png"
        assert hashlib.md5(image_path.read_bytes()).hexdigest() == row["hash"]
        with Image.open(image_path) as image:
            assert image.format == "PNG" and min(image.size) > 0
            image.load()


def test_same_creator_same_user(demo):
    summary, rows = demo[3], demo[4]
    user_of, creator_of = {}, {}
    for row in rows:
        assert re.fullmatch(r"\d{8}@N00", row["user_id"])
        assert user_of.setdefault(row["user_nickname"], row["user_id"]) == row["user_id"]
        assert creator_of.setdefault(row["user_id"], row["user_nickname"]) == row["user_nickname"]
    assert summary["users"] == len(creator_of) > 10
    assert max(sum(r["user_id"] == u for r in rows) for u in creator_of) > 1, "creators upload many images"


def test_categories_list_every_folder_of_an_image_and_stay_out_of_tags(demo):
    out, rows = demo[0], demo[4]
    lines = (out / "categories.tsv").read_text().splitlines()
    folders_of = {int(pid): set(folders.split(",")) for pid, folders in (line.split("\t") for line in lines)}
    assert set(folders_of) == {int(r["photo_id"]) for r in rows}
    svg_root = Path(openclipart.CORPUS_ROOT, "svg")
    for row in rows:
        assert file_path(row["page_url"]).parent.relative_to(svg_root).as_posix() in folders_of[int(row["photo_id"])]


def _svg(title: str, tags: list[str], creator: str) -> str:
    items = "".join(f"<rdf:li>{t}</rdf:li>" for t in tags)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:dc="http://purl.org/dc/elements/1.1/"
     xmlns:cc="http://creativecommons.org/ns#" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <metadata><rdf:RDF><cc:Work rdf:about="">
    <dc:title>{title}</dc:title>
    <dc:subject><rdf:Bag>{items}</rdf:Bag></dc:subject>
    <dc:creator><cc:Agent><dc:title>{creator}</dc:title></cc:Agent></dc:creator>
    <dc:date>2005/05/30</dc:date>
    <cc:license rdf:resource="http://web.resource.org/cc/PublicDomain"/>
  </cc:Work></rdf:RDF></metadata>
</svg>"""


def _png_header(width: int, height: int) -> bytes:
    """A PNG that is only its signature and IHDR chunk: the size without the pixels."""
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))


def test_hand_written_corpus_counts_every_skipped_file(tmp_path):
    root = tmp_path / "corpus"
    for folder in ("svg/animals/cats", "svg/people", "png/animals/cats", "png/people"):
        (root / folder).mkdir(parents=True)
    tricky = ["cat", " big dog ", "a,b", "", "cat", "x&amp;y"]
    files = {
        "animals/cats/tabby": (_svg("Tabby\tcat\nline two", tricky, "Ann  Lee"), "red"),
        "people/tabby": (_svg("Tabby\tcat\nline two", tricky + ["people"], "Ann Lee"), "red"),  # same PNG
        "people/bob": (_svg("Bob", ["person"], "Bob"), "blue"),
        "people/broken": ("<svg><metadata><rdf:RDF>", "green"),
        "people/no_png": (_svg("No PNG", ["x"], "Bob"), None),
    }
    for stem, (svg, color) in files.items():
        (root / "svg" / f"{stem}.svg").write_text(svg, encoding="utf-8")
        if color:
            Image.new("RGB", (8, 6), color).save(root / "png" / f"{stem}.png")
    Image.new("RGB", (4, 4), "white").save(root / "png/people/no_svg.png")
    (root / "svg/people/huge.svg").write_text(_svg("Huge", ["big"], "Bob"), encoding="utf-8")
    (root / "png/people/huge.png").write_bytes(_png_header(20000, 30000))
    (root / "svg/people/not_png.svg").write_text(_svg("Not a PNG", ["x"], "Bob"), encoding="utf-8")
    (root / "png/people/not_png.png").write_bytes(b"GIF89a")

    summary = openclipart._convert(root, tmp_path / "out")
    assert summary["skipped"] == {"broken_svg": 1, "duplicate": 1, "png_without_svg": 1, "svg_without_png": 1,
                                  "too_large": 1, "unreadable_png": 1}
    assert summary["images"] + sum(summary["skipped"].values()) == len(files) + 3
    rows = {file_path(r["page_url"]).stem: r for r in read_metadata(tmp_path / "out")}
    assert set(rows) == {"tabby", "bob"} and summary["users"] == 2 and summary["tagged"] == 2
    # Of the two copies of one PNG, the one with the smaller photo_id is kept.
    kept = min(["animals/cats/tabby.svg", "people/tabby.svg"],
               key=lambda path: int.from_bytes(hashlib.sha1(path.encode()).digest()[:8], "big") & (2**62 - 1))
    tabby = rows["tabby"]
    assert file_path(tabby["page_url"]) == root.absolute() / "svg" / kept
    extra = ["people"] if kept.startswith("people") else []
    assert tags_of(tabby) == ["cat", "big dog", "a,b", "x&y"] + extra
    assert tabby["user_tags"] == ",".join(["cat", "big+dog", "a%2Cb", "x%26y"] + extra)
    assert unquote_plus(tabby["title"]) == "Tabby\tcat\nline two"
    assert unquote_plus(tabby["user_nickname"]) == "Ann Lee"
    assert tabby["date_taken"] == "2005-05-30 00:00:00.0"
    assert rows["bob"]["user_id"] != tabby["user_id"]
    categories = dict(line.split("\t") for line in (tmp_path / "out/categories.tsv").read_text().splitlines())
    assert set(categories[tabby["photo_id"]].split(",")) == {"animals/cats", "people"}


def test_missing_corpus_tells_how_to_install_it(tmp_path):
    with pytest.raises(Im2vecError, match="apt-get install openclipart-svg openclipart-png"):
        openclipart._convert(tmp_path / "nowhere", tmp_path / "out")
