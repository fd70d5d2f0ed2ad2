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

from pipeline import Im2vecError, tags as tagging
from pipeline.urlcodec import url_decode

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
_AS_IS = ("user_id", "page_url", "download_url", "license_url", "server_id", "farm_id", "secret",
          "secret_original", "extension_original")
_DECIMAL = r"^-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?$"


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
                drop_camera: bool = True, stop: frozenset[str] | None = None) -> dict:
    """Parse and clean raw YFCC lines of one layout.

    Args:
        lines: string[n], raw lines; a line may keep its terminator (``\n`` or ``\r\n``), which
            is not part of the last field.
        layout: 23 or 25 (see :data:`LAYOUTS`).
        max_field_bytes: a longer raw field rejects the row as ``oversize_field``.
        drop_numeric / drop_camera / stop: tag noise rules (see :mod:`pipeline.tags`).

    Returns:
        A dict with ``clean``: a table in :data:`CLEAN_SCHEMA`, one row per kept photo, in input
        order; ``rejected``: int64 positions into ``lines`` of rejected rows; ``reasons``: their
        reasons (from :data:`REASONS`), aligned; ``videos``: how many rows were videos (dropped);
        ``dropped_tags``: {noise rule: tags removed}. Every row is exactly one of kept, rejected
        or video.
    """
    columns = LAYOUTS[layout]
    n = len(lines)
    reason = np.full(n, -1, dtype=np.int8)   # index into REASONS; -1 = fine so far

    def flag(rows: np.ndarray, mask: np.ndarray, name: str) -> None:
        hit = rows[mask]
        reason[hit[reason[hit] < 0]] = REASONS.index(name)

    parts = pc.split_pattern(lines, "\t")
    counts = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
    flag(np.arange(n), counts != len(columns), "field_count")
    rows = np.flatnonzero(counts == len(columns))
    starts = parts.offsets.to_numpy()[rows]
    flat = parts.values
    raw = {name: flat.take(pa.array(starts + j)) for j, name in enumerate(columns)}

    for name, values in raw.items():
        flag(rows, pc.binary_length(values).to_numpy() > max_field_bytes, "oversize_field")
    raw["marker"] = pc.utf8_rtrim(raw["marker"], "\r\n")
    photo_id = raw["photo_id"]
    id_length = pc.binary_length(photo_id).to_numpy()
    # 19 digits compare as strings: above int64's max does not fit.
    fits = (id_length < 19) | pc.less_equal(photo_id, "9223372036854775807").to_numpy(zero_copy_only=False)
    flag(rows, ~(_digits(photo_id) & (id_length <= 19) & fits), "bad_photo_id")

    decoded = {}
    for name in _DECODED_TEXT:
        decoded[name], bad = url_decode(raw[name])
        flag(rows, bad, "bad_escape")
    user = tagging.split_tag_lists(raw["user_tags"], drop_numeric=drop_numeric, drop_camera=drop_camera, stop=stop)
    machine = tagging.split_tag_lists(raw["machine_tags"], drop_numeric=False, drop_camera=False)
    flag(rows, user["bad_escape"] | machine["bad_escape"], "bad_escape")

    number = {"date_uploaded": _digits(raw["date_uploaded"]), "accuracy": _digits(raw["accuracy"]),
              "longitude": _matches(raw["longitude"], _DECIMAL), "latitude": _matches(raw["latitude"], _DECIMAL)}
    for name, ok in number.items():
        flag(rows, ~(ok | _empty(raw[name])), "bad_number")
    flag(rows, ~pc.is_in(raw["marker"], value_set=pa.array(["0", "1"])).to_numpy(zero_copy_only=False), "bad_number")
    if layout == 25:
        flag(rows, ~_digits(raw["line_number"]), "bad_number")
    # "2012-08-18 19:35:14.0": seconds, then an optional fraction that is dropped.
    date_taken = raw["date_taken"]
    date_length = pc.binary_length(date_taken).to_numpy()
    no_date = (date_length == 0) | _matches(date_taken, r"^(?i:null)$")
    fraction_ok = (date_length <= 19) | _matches(date_taken, r"^.{19}\.[0-9]+$")
    seconds = pc.if_else(pa.array(no_date), pa.scalar(None, pa.string()), pc.utf8_slice_codeunits(date_taken, 0, 19))
    taken = pc.strptime(seconds, format="%Y-%m-%d %H:%M:%S", unit="s", error_is_null=True)
    flag(rows, ~no_date & ~(pc.is_valid(taken).to_numpy(zero_copy_only=False) & fraction_ok), "bad_date")

    fine = reason[rows] < 0
    video = fine & (raw["marker"].to_numpy(zero_copy_only=False) == "1")
    keep = fine & ~video
    out = {
        "photo_id": raw["photo_id"],
        "hash": raw["hash"] if layout == 25 else pa.nulls(len(rows), pa.string()),
        "date_taken": taken,
        "date_uploaded": _number(raw["date_uploaded"], number["date_uploaded"], pa.int64()).cast(pa.timestamp("s")),
        "tags": user["tags"],
        "machine_tags": _concat_lists(user["machine_tags"], machine["machine_tags"], machine["tags"]),
        "longitude": _number(raw["longitude"], number["longitude"], pa.float64()),
        "latitude": _number(raw["latitude"], number["latitude"], pa.float64()),
        "accuracy": _number(raw["accuracy"], number["accuracy"], pa.int32()),
        **decoded,
        **{name: raw[name] for name in _AS_IS},
    }
    if not keep.all():
        out = {name: values.filter(pa.array(keep)) for name, values in out.items()}
    clean = pa.Table.from_arrays([out[f.name].cast(f.type) for f in CLEAN_SCHEMA], schema=CLEAN_SCHEMA)
    rejected = np.flatnonzero(reason >= 0)
    return {
        "clean": clean,
        "rejected": rejected,
        "reasons": [REASONS[r] for r in reason[rejected]],
        "videos": int(video.sum()),
        "dropped_tags": user["dropped"],
    }


def _matches(values: pa.Array, pattern: str) -> np.ndarray:
    return pc.match_substring_regex(values, pattern).to_numpy(zero_copy_only=False)


def _digits(values: pa.Array) -> np.ndarray:
    """bool[n]: the value is one or more ASCII digits (nulls: False)."""
    return pc.fill_null(pc.ascii_is_decimal(values), False).to_numpy(zero_copy_only=False)


def _empty(values: pa.Array) -> np.ndarray:
    return pc.binary_length(values).to_numpy() == 0


def _number(values: pa.Array, ok: np.ndarray, type_: pa.DataType) -> pa.Array:
    """Cast the numeric strings where ``ok`` (bool[n]) holds; the others (already rejected, or empty) -> null."""
    return pc.if_else(pa.array(ok), values, pa.scalar(None, pa.string())).cast(type_)


def _concat_lists(*lists: pa.ListArray) -> pa.ListArray:
    """Concatenate list arrays of equal length row by row: list<T>[n] x k -> list<T>[n]."""
    n = len(lists[0])
    owner = np.concatenate([pc.list_parent_indices(a).to_numpy() for a in lists])
    values = pa.concat_arrays([pc.list_flatten(a) for a in lists])
    order = np.argsort(owner, kind="stable")
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(owner, minlength=n), out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), values.take(pa.array(order)))
