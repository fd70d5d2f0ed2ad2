"""The YFCC100M metadata format: its two column layouts and how a raw line is parsed.

Both layouts are tab-separated, one photo or video per line, text fields URL-encoded
(``+`` is a space, ``%XX`` a byte of UTF-8), never quoted. Tags are comma-separated and
each tag is URL-encoded on its own, so a tag holding a comma arrives as ``%2C``.

* 23 columns: the 2014 release, ten files ``yfcc100m_dataset-0`` .. ``-9``, starting with the
  photo id.
* 25 columns: the single-file release: line number, photo id, photo hash, then the 23-column
  fields from the user id on (the photo id is not repeated).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import Im2vecError, tags as tagging, yfcc_scan as scan

# The 2014 ten-file layout, in file order.
COLUMNS_23 = [
    "photo_id",            # Flickr photo/video id (int64)
    "user_id",             # user NSID, e.g. 12345678@N00
    "user_nickname",       # URL-encoded
    "date_taken",          # "2012-08-18 19:35:14.0" (or "null")
    "date_uploaded",       # unix seconds
    "capture_device",      # URL-encoded, e.g. Canon+EOS+400D+Digital
    "title",               # URL-encoded
    "description",         # URL-encoded
    "user_tags",           # comma-separated, each URL-encoded
    "machine_tags",        # comma-separated, each URL-encoded (namespace:predicate=value)
    "longitude",           # decimal degrees or empty
    "latitude",
    "accuracy",            # Flickr geo accuracy level 1..16 or empty
    "page_url",
    "download_url",
    "license_name",
    "license_url",
    "server_id",
    "farm_id",
    "secret",
    "secret_original",
    "extension_original",
    "marker",              # 0 = photo, 1 = video
]

# The single-file layout: line number and hash added, the rest as above.
COLUMNS_25 = ["line_number", "photo_id", "hash"] + COLUMNS_23[1:]

LAYOUTS = {23: COLUMNS_23, 25: COLUMNS_25}

assert len(COLUMNS_23) == 23 and len(COLUMNS_25) == 25


# Why a row is rejected, in the order the checks run: the first that applies is recorded.
REASONS = ("field_count", "oversize_field", "bad_photo_id", "bad_escape", "bad_number", "bad_date")

CLEAN_SCHEMA = pa.schema([
    ("photo_id", pa.int64()),
    ("hash", pa.string()),              # null in the 23-column layout, which has none
    ("user_id", pa.string()),
    ("user_nickname", pa.string()),
    ("date_taken", pa.timestamp("s")),
    ("date_uploaded", pa.timestamp("s")),
    ("capture_device", pa.string()),
    ("title", pa.string()),
    ("description", pa.string()),
    ("tags", pa.list_(pa.string())),          # normalized content tags, noise removed
    ("machine_tags", pa.list_(pa.string())),  # namespace:predicate=value
    ("longitude", pa.float64()),
    ("latitude", pa.float64()),
    ("accuracy", pa.int32()),
    ("page_url", pa.string()),
    ("download_url", pa.string()),
    ("license_name", pa.string()),
    ("license_url", pa.string()),
    ("server_id", pa.string()),
    ("farm_id", pa.string()),
    ("secret", pa.string()),
    ("secret_original", pa.string()),
    ("extension_original", pa.string()),
])

_DECODED_TEXT = ("user_nickname", "capture_device", "title", "description", "license_name")
_AS_IS = ("hash", "user_id", "page_url", "download_url", "license_url", "server_id", "farm_id", "secret",
          "secret_original", "extension_original")
_ESCAPED = _DECODED_TEXT + ("user_tags", "machine_tags")   # checked for malformed %-escapes
assert REASONS[scan.BAD_DATE] == "bad_date" and len(REASONS) == scan.BAD_DATE + 1


def detect_layout(sample_lines: list[str], source: str) -> int:
    """The layout (23 or 25) of a file from its first lines.

    Args:
        sample_lines: the first lines of the file (a few dozen are enough).
        source: the file's name, for the error message.

    Returns:
        23 or 25: the field count most of the sampled lines have.

    Raises:
        Im2vecError: the file is empty or most lines have neither field count, naming the file.
    """
    counts = [line.count("\t") + 1 for line in sample_lines if line]
    if not counts:
        raise Im2vecError(f"{source}: the file is empty, so it is no YFCC metadata file")
    for layout in (25, 23):
        if counts.count(layout) * 2 > len(counts):
            return layout
    common = max(set(counts), key=counts.count)
    raise Im2vecError(f"{source}: not a YFCC metadata file: its first {len(counts)} lines mostly have "
                      f"{common} tab-separated fields, and YFCC has 23 (2014 ten-file layout) or 25 "
                      f"(single-file layout)")


def parse_lines(lines: pa.Array, layout: int, *, max_field_bytes: int, drop_numeric: bool = True,
                drop_camera: bool = True, stop: frozenset[str] | None = None, drop_owner: bool = True) -> dict:
    """Parse and clean raw YFCC lines of one layout.

    Args:
        lines: string[n], raw lines; a line may keep its terminator (``\n`` or ``\r\n``), which
            is not part of the last field.
        layout: 23 or 25 (see :data:`LAYOUTS`).
        max_field_bytes: a longer raw field rejects the row as ``oversize_field``.
        drop_numeric / drop_camera / stop / drop_owner: tag noise rules (see :mod:`pipeline.tags`);
            drop_owner compares each photo's tags with its own ``user_nickname``.

    Returns:
        A dict with ``clean``: a table in :data:`CLEAN_SCHEMA`, one row per kept photo, in input
        order; ``rejected``: int64 positions into ``lines`` of rejected rows; ``reasons``: their
        reasons (from :data:`REASONS`), aligned; ``videos``: how many rows were videos (dropped);
        ``dropped_tags``: {noise rule: tags of kept photos removed}. Every row is exactly one of
        kept, rejected or video.
    """
    columns = LAYOUTS[layout]
    col = {name: j for j, name in enumerate(columns)}
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    line_offsets, data = scan.string_buffers(lines)
    bounds, reason, photo_id, date_taken, date_state, date_uploaded, accuracy, video = scan.scan_lines(
        data, line_offsets, len(columns), np.array([name in _ESCAPED for name in columns]), max_field_bytes,
        col["photo_id"], col.get("line_number", -1), col["date_taken"], col["date_uploaded"], col["accuracy"],
        col["longitude"], col["latitude"], col["marker"])

    # strptime reads more spellings than "YYYY-MM-DD HH:MM:SS" (single digits, spaces): the scan
    # leaves dates spelled otherwise, if any, to it (the fraction after 19 characters is checked).
    unusual = np.flatnonzero((reason < 0) & (date_state == scan.DATE_UNUSUAL))
    if len(unusual):
        [spelled], _ = scan.extract(data, bounds, unusual, [col["date_taken"]], [False], [])
        taken = pc.strptime(pc.utf8_slice_codeunits(spelled, 0, 19), format="%Y-%m-%d %H:%M:%S", unit="s",
                            error_is_null=True)
        reason[unusual[~pc.is_valid(taken).to_numpy(zero_copy_only=False)]] = scan.BAD_DATE
        date_taken[unusual] = pc.fill_null(taken.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)

    fine = reason < 0
    kept = np.flatnonzero(fine & ~video)
    text = [name for name in columns if name in _DECODED_TEXT + _AS_IS + ("longitude", "latitude")]
    text_arrays, ((user_tags, user_parents), (machine_tags, machine_parents)) = scan.extract(
        data, bounds, kept, [col[name] for name in text], [name in _DECODED_TEXT for name in text],
        [col["user_tags"], col["machine_tags"]])
    out = dict(zip(text, text_arrays))
    for name in ("longitude", "latitude"):
        out[name] = pc.if_else(pc.greater(pc.binary_length(out[name]), 0), out[name], None).cast(pa.float64())
    if layout == 23:
        out["hash"] = pa.nulls(len(kept), pa.string())
    out["photo_id"] = pa.array(photo_id[kept])
    out["date_taken"] = pa.array(date_taken[kept], pa.timestamp("s"), mask=date_state[kept] == scan.DATE_MISSING)
    out["date_uploaded"] = pa.array(date_uploaded[kept], pa.timestamp("s"), mask=date_uploaded[kept] < 0)
    out["accuracy"] = pa.array(accuracy[kept], mask=accuracy[kept] < 0)
    user = tagging.tag_lists(user_tags, user_parents, len(kept), drop_numeric=drop_numeric,
                             drop_camera=drop_camera, stop=stop, drop_owner=drop_owner,
                             owners=out["user_nickname"])
    machine = tagging.tag_lists(machine_tags, machine_parents, len(kept), drop_numeric=False, drop_camera=False)
    out["tags"] = user["tags"]
    out["machine_tags"] = _concat_lists(user["machine_tags"], machine["machine_tags"], machine["tags"])
    clean = pa.Table.from_arrays([out[f.name].cast(f.type) for f in CLEAN_SCHEMA], schema=CLEAN_SCHEMA)
    rejected = np.flatnonzero(reason >= 0)
    return {
        "clean": clean,
        "rejected": rejected,
        "reasons": [REASONS[r] for r in reason[rejected]],
        "videos": int((fine & video).sum()),
        "dropped_tags": user["dropped"],
    }


def _concat_lists(*lists: pa.ListArray) -> pa.ListArray:
    """Concatenate list arrays of equal length row by row: list<T>[n] x k -> list<T>[n]."""
    n = len(lists[0])
    owner = np.concatenate([pc.list_parent_indices(a).to_numpy() for a in lists])
    values = pa.concat_arrays([pc.list_flatten(a) for a in lists])
    order = np.argsort(owner, kind="stable")
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(owner, minlength=n), out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), values.take(pa.array(order)))
