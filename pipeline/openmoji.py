"""The OpenMoji emoji set as YFCC100M demo data: a second real corpus, drawn and tagged by other people.

Reads the npm package openmoji 17.0.0 as ``make openmoji`` unpacks it (``npm pack``, then only
``data/openmoji.csv``, ``color/svg/`` and ``LICENSE.txt``) into :data:`DEFAULT_SOURCE`, and writes
the same folder as :mod:`pipeline.openclipart`:

* ``metadata.tsv``: the 25-column YFCC layout (:data:`pipeline.yfcc.COLUMNS_25`), one line per
  emoji kept, in the CSV's order. Written last (temp file + rename): a folder without it is incomplete.
* ``images/{photo_id}.png``: the colour drawing ``color/svg/{hexcode}.svg`` rendered by
  ``rsvg-convert`` (Debian librsvg2-bin) at :data:`SIZE` px square, transparent background
  (the features stage composites transparency on white, as for openclipart's PNGs).
* ``categories.tsv``: ``photo_id<TAB>group/subgroup`` (e.g. ``animals-nature/animal-mammal``),
  the curators' categories, kept out of the tags like openclipart's folders.

How a CSV row maps onto YFCC fields:

* ``photo_id``: sha1 of the drawing's path in the package, ``color/svg/{hexcode}.svg``, first 8
  bytes masked to 62 bits (:func:`pipeline.openclipart.photo_id`); ``hash``: md5 of the svg file.
* ``user_id``: ``NNNNNNNN@N00`` from ``openmoji_author`` (:func:`pipeline.openclipart.user_id`),
  the author playing the Flickr user; ``user_nickname``: the author.
* ``user_tags``: the CLDR ``tags`` then ``openmoji_tags``, each split on ``,``, stripped, empty and
  repeated ones dropped, URL-encoded with ``quote_plus`` and joined by ``,`` (so ``+1`` and ``%``
  survive the clean stage's decoding).
* ``title``: the CLDR ``annotation`` ("grinning face"); ``description``: the emoji itself;
  ``date_taken``: ``openmoji_date``; ``page_url`` / ``download_url``: file URIs of the svg / the PNG.

Rows left out, counted by reason (rows in the CSV = images written + rows skipped):

* ``skin_tone_variant``: the row's ``skintone`` column is set (``1``..``5``, or ``1,3`` for two
  people): the same drawing as its ``skintone_base_hexcode`` emoji but for the skin colour, and
  without tags of its own. The base emoji (no skin tone, the yellow default) is kept; when the
  base is not in the CSV, the first variant in CSV order stands in for it. The five skin-tone
  swatches (U+1F3FB..U+1F3FF on their own) have no ``skintone`` and are kept.
* ``duplicate``: an svg byte-identical to one already kept (openmoji draws "man student" and
  "student" alike); the first in CSV order is kept.
* ``duplicate_hexcode`` (a hexcode seen before), ``bad_row`` (no hexcode, or not the CSV's field
  count), ``missing_svg`` (no ``color/svg/{hexcode}.svg``), ``render_failed`` (rsvg-convert failed).
"""
from __future__ import annotations

import collections
import csv
import datetime
import hashlib
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote_plus

from pipeline import Im2vecError
from pipeline.openclipart import photo_id as path_id, user_id
from pipeline.yfcc import COLUMNS_25

VERSION = "17.0.0"
# Where `make openmoji` unpacks the package: the Makefile's OPENMOJI_DIR, in the checkout.
DEFAULT_SOURCE = Path(__file__).resolve().parents[1] / ".cache" / f"openmoji-{VERSION}"
CSV_PATH = "data/openmoji.csv"
SVG_DIR = "color/svg"
SIZE = 256   # px: the CNN resizes the short side to 256 before its 224 crop
LICENSE_NAME = "Attribution-ShareAlike 4.0 International"
LICENSE_URL = "https://creativecommons.org/licenses/by-sa/4.0/"
COLUMNS = ("emoji", "hexcode", "group", "subgroups", "annotation", "tags", "openmoji_tags", "openmoji_author",
           "openmoji_date", "skintone", "skintone_base_hexcode")
PROGRESS_EVERY = 1000


def write_demo_data(out: str, limit: int = 0, source: str | os.PathLike = DEFAULT_SOURCE) -> dict:
    """Convert the unpacked openmoji npm package into YFCC metadata plus an image folder.

    Args:
        out: output folder; a previous conversion in it is replaced.
        limit: at most this many images (0 = all, 2,435 of the 4,495 rows of openmoji 17.0.0);
            rows after the limit-th image are not read.
        source: the package folder (``data/openmoji.csv``, ``color/svg/``).

    Returns:
        summary dict: ``out``, ``rows`` (CSV rows read), ``images`` (rows written), ``users``
        (distinct user_id), ``tagged`` (images with at least one tag), ``distinct_tags`` (as written,
        before the clean stage's lower-casing), ``skipped`` ({reason: rows}, see the module
        docstring; ``images + sum(skipped) == rows``), ``seconds``.

    Raises:
        Im2vecError: the package is not there, the CSV lacks a column, or rsvg-convert is missing.
    """
    started = time.time()
    source, out = Path(source).absolute(), Path(out).absolute()
    rows, header_problem = _read_rows(source)
    if header_problem:
        raise Im2vecError(f"{source / CSV_PATH}: {header_problem}")
    if not shutil.which("rsvg-convert"):
        raise Im2vecError("rsvg-convert is not installed: `sudo apt-get install librsvg2-bin` (or `make setup`)")
    kept, skipped = select_rows(rows, source / SVG_DIR, limit)

    out.mkdir(parents=True, exist_ok=True)
    metadata_path, images_dir, staging = out / "metadata.tsv", out / "images", out / "images.partial"
    metadata_path.unlink(missing_ok=True)  # from here on the folder is incomplete
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    rendered = _render_all([(source / SVG_DIR / f"{row['hexcode']}.svg", staging / f"{_photo_id(row)}.png")
                            for row in kept], started)
    written = [row for row, ok in zip(kept, rendered) if ok]
    skipped["render_failed"] += len(kept) - len(written)

    users, tags = set(), set()
    with open(out / "metadata.tsv.partial", "w", encoding="utf-8", newline="\n") as metadata, \
            open(out / "categories.tsv.partial", "w", encoding="utf-8", newline="\n") as categories:
        for line_number, row in enumerate(written):
            pid = _photo_id(row)
            svg_path = source / SVG_DIR / f"{row['hexcode']}.svg"
            metadata.write(_line(line_number, pid, row, svg_path, images_dir / f"{pid}.png") + "\n")
            categories.write(f"{pid}\t{quote_plus(row['group'])}/{quote_plus(row['subgroups'])}\n")
            users.add(user_id(row["openmoji_author"]))
            tags.update(row_tags(row))
    shutil.rmtree(images_dir, ignore_errors=True)
    staging.rename(images_dir)
    (out / "categories.tsv.partial").replace(out / "categories.tsv")
    (out / "metadata.tsv.partial").replace(metadata_path)
    return {"out": str(out), "rows": len(written) + sum(skipped.values()), "images": len(written),
            "users": len(users), "tagged": sum(bool(row_tags(row)) for row in written),
            "distinct_tags": len(tags), "skipped": dict(sorted((k, v) for k, v in skipped.items() if v)),
            "seconds": round(time.time() - started, 1)}


def _read_rows(source: Path) -> tuple[list[dict], str]:
    """The CSV's rows as dicts (a row of the wrong field count holds None or a ``None`` key), and
    what is wrong with its header ("" when nothing)."""
    csv_path = source / CSV_PATH
    if not csv_path.is_file() or not (source / SVG_DIR).is_dir():
        raise Im2vecError(
            f"the openmoji package is not at {source} ({CSV_PATH} and {SVG_DIR}/ expected): run `make openmoji` "
            f"(npm pack openmoji@{VERSION}, unpacked into {DEFAULT_SOURCE}) or give --source FOLDER")
    with open(csv_path, encoding="utf-8", newline="") as src:
        reader = csv.DictReader(src)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        return list(reader), f"no column {', '.join(missing)}" if missing else ""


def select_rows(rows: list[dict], svg_dir: Path, limit: int = 0) -> tuple[list[dict], collections.Counter]:
    """The rows to convert, in CSV order, and the others counted by reason (module docstring).

    Args:
        rows: the CSV's rows (dicts of its columns); svg_dir: the package's ``color/svg``;
        limit: stop after this many rows kept (0 = none).

    Returns:
        ``(kept rows, Counter {reason: rows})``; ``len(kept) + sum(counter)`` = rows looked at.
    """
    hexcodes = {row.get("hexcode") for row in rows}
    skipped, kept = collections.Counter(), []
    seen_hexcodes, seen_svgs, stand_in = set(), set(), {}
    for row in rows:
        if limit and len(kept) >= limit:
            break
        hexcode = row.get("hexcode") or ""
        if None in row or None in row.values() or not hexcode:
            skipped["bad_row"] += 1
        elif hexcode in seen_hexcodes:
            skipped["duplicate_hexcode"] += 1
        elif row["skintone"] and (row["skintone_base_hexcode"] in hexcodes
                                  or stand_in.setdefault(row["skintone_base_hexcode"], hexcode) != hexcode):
            skipped["skin_tone_variant"] += 1
        elif not (svg_dir / f"{hexcode}.svg").is_file():
            skipped["missing_svg"] += 1
        elif (digest := _md5(svg_dir / f"{hexcode}.svg")) in seen_svgs:
            skipped["duplicate"] += 1
        else:
            seen_svgs.add(digest)
            row["hash"] = digest
            kept.append(row)
        seen_hexcodes.add(hexcode)
    return kept, skipped


def row_tags(row: dict) -> list[str]:
    """An emoji's tags: the CLDR ``tags`` then ``openmoji_tags``, split on ``,``, stripped, without
    empty or repeated ones (first kept), as written to ``user_tags`` before URL-encoding."""
    tags = (tag.strip() for field in (row["tags"], row["openmoji_tags"]) for tag in field.split(","))
    return list(dict.fromkeys(tag for tag in tags if tag))


def _photo_id(row: dict) -> int:
    return path_id(f"{SVG_DIR}/{row['hexcode']}.svg")


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _date_taken(text: str) -> str:
    """``openmoji_date`` (``YYYY-MM-DD``) as YFCC's ``YYYY-MM-DD 00:00:00.0``; ``null`` if it is not one."""
    try:
        return datetime.date.fromisoformat(text.strip()).strftime("%Y-%m-%d 00:00:00.0")
    except ValueError:
        return "null"


def _line(line_number: int, pid: int, row: dict, svg_path: Path, image_path: Path) -> str:
    fields = dict.fromkeys(COLUMNS_25, "")
    author = row["openmoji_author"].strip()
    fields.update(
        line_number=str(line_number), photo_id=str(pid), hash=row["hash"],
        user_id=user_id(author), user_nickname=quote_plus(author), date_taken=_date_taken(row["openmoji_date"]),
        title=quote_plus(row["annotation"].strip()), description=quote_plus(row["emoji"].strip()),
        user_tags=",".join(quote_plus(tag) for tag in row_tags(row)),
        page_url=svg_path.as_uri(), download_url=image_path.as_uri(),
        license_name=quote_plus(LICENSE_NAME), license_url=LICENSE_URL, extension_original="png", marker="0",
    )
    return "\t".join(fields[column] for column in COLUMNS_25)


def render(svg_path: Path, png_path: Path, size: int = SIZE) -> bool:
    """Render one svg to a ``size`` x ``size`` px RGBA PNG with rsvg-convert; False when it fails
    (the reason goes to stderr)."""
    done = subprocess.run(["rsvg-convert", "--width", str(size), "--height", str(size), "--format", "png",
                           "--output", str(png_path), str(svg_path)], capture_output=True, text=True)
    if done.returncode != 0 or not png_path.is_file():
        print(f"[im2vec] demo-data: cannot render {svg_path}: {done.stderr.strip()[:200]}", file=sys.stderr)
        png_path.unlink(missing_ok=True)
        return False
    return True


def _render_all(jobs: list[tuple[Path, Path]], started: float) -> list[bool]:
    """:func:`render` every (svg, png) pair, one rsvg-convert per core at a time; results in order."""
    results = []
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for done, ok in enumerate(pool.map(lambda job: render(*job), jobs), 1):
            results.append(ok)
            if done % PROGRESS_EVERY == 0:
                print(f"[im2vec] demo-data: {done:,} of {len(jobs):,} emoji rendered, {time.time() - started:.0f}s",
                      file=sys.stderr, flush=True)
    return results
