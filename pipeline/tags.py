"""Tag normalization and noise filtering on Arrow arrays (vectorized; no per-tag Python).

A raw YFCC tag list is ``"2015,Canon,New+York,caf%C3%A9,my%2Cmemories,upcoming%3Aevent%3D42"``:
it is split on the raw comma first (a comma inside a tag arrives encoded as ``%2C``), then each
tag is decoded (both by :func:`pipeline.yfcc_scan.extract`), then normalized here: Unicode
NFKC, lower case, whitespace collapsed to one space and trimmed, empties and duplicates dropped
(first occurrence kept, order kept). Tags of the form ``namespace:predicate=value`` are machine
tags and go to their own column.

Noise rules (each can be turned off in config):

* numeric: pure numbers, years and number-like dates/times (``2015``, ``1,000``, ``2015-04-03``);
* camera: camera and phone makers, model names and lens/exposure tags (``canon``,
  ``eos5dmarkii``, ``nikon d90``, ``iphone6s``, ``50mm``, ``f/1.8``);
* stoplist: meta tags about the upload rather than the picture (``pipeline/stoplist.txt``).
"""
from __future__ import annotations

import unicodedata
from importlib import resources

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.yfcc_scan import first_tags

MACHINE_TAG = r"^[a-z_][a-z0-9_]*:[a-z0-9_]+=."
NUMERIC_TAG = r"^[0-9]+([.,:/ -][0-9]+)*$"
_MAKERS = ("canon|nikon|sony|fujifilm|fuji|olympus|panasonic|lumix|pentax|leica|samsung|kodak|casio|"
           "ricoh|sigma|tamron|tokina|hasselblad|minolta|konica|apple|iphone|ipad|ipod|gopro|dji|htc|"
           "nokia|lg|huawei|xiaomi|motorola|blackberry|polaroid|lomo|holga|zeiss|mamiya|yashica|voigtlander")
_MODELS = ("eos|powershot|ixus|ixy|coolpix|cybershot|cyber-shot|finepix|rebel|nex|dslr|slr|"
           "galaxy|lumia|pixel|nexus|moto|xperia")
CAMERA_TAG = "|".join([
    rf"^({_MAKERS})([ -]?[a-z]*[0-9][a-z0-9 -]*)?$",   # maker, maybe with a model: canon, nikon d90, iphone6s
    rf"^({_MODELS})[ -]?[a-z]*[0-9]*[a-z0-9 -]*$",    # model line: eos5dmarkii, powershot s95, galaxy s7
    r"^[a-z]{0,3}[0-9]{1,4}[a-z]{0,2}( ?mark ?[ivx0-9]+)?$",  # bare models: d90, 5d, 5dmarkii, a7r, x100
    r"^[0-9]+(\.[0-9]+)?-?([0-9]+)?mm$",              # focal lengths: 50mm, 18-55mm
    r"^f ?/? ?[0-9]+(\.[0-9]+)?$",                    # apertures: f/1.8, f2.8
    r"^iso ?[0-9]+$",                                 # iso400
])


def stoplist() -> frozenset[str]:
    """The packaged meta-tag stoplist (``pipeline/stoplist.txt``), normalized tags."""
    text = resources.files("pipeline").joinpath("stoplist.txt").read_text(encoding="utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def nfkc(values: pa.Array) -> pa.Array:
    """Unicode NFKC of string[n] -> string[n].

    pyarrow 14's ``utf8_normalize`` decomposes even for NFC/NFKC ("café" comes out as
    "cafe" + U+0301), so composition is done by Python's ``unicodedata`` -- once per
    distinct non-ASCII value of the batch, not per tag: ASCII is already NFKC, and Zipf-
    distributed tags repeat, so that is a small fraction of the values.
    """
    non_ascii = pc.invert(pc.string_is_ascii(values)).to_numpy(zero_copy_only=False)
    if not non_ascii.any():
        return values
    rows = np.flatnonzero(non_ascii)
    encoded = pc.dictionary_encode(values.take(pa.array(rows)))
    composed = pa.array([unicodedata.normalize("NFKC", v) for v in encoded.dictionary.to_pylist()], pa.string())
    return pc.replace_with_mask(values, pa.array(non_ascii), composed.take(encoded.indices))


def normalize(tags: pa.Array) -> pa.Array:
    """NFKC, lower case, collapse whitespace, trim: string[n] -> string[n]."""
    tags = pc.utf8_lower(nfkc(tags))
    tags = pc.replace_substring_regex(tags, r"\s+", " ")
    return pc.utf8_trim_whitespace(tags)


def tag_lists(values: pa.StringArray, parents: np.ndarray, n: int, *, drop_numeric: bool = True,
              drop_camera: bool = True, stop: frozenset[str] | None = None) -> dict:
    """Turn the decoded tags of n photos into clean tag lists.

    Args:
        values: string[t], every decoded tag of every photo (:func:`pipeline.yfcc_scan.extract`
            splits raw ``user_tags`` / ``machine_tags`` fields into them), in field order.
        parents: int[t], the photo (0..n-1, ascending) each tag belongs to.
        n: number of photos.
        drop_numeric / drop_camera: apply those noise rules.
        stop: tags to drop (the stoplist); None or empty keeps all.

    Returns:
        A dict with
        ``tags``: list<string>[n], the normalized content tags of each photo;
        ``machine_tags``: list<string>[n], its ``namespace:predicate=value`` tags;
        ``dropped``: {rule: count} of tags removed by each noise rule.
    """
    # Tags repeat (Zipf): normalize and classify each distinct tag once.
    encoded = pc.dictionary_encode(values)
    raw_codes = encoded.indices.to_numpy(zero_copy_only=False)
    distinct = normalize(encoded.dictionary)
    # Spellings that normalize alike ("Dog", "dog") must share a code for deduplication.
    renumbered = pc.dictionary_encode(distinct)
    codes = renumbered.indices.to_numpy(zero_copy_only=False)[raw_codes]
    values = renumbered.dictionary

    uses = np.bincount(codes, minlength=len(values))   # tags per distinct value
    machine = pc.match_substring_regex(values, MACHINE_TAG).to_numpy(zero_copy_only=False)
    empty = pc.utf8_length(values).to_numpy() == 0
    content = ~machine & ~empty
    dropped = {"empty": int(uses[empty].sum())}
    rules = [("numeric", drop_numeric, lambda t: pc.match_substring_regex(t, NUMERIC_TAG)),
             ("camera", drop_camera, lambda t: pc.match_substring_regex(t, CAMERA_TAG)),
             ("stoplist", bool(stop), lambda t: pc.is_in(t, value_set=pa.array(sorted(stop or ()), pa.string())))]
    for rule, enabled, matches in rules:
        if not enabled:
            continue
        hit = content & matches(values).to_numpy(zero_copy_only=False)
        dropped[rule] = int(uses[hit].sum())
        content &= ~hit

    tags = _regroup(values, codes, parents, content, n)
    machine_tags = _regroup(values, codes, parents, machine, n)
    return {"tags": tags, "machine_tags": machine_tags, "dropped": dropped}


def _regroup(values: pa.Array, codes: np.ndarray, parents: np.ndarray, keep: np.ndarray, n: int) -> pa.ListArray:
    """Rebuild list<string>[n] from kept tags, dropping duplicates within a photo.

    ``values[codes[i]]`` is flat tag i, owned by photo ``parents[i]``; ``keep`` (bool[len(values)])
    selects the values to keep.
    """
    offsets, picked = first_tags(codes, parents, keep, n)
    return pa.ListArray.from_arrays(pa.array(offsets), values.take(pa.array(picked)))
