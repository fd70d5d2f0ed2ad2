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
* stoplist: meta tags about the upload rather than the picture (``pipeline/stoplist.txt``);
* owner: the uploader tagging their own name or web site (``Guenter, Günter, Leitenbauer,
  www.leitenbauer.net`` on a photo of Venice by a user of that name): tags that equal the
  uploader's nickname or one of its words (of at least ``OWNER_MIN_CHARS`` characters, also
  spelled without accents or with German umlauts transliterated), and web addresses
  (:data:`WEB_ADDRESS_TAG`). Counted as ``owner`` and ``web_address``.
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
# www.x / http(s):... / a dotted host name ending in a common top-level domain, maybe with a path.
_TLDS = ("com|net|org|info|biz|edu|gov|io|co|me|tv|us|uk|de|fr|it|nl|es|ru|jp|ch|at|be|ca|au|eu|pl|se|dk|no|fi|"
         "cz|br|cn|nz|ie|pt|gr|hu|ro|in|mx|ar|za|kr|tw|hk|sg")
WEB_ADDRESS_TAG = rf"^(https?:|www\.)|^[a-z0-9][a-z0-9-]{{2,}}(\.[a-z0-9-]+)*\.({_TLDS})(/[^ ]*)?$"
OWNER_MIN_CHARS = 3   # shorter nickname words ("al", "jo") are too often real tags
_TRANSLITERATIONS = (("ä", "ae"), ("ö", "oe"), ("ü", "ue"), ("ß", "ss"))


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


def owner_spellings(nicknames: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """The tags a user might give their own photos, from their nickname, normalized as tags are.

    Args:
        nicknames: string[d], decoded nicknames (null or empty: none).

    Returns:
        ``(spellings, owner)``: string[w] and int[w], the nickname index (0..d-1) each spelling
        belongs to. A nickname gives its words joined by spaces and joined up ("The_Light-Painter":
        "the light painter", "thelightpainter") and each of its words
        (split at anything but letters and digits, and also at camelCase humps: "JohnSmith" gives
        "johnsmith", "john" and "smith"), each also without accents ("günter" -> "gunter") and with German
        transliteration ("guenter"); spellings shorter than OWNER_MIN_CHARS are left out.
    """
    nicknames = pc.fill_null(nicknames, "")
    index = np.arange(len(nicknames))
    # Split into words below, so spaces need no collapsing here (normalize's regex is the costly part).
    whole = pc.utf8_lower(nfkc(nicknames))
    # camelCase humps: only the few nicknames that have one are split again.
    humped = np.flatnonzero(pc.match_substring_regex(nicknames, r"\p{Ll}\p{Lu}").to_numpy(zero_copy_only=False))
    humps = pc.utf8_lower(nfkc(pc.replace_substring_regex(nicknames.take(pa.array(humped)), r"(\p{Ll})(\p{Lu})",
                                                          r"\1 \2")))
    words = pc.split_pattern_regex(pa.concat_arrays([whole, humps]), r"[^\p{L}\p{N}]+")
    owner_of_word = np.concatenate([index, humped])[pc.list_parent_indices(words).to_numpy()]
    whole_words = words.slice(0, len(nicknames))
    spellings = pa.concat_arrays([pc.binary_join(whole_words, " "), pc.binary_join(whole_words, ""),
                                  pc.list_flatten(words)])
    owners = np.concatenate([index, index, owner_of_word])
    # Accents and umlauts: only non-ASCII spellings have any.
    foreign = np.flatnonzero(pc.invert(pc.string_is_ascii(spellings)).to_numpy(zero_copy_only=False))
    if len(foreign):
        accented = spellings.take(pa.array(foreign))
        spellings = pa.concat_arrays([spellings, _without_accents(accented), _transliterated(accented)])
        owners = np.concatenate([owners, owners[foreign], owners[foreign]])
    long = (pc.utf8_length(spellings).to_numpy(zero_copy_only=False) >= OWNER_MIN_CHARS)
    return spellings.filter(pa.array(long)), owners[long]


def _without_accents(values: pa.Array) -> pa.Array:
    # NFKD splits "ü" into "u" + a combining mark (pyarrow's decomposition is right; its composition is not).
    return pc.replace_substring_regex(pc.utf8_normalize(values, "NFKD"), r"\p{Mn}+", "")


def _transliterated(values: pa.Array) -> pa.Array:
    for umlaut, spelled in _TRANSLITERATIONS:
        values = pc.replace_substring(values, umlaut, spelled)
    return values


def owner_tag_mask(values: pa.Array, codes: np.ndarray, parents: np.ndarray, owners: pa.Array) -> np.ndarray:
    """bool[t]: which tags are a spelling of their own photo's uploader (:func:`owner_spellings`).

    Args:
        values: string[v], distinct normalized tags; codes: int[t], each tag's index into values;
        parents: int[t], each tag's photo (0..n-1); owners: string[n], each photo's uploader nickname.

    Vectorized over (nickname, tag) pairs: each spelling is looked up among the tag values, and
    the pairs compared as int64 keys, never per tag in Python.
    """
    if not len(codes):
        return np.zeros(0, np.bool_)
    # Only the nicknames of photos with tags: untagged users' are never compared. Parents ascend.
    tagged = parents[np.flatnonzero(np.diff(parents, prepend=-1))]
    nick = pc.dictionary_encode(pc.fill_null(owners.take(pa.array(tagged)), ""))
    nick_codes = np.zeros(len(owners), np.int64)
    nick_codes[tagged] = nick.indices.to_numpy(zero_copy_only=False)
    spellings, spelling_owner = owner_spellings(nick.dictionary)
    # Most spellings are no tag of this batch at all: keep those that are, as tag value codes.
    spelling_values = pc.index_in(spellings.cast(values.type), value_set=values)
    found = pc.is_valid(spelling_values).to_numpy(zero_copy_only=False)
    spelling_values = spelling_values.drop_null().to_numpy().astype(np.int64)
    spelling_owner = spelling_owner[found].astype(np.int64)
    width = len(values)
    # Only tags spelled like some nickname can match: pair up those few, not every tag.
    is_spelling = np.zeros(width, np.bool_)
    is_spelling[spelling_values] = True
    candidates = np.flatnonzero(is_spelling[codes])
    mask = np.zeros(len(codes), np.bool_)
    mask[candidates] = np.isin(nick_codes[parents[candidates]] * width + codes[candidates].astype(np.int64),
                               spelling_owner * width + spelling_values)
    return mask


def tag_lists(values: pa.StringArray, parents: np.ndarray, n: int, *, drop_numeric: bool = True,
              drop_camera: bool = True, stop: frozenset[str] | None = None, drop_owner: bool = False,
              owners: pa.Array | None = None) -> dict:
    """Turn the decoded tags of n photos into clean tag lists.

    Args:
        values: string[t], every decoded tag of every photo (:func:`pipeline.yfcc_scan.extract`
            splits raw ``user_tags`` / ``machine_tags`` fields into them), in field order.
        parents: int[t], the photo (0..n-1, ascending) each tag belongs to.
        n: number of photos.
        drop_numeric / drop_camera: apply those noise rules.
        stop: tags to drop (the stoplist); None or empty keeps all.
        drop_owner: drop web addresses, and with ``owners`` (string[n], each photo's uploader
            nickname) the tags that spell the uploader (:func:`owner_tag_mask`).

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
             ("stoplist", bool(stop), lambda t: pc.is_in(t, value_set=pa.array(sorted(stop or ()), pa.string()))),
             ("web_address", drop_owner, lambda t: pc.match_substring_regex(t, WEB_ADDRESS_TAG))]
    for rule, enabled, matches in rules:
        if not enabled:
            continue
        hit = content & matches(values).to_numpy(zero_copy_only=False)
        dropped[rule] = int(uses[hit].sum())
        content &= ~hit

    content_codes = codes
    if drop_owner and owners is not None:
        # Per tag, not per distinct value: "leitenbauer" is noise on Leitenbauer's photos only.
        own = owner_tag_mask(values, codes, parents, owners) & content[codes]
        dropped["owner"] = int(own.sum())
        content_codes = np.where(own, len(values), codes)   # code len(values): a value never kept
        content = np.append(content, False)
    tags = _regroup(values, content_codes, parents, content, n)
    machine_tags = _regroup(values, codes, parents, machine, n)
    return {"tags": tags, "machine_tags": machine_tags, "dropped": dropped}


def _regroup(values: pa.Array, codes: np.ndarray, parents: np.ndarray, keep: np.ndarray, n: int) -> pa.ListArray:
    """Rebuild list<string>[n] from kept tags, dropping duplicates within a photo.

    ``values[codes[i]]`` is flat tag i, owned by photo ``parents[i]``; ``keep`` (bool[len(values)])
    selects the values to keep.
    """
    offsets, picked = first_tags(codes, parents, keep, n)
    return pa.ListArray.from_arrays(pa.array(offsets), values.take(pa.array(picked)))
