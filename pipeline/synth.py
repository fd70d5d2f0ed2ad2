"""Synthetic YFCC100M metadata with the statistics that matter to the pipeline.

``write(out, rows)`` writes a TSV in either layout of :mod:`pipeline.yfcc` that looks like the
real dump to every stage downstream:

* tags: an unbounded tag set drawn Zipf-like (real English words and places at the head,
  generated syllable words after them), with multi-word, non-ASCII, comma, ``&`` and ``+``
  tags, mixed-case duplicates ("Dog", "dog") and the noise the cleaner drops (years, numbers,
  camera makers/models, meta tags like "flickr" or "iphoneography"). A power-law tail of
  ever new words makes the distinct tags grow with the rows as in the real dump (Heaps' law):
  158k distinct raw tags at 1M rows (66% used once; 41k on >= 3 photos by >= 2 users) and 403k
  at 4M (74%; 72k) as measured, and from simulated draws ~6M at 100M (~80% used once, ~800k
  on >= 3 photos; see HEAD_RANKS);
* users: Zipf-distributed upload counts; a user's bulk uploads repeat one tag set (and one
  description), the leak the by-user split exists for; some users never tag (~40% of the
  photos are untagged), some geotag (~30% of the photos have coordinates);
* ~1% videos, ~5% photos with machine tags, titles ~20 characters (camera file names or a few
  words), descriptions 0..300 characters, mostly empty;
* about ``malformed_fraction`` of the rows broken in one of the ways the clean stage rejects
  (see ``MALFORMED``). Every other row is well-formed.

The same ``(rows, seed)`` gives the same photos, in the same order, in both layouts: every
value is drawn from random streams keyed by (seed, chunk), never by the layout, and the
25-column layout only adds ``line_number`` (0-based, as in the real single-file release)
and ``hash``. A malformed row is the same photo broken the same way in both layouts.

Generation is vectorized over chunks of ``CHUNK_ROWS`` rows with numpy and pyarrow compute
(strings are joined by Arrow, never row by row in Python, except the ~1% malformed rows), and
streamed to the file: ~100k rows/s on a core at load ~5 (64M rows in ~11 min), a third of that at load 20.
"""
from __future__ import annotations

import bz2
import math
import os
from urllib.parse import quote_plus

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import Im2vecError
from pipeline.yfcc import COLUMNS_23, LAYOUTS

# Rows per generated chunk. Part of the output's definition: changing it changes the file
# a seed gives, because each chunk draws from its own random stream.
CHUNK_ROWS = 100_000

# The kinds of malformed row, as counted in write()'s result and rejected by the clean stage.
MALFORMED = ["field_count", "bad_photo_id", "bad_escape", "oversize_field"]
OVERSIZE_BYTES = 70_000      # > the clean stage's max_field_bytes (65536)

# Tag ranks: the first HEAD_RANKS (real words, noise, then generated words) follow a Zipf(1.0)
# head table; a share TAIL_MASS of all draws comes from an open-ended power-law tail beyond them,
# rank HEAD_RANKS + floor(TAIL_SCALE * (U ** (-1 / (TAIL_EXPONENT - 1)) - 1)), whose distinct
# tags keep growing with the rows like Heaps' law (~ draws ** (1 / TAIL_EXPONENT)), most of them
# seen once. Every rank has its own string (_generated_tags), so the tag set is unbounded.
HEAD_RANKS = 25_000
TAIL_MASS = 0.2
TAIL_EXPONENT = 1.25
TAIL_SCALE = 500.0
TAIL_RANKS = 100 ** 6 - HEAD_RANKS   # tail ranks wrap around here (6 syllables at most)
UNTAGGED_USERS = 0.35        # users who (almost) never tag
GEO_USERS = 0.35             # users who geotag most photos
VIDEO_FRACTION = 0.01
MACHINE_TAGGED = 0.05
UPLOAD_START, UPLOAD_END = 1077926400, 1398902400   # 2004-02-28 .. 2014-05-01, unix seconds

# Head of the tag vocabulary, most frequent first (Flickr's all-time popular tags, roughly);
# "_" stands for a space inside a multi-word tag.
CONTENT_TAGS = [tag.replace("_", " ") for tag in """
travel nature wedding usa london beach sunset water art sky party california city japan family
trip new_york music france vacation night friends park italy summer snow winter england canada
flowers tree germany architecture paris people street spain garden portrait dog cat church
festival blue red green sea lake river mountains clouds bird birds flower food car cars train
bridge building museum concert graffiti landscape black_and_white bw macro light color baby
kids children girl boy zoo animals animal birthday christmas halloween holiday school
university ocean island hiking camping sport football soccer baseball race bike bicycle horse
sheep cow farm field forest woods rain fog sun moon stars fireworks castle cathedral temple
tower skyline downtown road boat ship harbor port airport airplane plane window door house home
kitchen dinner lunch breakfast cake coffee beer wine restaurant market shop sign statue
sculpture fountain plaza street_art texas florida chicago san_francisco los_angeles washington
boston seattle australia sydney melbourne china india thailand vietnam mexico brazil peru
argentina ireland scotland wales berlin rome barcelona madrid amsterdam netherlands belgium
sweden norway denmark finland iceland switzerland austria greece turkey istanbul egypt africa
kenya south_africa hong_kong singapore korea seoul tokyo kyoto europe asia autumn fall spring
leaves reflection waterfall desert canyon valley hills rocks sand waves surf surfing skiing
snowboarding climbing running marathon dance dancing theatre band guitar drums singer stage
crowd protest parade carnival bride groom love smile face eyes hands hair fashion model woman
man men women old new vintage abandoned ruins history war memorial cemetery monument library
books computer technology robot toys lego doll game conference meeting office work students
class graduation team club hotel pool swimming fishing lighthouse pier sunrise dusk dawn
evening morning shadow silhouette abstract pattern texture wall stone wood metal glass rust
yellow orange purple pink white black gold silver insect butterfly bee spider fish duck swan
eagle owl squirrel deer bear elephant lion tiger monkey giraffe puppy kitten pet pets rose
tulip sunflower cherry_blossom grass plants cactus mushroom fruit apple vegetables pizza sushi
ice_cream chocolate bread cheese tea cocktail bar pub nightlife lights neon traffic bus taxi
subway metro station railway motorcycle truck tractor""".split()]

# Tags that say nothing about the pixels: what the clean stage's filters drop.
NOISE_TAGS = ([str(year) for year in range(2004, 2016)]
              + "1 2 3 10 12 100 365 1000".split()
              + """canon nikon sony olympus panasonic fujifilm pentax leica lumix eos dslr
                 eos5dmarkii eos7d 550d d90 d700 nikond90 canoneos400d iphone iphone4 iphone4s
                 iphone5 iphone6s samsung galaxy gopro 50mm 18-55mm""".split()
              + """flickr photo photos photography foto fotografia picture pictures image
                 iphoneography instagram instagramapp square squareformat hipstamatic nofilter
                 geotagged hdr explore interestingness flickrandroidapp""".split())

# Tags that exercise the encoding: multi-word, non-ASCII, ',', '&', '+', '%', quotes.
SPECIAL_TAGS = ["café", "münchen", "東京", "são paulo", "zürich", "köln", "москва", "北京",
                "españa", "ελλάδα", "straße", "crème brûlée", "l'été", "washington, dc",
                "paris, france", "1,000", "rock & roll", "b&w", "r&b", "at&t", "google+", "c++",
                "a+b", "1+1", "100%", "50% off", "#nofilter", "don't", "rock'n'roll", "c/o",
                "new york city", "nyc", "saint-tropez", "sea & sky", "salt, pepper"]

SYLLABLES = """ka lo mi ren tas vel dor bri sun mar tek ola pin zu xe ba ri na ko te sa mo
lu fi ge ha jo ki la me no pa ru si to va we ya ze an el in on un ar er ir or ur al il ol ul
ber cas del fan gor hel jin kor lim mun nor pel quin ros sil tor ulm vin wex yor zel tra pre
ste gli cho sha thi bla cro fla""".split()

STOPWORDS = """the a of in at on and with to from my our by for is this that was it""".split()

# Encoded description fragments that real Flickr descriptions carry: HTML and newlines.
HTML_TOKENS = ["%3Cb%3E", "%3C%2Fb%3E", "%0A", "%0A%0A", "%3C%2Fa%3E",
               "%3Ca+href%3D%22http%3A%2F%2Fwww.flickr.com%2Fgroups%2Fexplore%2F%22%3E",
               "%3Ca+href%3D%22http%3A%2F%2Fwww.example.com%2Fblog%22+rel%3D%22nofollow%22%3E"]

CAMERAS = ["Canon EOS 400D Digital", "Canon EOS 5D Mark II", "Canon EOS 7D", "Canon EOS 550D",
           "Canon PowerShot SD1000", "Canon PowerShot G9", "NIKON D90", "NIKON D700",
           "NIKON D3100", "NIKON COOLPIX P100", "Apple iPhone 4", "Apple iPhone 4S",
           "Apple iPhone 5", "Apple iPhone 6", "SONY DSLR-A200", "SONY DSC-W55",
           "Panasonic DMC-FZ8", "Panasonic DMC-TZ5", "FUJIFILM FinePix S5600",
           "OLYMPUS IMAGING CORP. E-510", "PENTAX K10D", "SAMSUNG GT-I9300", "LEICA M9",
           "EASTMAN KODAK COMPANY KODAK EASYSHARE C743 ZOOM DIGITAL CAMERA", "GoPro HD HERO2"]

LICENSES = [
    ("Attribution-NonCommercial-ShareAlike License", "http://creativecommons.org/licenses/by-nc-sa/2.0/"),
    ("Attribution-NonCommercial License", "http://creativecommons.org/licenses/by-nc/2.0/"),
    ("Attribution-NonCommercial-NoDerivs License", "http://creativecommons.org/licenses/by-nc-nd/2.0/"),
    ("Attribution License", "http://creativecommons.org/licenses/by/2.0/"),
    ("Attribution-ShareAlike License", "http://creativecommons.org/licenses/by-sa/2.0/"),
    ("Attribution-NoDerivs License", "http://creativecommons.org/licenses/by-nd/2.0/"),
]

# (longitude, latitude) of cities users live in and travel to.
CITIES = np.array([(-74.006, 40.713), (-0.128, 51.507), (2.352, 48.857), (139.692, 35.690),
                   (-122.419, 37.775), (-118.244, 34.052), (13.405, 52.520), (12.496, 41.903),
                   (2.173, 41.385), (4.895, 52.370), (151.209, -33.869), (-87.630, 41.878),
                   (-43.173, -22.907), (-99.133, 19.433), (116.407, 39.904), (103.820, 1.352),
                   (28.978, 41.008), (-3.704, 40.417), (18.069, 59.329), (-79.383, 43.653),
                   (11.582, 48.135), (-6.260, 53.350), (-71.059, 42.360), (37.618, 55.756),
                   (77.209, 28.614), (31.236, 30.044), (18.424, -33.925), (-58.382, -34.604),
                   (126.978, 37.567), (-157.858, 21.307)])

FILE_PREFIXES = ["IMG_", "DSC_", "DSC", "P10", "DSCN", "_MG_", "DSCF", "IMG_"]
VIDEO_EXTENSIONS = ["mp4", "mov", "avi"]
PHOTO_EXTENSIONS = ["jpg"] * 17 + ["png", "gif"]


def write(out: str, rows: int, layout: int = 25, seed: int = 13,
          malformed_fraction: float = 0.01) -> dict:
    """Write `rows` lines of synthetic YFCC metadata to the local file `out`.

    Args:
        out: local path; a name ending in ``.bz2`` is written bz2-compressed. Written to a
            temporary name first and renamed, so a crash leaves no partial file.
        rows: number of lines (photos) to write, >= 0.
        layout: 23 or 25, the column layout of :mod:`pipeline.yfcc`.
        seed: the same (rows, seed) gives the same photos in either layout.
        malformed_fraction: share of rows, in [0, 1], broken in one of the ``MALFORMED`` ways.

    Returns:
        ``{"rows", "photos", "videos", "untagged", "malformed": {kind: count}}``. ``photos``,
        ``videos`` and ``untagged`` count well-formed rows only, so
        ``photos + videos + sum(malformed.values()) == rows``.
    """
    if layout not in LAYOUTS:
        raise Im2vecError(f"layout must be 23 or 25, got {layout}")
    if rows < 0:
        raise Im2vecError(f"rows must be >= 0, got {rows}")
    if not 0.0 <= malformed_fraction <= 1.0:
        raise Im2vecError(f"malformed fraction must be in [0, 1], got {malformed_fraction}")
    columns = LAYOUTS[layout]
    world = _World(seed, rows)
    counts = {"rows": rows, "photos": 0, "videos": 0, "untagged": 0,
              "malformed": {kind: 0 for kind in MALFORMED}}
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    staged = out + ".tmp"
    opener = bz2.open if out.endswith(".bz2") else open
    with opener(staged, "wb") as sink:
        for chunk, first in enumerate(range(0, rows, CHUNK_ROWS)):
            size = min(CHUNK_ROWS, rows - first)
            fields, kinds, video = _chunk(world, seed, chunk, first, size, malformed_fraction)
            sink.write(_lines(fields, columns))
            good = kinds < 0
            videos = int(np.count_nonzero(good & video))
            counts["videos"] += videos
            counts["photos"] += int(np.count_nonzero(good)) - videos
            counts["untagged"] += int(np.count_nonzero(
                good & (pc.binary_length(fields["user_tags"]).to_numpy() == 0)))
            for code, kind in enumerate(MALFORMED):
                counts["malformed"][kind] += int(np.count_nonzero(kinds == code))
    os.replace(staged, out)
    return counts


# ----------------------------------------------------------------------------- world


class _World:
    """What every chunk draws from: the tag vocabulary, text words and the user table.

    Depends on (seed, rows) only; the number of users grows with `rows` (~20 photos each).
    """

    def __init__(self, seed: int, rows: int):
        rng = np.random.default_rng([seed, 0])
        self.tags = _tag_vocabulary(rng)                       # encoded, ranks 0..HEAD_RANKS-1
        self.tag_cdf = _zipf_cdf(len(self.tags), exponent=1.0, offset=2.7)
        self.words = _text_words(rng, self.tags)
        self.word_cdf = _zipf_cdf(len(self.words), exponent=1.1, offset=1.0)
        self.machine_tags = _machine_tags(rng)
        self.machine_cdf = _zipf_cdf(len(self.machine_tags), exponent=0.8, offset=2.0)
        self.cameras = pa.array([quote_plus(name) for name in CAMERAS] + [""])
        self.camera_cdf = _zipf_cdf(len(CAMERAS), exponent=0.7, offset=1.0)
        self.license_names = pa.array([quote_plus(name) for name, _ in LICENSES])
        self.license_urls = pa.array([url for _, url in LICENSES])
        self._users(rng, max(10, rows // 20), rows)

    def _users(self, rng: np.random.Generator, n: int, rows: int) -> None:
        self.user_cdf = _zipf_cdf(n, exponent=1.1, offset=10.0)
        expected_photos = np.diff(self.user_cdf, prepend=0.0) * rows
        # Unique NSIDs: one 8-digit number per slot of width `step`, shuffled.
        step = 90_000_000 // n
        numbers = 10_000_000 + rng.permutation(n) * step + rng.integers(0, step, n)
        suffixes = pa.array(["@N00", "@N02", "@N03", "@N04", "@N05", "@N07", "@N08"])
        self.user_ids = pc.binary_join_element_wise(
            pa.array(numbers).cast(pa.string()), suffixes.take(rng.integers(0, len(suffixes), n)), "")
        self.nicknames = _nicknames(rng, n)
        self.tag_prob = np.where(rng.random(n) < UNTAGGED_USERS, 0.03, rng.uniform(0.8, 1.0, n))
        self.geo_prob = np.where(rng.random(n) < GEO_USERS, rng.uniform(0.7, 0.95, n), 0.02)
        self.bulk_prob = np.where(expected_photos > 50, rng.uniform(0.5, 0.9, n), rng.uniform(0, 0.2, n))
        self.home = rng.integers(0, len(CITIES), n)
        self.camera = np.where(rng.random(n) < 0.2, len(CAMERAS), _draw(rng, self.camera_cdf, n))
        self.phone = np.where(rng.random(n) < 0.5, len(CAMERAS), _draw(rng, self.camera_cdf, n))
        self.license = rng.integers(0, len(LICENSES), n)
        # The tag set and description a user's bulk uploads repeat.
        self.set_lengths = rng.integers(3, 13, n)
        self.set_starts = np.cumsum(self.set_lengths) - self.set_lengths
        self.set_ids = _draw_tags(rng, self, int(self.set_lengths.sum()))
        self.descriptions = _descriptions(rng, self, n, empty=0.4)


def _zipf_cdf(n: int, exponent: float, offset: float) -> np.ndarray:
    """Cumulative probabilities, float64[n], of rank r (0-based) with weight (r+1+offset)^-exponent."""
    weights = (np.arange(n) + 1.0 + offset) ** -exponent
    cdf = np.cumsum(weights)
    return cdf / cdf[-1]


def _draw(rng: np.random.Generator, cdf: np.ndarray, k: int) -> np.ndarray:
    """k ranks, int64[k], drawn from the distribution whose cumulative probabilities are `cdf`."""
    return np.minimum(np.searchsorted(cdf, rng.random(k), side="right"), len(cdf) - 1)


def _draw_tags(rng: np.random.Generator, world: "_World", k: int) -> np.ndarray:
    """k tag ranks, int64[k]: from the Zipf head table, or (share TAIL_MASS) the power-law tail."""
    ranks = _draw(rng, world.tag_cdf, k)
    tail = rng.random(k) < TAIL_MASS
    spread = np.minimum(TAIL_SCALE * ((1.0 - rng.random(k)) ** (-1.0 / (TAIL_EXPONENT - 1.0)) - 1.0), 1e15)
    return np.where(tail, HEAD_RANKS + spread.astype(np.int64) % TAIL_RANKS, ranks)


def _tag_strings(world: "_World", ranks: np.ndarray) -> pa.Array:
    """The encoded tag of each rank, string[len(ranks)]: the head table's, or a generated one."""
    head = ranks < len(world.tags)
    strings = world.tags.take(pa.array(np.where(head, ranks, 0)))
    if head.all():
        return strings
    return pc.replace_with_mask(strings, pa.array(~head), _generated_tags(ranks[~head]))


CV_SYLLABLES = pa.array([c + v for c in "bcdfghjklmnprstvwxyz" for v in "aeiou"])   # 100, two letters each


def _generated_tags(ranks: np.ndarray) -> pa.Array:
    """A distinct lowercase ASCII word per rank, string[len(ranks)]: the rank's base-100 digits,
    least significant first, as consonant-vowel syllables (3 to 6); by a hash of the rank, one
    in ten is two words joined by "+", one in twenty ends in a number. Distinct ranks give
    distinct words (two-letter syllables decode uniquely; "+" and the number are removable)."""
    ranks = np.asarray(ranks, dtype=np.int64)
    lengths = 3 + sum((ranks >= 100 ** p).astype(np.int64) for p in (3, 4, 5))
    digits = (ranks[:, None] // 100 ** np.arange(6)) % 100
    used = np.arange(6) < lengths[:, None]
    words = _join_ragged(CV_SYLLABLES, digits[used], lengths, "")
    hashed = ((ranks.astype(np.uint64) * np.uint64(0x9E3779B1)) % np.uint64(1_000_003)).astype(np.int64)
    first = _join_ragged(CV_SYLLABLES, digits[:, :2].ravel(), np.full(len(ranks), 2), "")
    rest = _join_ragged(CV_SYLLABLES, digits[used & (np.arange(6) >= 2)], lengths - 2, "")
    number = pa.array(1 + hashed // 20 % 2015).cast(pa.string())
    return pc.if_else(hashed % 20 < 2, pc.binary_join_element_wise(first, rest, "+"),
                      pc.if_else(hashed % 20 == 2, pc.binary_join_element_wise(words, number, ""), words))


def _tag_vocabulary(rng: np.random.Generator) -> pa.Array:
    """The head tags, URL-encoded, most frequent first: a string array of HEAD_RANKS tags.

    Real words lead, noise tags sit among them, special and mixed-case ones further down,
    then generated words (:func:`_generated_tags` of their rank) fill the rest.
    """
    content = list(dict.fromkeys(CONTENT_TAGS))
    mixed_case = ([tag.capitalize() for tag in content[:200]] + [tag.upper() for tag in content[:40]]
                  + ["NewYork", "Canon", "Nikon", "iPhone", "Flickr", "Instagram", "NYC"])
    # An inserted tag takes a fractional rank among the content words; sorting merges them.
    ranked = [(float(rank), tag) for rank, tag in enumerate(content)]
    for tags, low, high in [(NOISE_TAGS, 3, 300), (SPECIAL_TAGS, 20, 5000), (mixed_case, 300, 20000)]:
        ranked += [(rank - 0.5, tag) for rank, tag in zip(rng.integers(low, high, len(tags)), tags)]
    head = list(dict.fromkeys(quote_plus(tag) for _, tag in sorted(ranked, key=lambda pair: pair[0])))
    # Head ranks past len(content) (mixed case) interleave with the generated words, as in real data.
    return pa.concat_arrays([pa.array(head), _generated_tags(np.arange(len(head), HEAD_RANKS))])


def _syllable_words(rng: np.random.Generator, n: int) -> pa.Array:
    """n pronounceable lowercase words of 2..4 syllables, mostly 3 or 4 (duplicates possible)."""
    lengths = np.where(rng.random(n) < 0.1, 2, rng.integers(3, 5, n))
    ids = rng.integers(0, len(SYLLABLES), int(lengths.sum()))
    return _join_ragged(pa.array(SYLLABLES), ids, lengths, "")


def _text_words(rng: np.random.Generator, tags: pa.Array) -> pa.Array:
    """Encoded words for titles and descriptions, most frequent first."""
    content = [quote_plus(tag) for tag in CONTENT_TAGS]
    head = STOPWORDS + content[:150]
    punctuated = [word + mark for word in content[:60] for mark in ("%2C", ".", "%21", "%3F")]
    capitalized = [word.capitalize() for word in content[:200]]
    mixed = content[150:] + punctuated + capitalized + HTML_TOKENS + [quote_plus(tag) for tag in SPECIAL_TAGS]
    mixed = [mixed[i] for i in rng.permutation(len(mixed))]
    return pa.concat_arrays([pa.array(head + mixed), tags[5000:25000]])


def _machine_tags(rng: np.random.Generator) -> pa.Array:
    """Encoded namespace:predicate=value machine tags, most frequent first."""
    countries = "france usa japan germany italy spain uk canada australia brazil".split()
    cities = "paris london tokyo berlin rome madrid newyork sydney toronto amsterdam".split()
    tags = [f"geo:country={name}" for name in countries] + [f"geo:locality={name}" for name in cities]
    tags += ["uploaded:by=instagram", "uploaded:by=flickrmobile", "camera:make=canon",
             "camera:make=nikon", "exif:iso_speed=100", "exif:iso_speed=400"]
    tags += [f"upcoming:event={n}" for n in rng.integers(100_000, 9_999_999, 1500)]
    tags += [f"lastfm:event={n}" for n in rng.integers(100_000, 2_999_999, 1000)]
    tags += [f"foursquare:venue={n:024x}" for n in rng.integers(0, 2**62, 500)]
    tags += [f"dopplr:trip={n}" for n in rng.integers(1000, 999_999, 200)]
    return pa.array(list(dict.fromkeys(quote_plus(tag) for tag in tags)))


def _nicknames(rng: np.random.Generator, n: int) -> pa.Array:
    """n encoded user nicknames: syllable names, some with a space, digits or non-ASCII."""
    first = _syllable_words(rng, n)
    last = _syllable_words(rng, n)
    digits = pa.array(rng.integers(1, 999, n)).cast(pa.string())
    accented = pa.array([quote_plus(name) for name in ("José", "Zoë", "Åsa", "Jürgen", "Ştefan", "李")])
    kind = rng.random(n)
    return pc.if_else(kind < 0.3, pc.binary_join_element_wise(first, last, "+"),
                      pc.if_else(kind < 0.5, pc.binary_join_element_wise(first, digits, ""),
                                 pc.if_else(kind < 0.53, accented.take(rng.integers(0, len(accented), n)),
                                            first)))


def _join_ragged(values: pa.Array, ids: np.ndarray, lengths: np.ndarray, separator: str) -> pa.Array:
    """Per row, `separator`.join(values[ids[...]]) over consecutive runs of `lengths[row]` ids.

    Returns a string array of len(lengths) rows; a row of length 0 is "".
    """
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    lists = pa.ListArray.from_arrays(pa.array(offsets), values.take(pa.array(ids, pa.int64())))
    return pc.binary_join(lists, separator)


def _descriptions(rng: np.random.Generator, world: _World, n: int, empty: float) -> pa.Array:
    """n encoded descriptions of 3..50 words (~0..300 characters); a share `empty` is ""."""
    lengths = np.where(rng.random(n) < empty, 0, rng.integers(3, 51, n))
    ids = _draw(rng, world.word_cdf, int(lengths.sum()))
    return _join_ragged(world.words, ids, lengths, "+")


def _hex(rng: np.random.Generator, n: int, width: int) -> pa.Array:
    """n random lowercase hex strings of `width` characters."""
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[rng.integers(0, 16, (n, width))]
    offsets = np.arange(0, n * width + 1, width, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(digits.tobytes())])


# ----------------------------------------------------------------------------- chunk


def _chunk(world: _World, seed: int, chunk: int, first: int, n: int,
           malformed_fraction: float) -> tuple[dict, np.ndarray, np.ndarray]:
    """The fields of rows first..first+n-1, layout-free.

    Returns ({column name: string array[n]} for every column of both layouts, int8[n]
    malformed kinds: an index into MALFORMED or -1 for a well-formed row, and bool[n] true
    for a video). A field set to null is missing from its line (a truncated row).
    """
    rng = np.random.default_rng([seed, 1, chunk])
    row = np.arange(n)
    user = _draw(rng, world.user_cdf, n)
    video = rng.random(n) < VIDEO_FRACTION
    fields = {}
    # Ids: one per slot of 5000 ids, so chunks never collide; shuffled within the chunk.
    photo_ids = 1_000_000 + (first + rng.permutation(n)) * 5000 + rng.integers(0, 5000, n)
    fields["line_number"] = pa.array(first + row).cast(pa.string())
    fields["photo_id"] = pa.array(photo_ids).cast(pa.string())
    fields["hash"] = _hex(rng, n, 32)
    fields["user_id"] = world.user_ids.take(user)
    fields["user_nickname"] = world.nicknames.take(user)

    uploaded = UPLOAD_START + ((UPLOAD_END - UPLOAD_START) * rng.random(n) ** 0.6).astype(np.int64)
    lag = np.where(rng.random(n) < 0.05, rng.integers(0, 30 * 365 * 86400, n),
                   rng.exponential(20 * 86400, n).astype(np.int64))
    taken = np.maximum(uploaded - lag, 31_536_000)
    taken_text = pc.strftime(pa.array(taken).cast(pa.timestamp("s")), format="%Y-%m-%d %H:%M:%S.0")
    fields["date_taken"] = pc.if_else(rng.random(n) < 0.001, "null", taken_text)
    fields["date_uploaded"] = pa.array(uploaded).cast(pa.string())
    device = np.where(rng.random(n) < 0.2, world.phone[user], world.camera[user])
    fields["capture_device"] = world.cameras.take(device)

    tagged = rng.random(n) < world.tag_prob[user]
    bulk = tagged & (rng.random(n) < world.bulk_prob[user])
    fields["title"] = _titles(rng, world, n)
    fields["description"] = pc.if_else(bulk, world.descriptions.take(user), _descriptions(rng, world, n, empty=0.6))
    fields["user_tags"] = _user_tags(rng, world, user, tagged, bulk)
    machine_lengths = np.where(rng.random(n) < MACHINE_TAGGED, rng.integers(1, 4, n), 0)
    fields["machine_tags"] = _join_ragged(
        world.machine_tags, _draw(rng, world.machine_cdf, int(machine_lengths.sum())), machine_lengths, ",")

    geotagged = rng.random(n) < world.geo_prob[user]
    city = np.where(rng.random(n) < 0.2, rng.integers(0, len(CITIES), n), world.home[user])
    longitude = np.clip(CITIES[city, 0] + rng.normal(0, 0.1, n), -180, 180).round(6)
    latitude = np.clip(CITIES[city, 1] + rng.normal(0, 0.1, n), -90, 90).round(6)
    accuracy = np.where(rng.random(n) < 0.6, 16, rng.integers(1, 16, n))
    fields["longitude"] = pc.if_else(geotagged, pa.array(longitude).cast(pa.string()), "")
    fields["latitude"] = pc.if_else(geotagged, pa.array(latitude).cast(pa.string()), "")
    fields["accuracy"] = pc.if_else(geotagged, pa.array(accuracy).cast(pa.string()), "")

    farm = pa.array(rng.integers(1, 10, n)).cast(pa.string())
    server = pa.array(rng.integers(1, 9999, n)).cast(pa.string())
    secret = _hex(rng, n, 10)
    fields["page_url"] = pc.binary_join_element_wise(
        "http://www.flickr.com/photos", fields["user_id"], fields["photo_id"], "", "/")
    fields["download_url"] = pc.binary_join_element_wise(
        "http://farm", farm, ".staticflickr.com/", server, "/", fields["photo_id"], "_", secret, ".jpg", "")
    fields["license_name"] = world.license_names.take(world.license[user])
    fields["license_url"] = world.license_urls.take(world.license[user])
    fields["server_id"] = server
    fields["farm_id"] = farm
    fields["secret"] = secret
    fields["secret_original"] = _hex(rng, n, 10)
    extension = np.where(video, rng.integers(0, len(VIDEO_EXTENSIONS), n),
                         len(VIDEO_EXTENSIONS) + rng.integers(0, len(PHOTO_EXTENSIONS), n))
    fields["extension_original"] = pa.array(VIDEO_EXTENSIONS + PHOTO_EXTENSIONS).take(extension)
    fields["marker"] = pc.if_else(video, "1", "0")

    kinds = _break(rng, fields, n, malformed_fraction)
    return fields, kinds, video


def _titles(rng: np.random.Generator, world: _World, n: int) -> pa.Array:
    """n encoded titles: 15% empty, 30% camera file names (IMG_1234), the rest 2..7 words."""
    kind = rng.random(n)
    number = pc.utf8_lpad(pa.array(rng.integers(1, 10000, n)).cast(pa.string()), width=4, padding="0")
    file_name = pc.binary_join_element_wise(
        pa.array(FILE_PREFIXES).take(rng.integers(0, len(FILE_PREFIXES), n)), number, "")
    lengths = np.where(kind >= 0.45, rng.integers(2, 8, n), 0)
    words = _join_ragged(world.words, _draw(rng, world.word_cdf, int(lengths.sum())), lengths, "+")
    return pc.if_else(kind < 0.15, "", pc.if_else(kind < 0.45, file_name, words))


def _user_tags(rng: np.random.Generator, world: _World, user: np.ndarray,
               tagged: np.ndarray, bulk: np.ndarray) -> pa.Array:
    """Encoded comma-joined user tags per row: a bulk row repeats its user's tag set (plus
    0..2 own tags), another tagged row draws 1 + Geometric(0.2) tags; duplicates removed."""
    n = len(user)
    set_lengths = np.where(bulk, world.set_lengths[user], 0)
    own_lengths = np.where(bulk, rng.integers(0, 3, n) * (rng.random(n) < 0.3),
                           np.where(tagged, np.minimum(rng.geometric(0.2, n), 75), 0))
    set_ids = world.set_ids[_ragged_positions(world.set_starts[user], set_lengths)]
    own_ids = _draw_tags(rng, world, int(own_lengths.sum()))
    rows = np.concatenate([np.repeat(np.arange(n), set_lengths), np.repeat(np.arange(n), own_lengths)])
    ids = np.concatenate([set_ids, own_ids])
    order = np.argsort(rows, kind="stable")      # row order, set tags first within a row
    rows, ids = rows[order], ids[order]
    _, first = np.unique(rows * (HEAD_RANKS + TAIL_RANKS) + ids, return_index=True)
    keep = np.sort(first)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows[keep], minlength=n), out=offsets[1:])
    return pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), _tag_strings(world, ids[keep])), ",")


def _ragged_positions(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ranges starts[i] .. starts[i] + lengths[i] - 1, int64[sum(lengths)]."""
    ends = np.cumsum(lengths)
    return np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - lengths - starts, lengths)


# ----------------------------------------------------------------------------- malformed


def _break(rng: np.random.Generator, fields: dict, n: int, malformed_fraction: float) -> np.ndarray:
    """Break round(malformed_fraction * n) rows of `fields` in place, one defect each.

    Returns int8[n]: the MALFORMED index of each broken row, -1 elsewhere. One row in a
    thousand broken ones (at least one) is oversize; the rest split evenly over the others.
    Every change is to a field value, never to the layout, so both layouts break alike.
    """
    kinds = np.full(n, -1, dtype=np.int8)
    broken = int(round(malformed_fraction * n))
    if broken == 0:
        return kinds
    oversize = math.ceil(broken / 1000)
    kinds_of_broken = np.concatenate([np.full(oversize, 3), np.arange(broken - oversize) % 3])
    positions = rng.choice(n, broken, replace=False)
    kinds[positions] = rng.permutation(kinds_of_broken)
    variant = rng.integers(0, 1 << 30, n)

    def replace(column: str, rows: np.ndarray, make) -> None:
        old = fields[column].take(pa.array(rows)).to_pylist()
        new = [make(value, int(variant[r])) for value, r in zip(old, rows)]
        fields[column] = pc.replace_with_mask(fields[column], _mask(n, rows), pa.array(new, pa.string()))

    wrong_count = np.flatnonzero(kinds == 0)
    truncated, extra_tabs = wrong_count[variant[wrong_count] % 2 == 0], wrong_count[variant[wrong_count] % 2 == 1]
    # A truncated line: the last 1 or 2 fields missing (null fields are left out of the line).
    for depth in (1, 2):
        rows = truncated[variant[truncated] // 2 % 2 + 1 >= depth]
        column = COLUMNS_23[-depth]
        fields[column] = pc.replace_with_mask(fields[column], _mask(n, rows), pa.nulls(len(rows), pa.string()))
    # Raw tabs inside the title: 1 or 2 fields too many.
    replace("title", extra_tabs, lambda title, v: title + "\tat+the\tbeach"[: 7 + 6 * (v // 2 % 2)])

    bad_ids = ["", "null", "{}abc", "abc", "#{}", "{}x{}"]
    replace("photo_id", np.flatnonzero(kinds == 1),
            lambda pid, v: bad_ids[v % len(bad_ids)].format(pid, pid))

    bad_escapes = ["100%", "%zz", "50%+off", "%E", "%G1"]
    escapes = np.flatnonzero(kinds == 2)
    in_title, in_tags = escapes[variant[escapes] % 2 == 0], escapes[variant[escapes] % 2 == 1]
    replace("title", in_title, lambda title, v: title + "+" + bad_escapes[v // 2 % len(bad_escapes)])
    replace("user_tags", in_tags,
            lambda tags, v: ",".join(filter(None, [tags, bad_escapes[v // 2 % len(bad_escapes)]])))

    filler = ("lorem+ipsum+dolor+sit+amet+" * (OVERSIZE_BYTES // 20))[:OVERSIZE_BYTES]
    replace("description", np.flatnonzero(kinds == 3), lambda description, v: filler)
    return kinds


def _mask(n: int, rows: np.ndarray) -> pa.Array:
    """A boolean array[n], true at `rows`."""
    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    return pa.array(mask)


def _lines(fields: dict, columns: list) -> pa.Buffer:
    """The chunk's lines in `columns` order, tab-separated, each ending "\\n", as one buffer."""
    lines = pc.binary_join_element_wise(*[fields[name] for name in columns], "\t", null_handling="skip")
    lines = pc.binary_join_element_wise(lines, "", "\n")
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32, count=len(lines) + 1, offset=4 * lines.offset)
    return lines.buffers()[2][offsets[0]: offsets[-1]]
