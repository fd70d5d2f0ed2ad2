"""The openclipart corpus as YFCC100M demo data: real user tags, real creators, real images.

Reads the Debian packages openclipart-svg and openclipart-png (``/usr/share/openclipart/svg/**.svg``
with RDF metadata, and the same relative paths under ``png/`` as ``.png``) and writes one folder:

* ``metadata.tsv``: the 25-column YFCC layout (:data:`pipeline.yfcc.COLUMNS_25`), one line per
  image. Written last (temp file + rename): a folder without it is incomplete.
* ``images/{photo_id}.png``: the package's own PNG, hard-linked (copied across file systems).
* ``categories.tsv``: ``photo_id<TAB>folder,folder,...``, every corpus folder holding the image
  (e.g. ``animals/amphibian``). The folders are the curators' categories, a signal that is
  kept out of the tags on purpose: use them as held-out labels, never as training tags.

How the corpus maps onto YFCC fields:

* one image = one PNG content: the same picture sits in several category folders, as exact
  copies or as svgs that differ only in their metadata (Debian even symlinks their identical
  PNGs). Files are visited in ``photo_id`` order and the first copy with readable metadata is
  kept; later copies with the same PNG md5 are skipped as ``duplicate``. So ``hash`` is unique
  in the output, and ``limit=N`` writes exactly the first N images of the full conversion.
* ``photo_id``: sha1 of the svg path relative to ``svg/`` (``animals/amphibian/frog.svg``), first
  8 bytes masked to 62 bits: positive, stable across machines.
* ``user_id``: ``NNNNNNNN@N00`` from the creator name (``dc:creator``), so splitting by user keeps
  a creator's near-identical drawings together; images without a creator share one user.
* ``user_tags``: the ``dc:subject`` tags only, stripped, empty and repeated ones dropped, each
  URL-encoded with ``quote_plus`` and joined by ``,``.
* ``date_taken``: ``dc:date`` when it is an unambiguous ``YYYY-MM-DD`` / ``YYYY/MM/DD``, else
  ``null``; ``page_url`` / ``download_url``: file URIs of the source svg / the output PNG.

Every text field is URL-encoded, so no field can hold a tab or a newline.

Files left out, counted by reason in the summary: ``duplicate`` (a PNG already written),
``broken_svg`` (unparseable XML), ``svg_without_png`` / ``png_without_svg``, ``unreadable_png``
and ``too_large`` (over PIL's decompression-bomb limit, :data:`MAX_PIXELS`).
"""
from __future__ import annotations

import collections
import datetime
import hashlib
import os
import re
import shutil
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import quote, quote_plus

from PIL import Image

from pipeline import Im2vecError
from pipeline.yfcc import COLUMNS_25

CORPUS_ROOT = "/usr/share/openclipart"
PROGRESS_EVERY = 1000
# A handful of PNGs are rendered at up to 21k x 30k pixels: over PIL's decompression-bomb limit
# they cannot be decoded by the features stage (and would take gigabytes), so they are skipped.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_DC = "{http://purl.org/dc/elements/1.1/}"
_RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
# cc: is http://web.resource.org/cc/ in this corpus but http://creativecommons.org/ns# in later
# openclipart releases: match it by local name.
_CC = "{*}"

LICENSE_NAMES = {
    "http://web.resource.org/cc/PublicDomain": "Public Domain Dedication",
    "http://creativecommons.org/licenses/publicdomain/": "Public Domain Dedication",
    "http://creativecommons.org/licenses/GPL/2.0/": "GNU General Public License 2.0",
}
# Characters a URL keeps as they are; anything else (spaces, tabs, newlines) is %-encoded.
_URL_SAFE = ":/?#[]@!$&'()*+,;=%~"
_ISO_DATE = re.compile(r"(\d{4})[-/](\d{1,2})[-/](\d{1,2})\b")


def write_demo_data(out: str, limit: int = 0, source: str = CORPUS_ROOT) -> dict:
    """Convert the installed openclipart corpus into YFCC metadata plus an image folder.

    Args:
        out: output folder; a previous conversion in it is replaced.
        limit: at most this many images (0 = all, about 6,900 after de-duplication).
        source: the corpus root, holding ``svg/`` and ``png/``.

    Returns:
        summary dict: ``out``, ``images`` (rows written), ``users`` (distinct user_id),
        ``tagged`` (images with at least one tag), ``distinct_tags``, ``skipped``
        ({reason: files}, see the module docstring), ``seconds``.

    Raises:
        Im2vecError: the corpus is not installed.
    """
    return _convert(Path(source), Path(out), limit)


def photo_id(svg_relative_path: str) -> int:
    """The photo id of a corpus image: a positive int64 (62 bits) from its svg path relative to
    ``svg/``, e.g. ``"animals/amphibian/frog.svg"``."""
    digest = hashlib.sha1(svg_relative_path.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 62) - 1)


def user_id(creator: str) -> str:
    """A Flickr-style user id ``NNNNNNNN@N00`` (8 digits) for a creator name; same name, same id."""
    number = int.from_bytes(hashlib.sha1(creator.encode("utf-8")).digest()[:8], "big") % 10**8
    return f"{number:08d}@N00"


def read_svg_metadata(path: str | os.PathLike) -> dict:
    """The RDF metadata of one svg file (its first ``cc:Work``).

    Returns:
        dict of ``title``, ``description``, ``creator`` (whitespace collapsed), ``license_url``,
        ``date`` (raw ``dc:date``), all str ("" when missing), and ``tags``: list[str], the
        ``dc:subject`` tags in file order, stripped, without empty or repeated ones.

    Raises:
        xml.etree.ElementTree.ParseError: broken XML; OSError: unreadable file.
    """
    work = ET.parse(path).getroot().find(f".//{_CC}Work")
    if work is None:
        return {"title": "", "description": "", "creator": "", "license_url": "", "date": "", "tags": []}
    tags = ("".join(li.itertext()).strip() for li in work.iterfind(f"{_DC}subject/{_RDF}Bag/{_RDF}li"))
    license_ = work.find(f"{_CC}license")
    return {
        "title": (work.findtext(f"{_DC}title") or "").strip(),
        "description": (work.findtext(f"{_DC}description") or "").strip(),
        "creator": " ".join((work.findtext(f"{_DC}creator/{_CC}Agent/{_DC}title") or "").split()),
        "license_url": "" if license_ is None else license_.get(f"{_RDF}resource", "").strip(),
        "date": (work.findtext(f"{_DC}date") or "").strip(),
        "tags": list(dict.fromkeys(t for t in tags if t)),
    }


def _date_taken(text: str) -> str:
    """``dc:date`` as YFCC's ``YYYY-MM-DD HH:MM:SS.0``; ``null`` when absent or ambiguous (``6/24/2005``)."""
    match = _ISO_DATE.match(text)
    if match:
        try:
            return datetime.date(*map(int, match.groups())).strftime("%Y-%m-%d 00:00:00.0")
        except ValueError:
            pass
    return "null"


def _line(line_number: int, pid: int, digest: str, meta: dict, svg_path: Path, image_path: Path) -> str:
    fields = dict.fromkeys(COLUMNS_25, "")
    fields.update(
        line_number=str(line_number), photo_id=str(pid), hash=digest,
        user_id=user_id(meta["creator"]), user_nickname=quote_plus(meta["creator"]),
        date_taken=_date_taken(meta["date"]),
        title=quote_plus(meta["title"]), description=quote_plus(meta["description"]),
        user_tags=",".join(quote_plus(tag) for tag in meta["tags"]),
        page_url=svg_path.as_uri(), download_url=image_path.as_uri(),
        license_name=quote_plus(LICENSE_NAMES.get(meta["license_url"], "")),
        license_url=quote(meta["license_url"], safe=_URL_SAFE),
        extension_original="png", marker="0",
    )
    return "\t".join(fields[column] for column in COLUMNS_25)


def _link_or_copy(source: Path, target: Path) -> None:
    # Debian ships identical PNGs as relative symlinks: link the file they point at (os.link's
    # follow_symlinks is ignored on Linux before Python 3.13, it links the symlink itself).
    try:
        os.link(source.resolve(), target)
    except OSError:  # another file system, or hard links to others' files not allowed
        shutil.copyfile(source, target)


def _stems(folder: Path, suffix: str) -> set[str]:
    return {p.relative_to(folder).as_posix()[: -len(suffix)] for p in folder.rglob(f"*{suffix}")}


def _png_info(path: Path) -> tuple[str, int] | None:
    """(md5 hex of the file, width * height from its IHDR header), or None if it is no PNG."""
    try:
        data = path.read_bytes()
    except OSError:  # e.g. a dangling symlink
        return None
    if not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    return hashlib.md5(data).hexdigest(), int.from_bytes(data[16:20], "big") * int.from_bytes(data[20:24], "big")


def _convert(corpus_root: Path, out: Path, limit: int = 0) -> dict:
    """:func:`write_demo_data` over any corpus root holding ``svg/`` and ``png/``."""
    started = time.time()
    svg_root, png_root = corpus_root.absolute() / "svg", corpus_root.absolute() / "png"
    if not svg_root.is_dir() or not png_root.is_dir():
        raise Im2vecError(
            f"the openclipart corpus is not installed ({svg_root} and {png_root} expected): install the "
            f"Debian packages openclipart-svg and openclipart-png, e.g. "
            f"`sudo apt-get install openclipart-svg openclipart-png`")
    svg_stems, png_stems = _stems(svg_root, ".svg"), _stems(png_root, ".png")
    order = sorted(svg_stems | png_stems, key=lambda stem: photo_id(stem + ".svg"))
    # Every PNG is hashed up front so categories.tsv lists all folders of an image, even with a limit.
    png_info = {stem: _png_info(png_root / f"{stem}.png") for stem in order if stem in svg_stems and stem in png_stems}
    folders_of = collections.defaultdict(set)
    for stem, info in png_info.items():
        if info:
            folders_of[info[0]].add(stem.rpartition("/")[0])

    out = out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    metadata_path, images_dir = out / "metadata.tsv", out / "images"
    metadata_path.unlink(missing_ok=True)  # from here on the folder is incomplete
    staging = out / "images.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()

    skipped = collections.Counter()
    photo_of = {}  # png md5 -> photo_id of the copy kept
    users, tags, tagged = set(), set(), 0
    with open(out / "metadata.tsv.partial", "w", encoding="utf-8", newline="\n") as metadata:
        for stem in order:
            if limit and len(photo_of) >= limit:
                break
            if stem not in svg_stems:
                skipped["png_without_svg"] += 1
                continue
            if stem not in png_stems:
                skipped["svg_without_png"] += 1
                continue
            if png_info[stem] is None:
                skipped["unreadable_png"] += 1
                continue
            digest, pixels = png_info[stem]
            if pixels > MAX_PIXELS:
                skipped["too_large"] += 1
                continue
            if digest in photo_of:
                skipped["duplicate"] += 1
                continue
            svg_path = svg_root / f"{stem}.svg"
            try:
                meta = read_svg_metadata(svg_path)
            except (ET.ParseError, OSError):
                skipped["broken_svg"] += 1
                continue
            pid = photo_id(stem + ".svg")
            _link_or_copy(png_root / f"{stem}.png", staging / f"{pid}.png")
            metadata.write(_line(len(photo_of), pid, digest, meta, svg_path, images_dir / f"{pid}.png") + "\n")
            photo_of[digest] = pid
            users.add(user_id(meta["creator"]))
            tags.update(meta["tags"])
            tagged += bool(meta["tags"])
            if len(photo_of) % PROGRESS_EVERY == 0:
                print(f"[im2vec] demo-data: {len(photo_of):,} images, {sum(skipped.values()):,} files skipped, "
                      f"{time.time() - started:.0f}s", file=sys.stderr, flush=True)

    shutil.rmtree(images_dir, ignore_errors=True)
    staging.rename(images_dir)
    with open(out / "categories.tsv.partial", "w", encoding="utf-8", newline="\n") as categories:
        for digest, pid in photo_of.items():
            categories.write(f"{pid}\t{','.join(quote_plus(f, safe='/') for f in sorted(folders_of[digest]))}\n")
    (out / "categories.tsv.partial").replace(out / "categories.tsv")
    (out / "metadata.tsv.partial").replace(metadata_path)
    return {"out": str(out), "images": len(photo_of), "users": len(users), "tagged": tagged,
            "distinct_tags": len(tags), "skipped": dict(sorted(skipped.items())),
            "seconds": round(time.time() - started, 1)}
