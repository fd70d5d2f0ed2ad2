"""Counter-based sampling of positive and negative tags: pure numpy over whole Arrow batches.

Every random number here is a pure function of ``(seed, epoch, stream, photo_id, counter)``:
a splitmix64 hash, vectorized over numpy ``uint64``. No generator carries state from one row to
the next, so a retried Spark task, a re-run, or a different partitioning of the same images gives
byte-identical draws. Two streams use the hash:

- positives: ``P`` tags per image from its own tags, with probability ∝ ``pos_weight`` and with
  replacement (a small categorical per image: cumulative integer weights + ``searchsorted``);
- negatives: ``K`` tags per image from the whole vocabulary by ``neg_weight`` (Vose alias table,
  O(1) per draw), never one of the image's own tags: a draw that hits an own tag is redrawn with
  the next counter value, up to :data:`NEGATIVE_TRIES` times, then drawn uniformly from the tags
  the image does not carry (so every image with fewer than V tags gets K negatives).

Shapes: ``n`` images per batch, ``V`` tags in the vocabulary, ragged tag lists given as
``offsets`` (int64[n + 1]) and ``tag_ids`` (int32[offsets[-1]], ascending and unique per image).

Sampling methods (config ``sampling``) are the entries of :data:`METHODS`: each says what the
sample stage writes per image (P positives; K negatives or none; the image's own tags or not) and
what the trainer draws from each batch, in its graph (:class:`Candidates`), and how often it
offers each tag as a candidate (for the log-Q correction and for ranking). The negatives drawn
here are Option II's (``presampled``, and ``mixed``'s pre-drawn part); the trainer's draws are
TensorFlow and import it only when called, so the sample stage never loads it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import pyarrow as pa

from pipeline import Im2vecError

# Redraws of a negative that hit one of the image's own tags before falling back to a uniform
# draw from the tags it does not carry. With own tags holding mass q of neg_weight, a slot needs
# the fallback with probability q**32: never in practice unless an image carries most of the mass.
NEGATIVE_TRIES = 32

# Stream identifiers: the same (seed, epoch, photo_id) gives independent numbers in each stream.
POSITIVES, NEGATIVES = 1, 2

# Positive weights become integers scaled to this maximum, so per-image cumulative sums are exact
# and a draw cannot depend on which other images share its batch (float sums would).
POS_WEIGHT_SCALE = 2 ** 31

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_TO_UNIT = 2.0 ** -53


@dataclass(frozen=True)
class Candidates:
    """A batch's negative candidates as a method draws them in the trainer's graph (TensorFlow tensors).

    Attributes:
        row_ids: int32[B, C1], each row's own candidates (scored row by row), or None.
        shared_ids: int32[C2], candidates every row of the batch shares (scored with one matmul), or None.
        valid: bool[B, C1 + C2], False where a candidate is no negative of that row (one of its own
            tags, or padding); None = every candidate is one.
    """
    row_ids: object = None
    shared_ids: object = None
    valid: object = None


@dataclass(frozen=True)
class TagShares:
    """Per-tag shares, float64[V] each, that a method's expected candidate counts are made of.

    Attributes:
        negative: a pre-drawn negative's chance of being tag t (neg_weight normalized).
        positive: a drawn positive's chance of being t, over the train images (each image's P
            positives are drawn from its tags by pos_weight): :func:`positive_shares` / images.
        image: the share of train images carrying t.
    """
    negative: np.ndarray
    positive: np.ndarray
    image: np.ndarray


@dataclass(frozen=True)
class Method:
    """A way of choosing each training row's positive and negative tags: one entry of :data:`METHODS`.

    Attributes:
        summary: what it does, in one line.
        draw: the trainer's draw, in its graph: ``(batch, vocab_size) -> Candidates``, ``batch`` the
            dict of tensors the epoch gives (``pos_ids`` int32[B, P], ``neg_ids`` int32[B, K], and
            ``own_ids`` int32[B, M] when :attr:`own_ids`).
        expected: ``(TagShares, P, K, B) -> float64[V]``, Q_t: how many times tag t is expected
            among one row's candidates; the log-Q correction subtracts log Q_t from every score, and
            ranking undoes the lift it gives rare tags (model.projection.tag_bias).
        stage_negatives: True: the sample stage writes ``negatives`` (K) negatives per image into
            ``neg_ids`` (:func:`draw_negatives`); False: it writes none (K = 0). Either way it writes
            ``positives`` (P) positives per image (:func:`draw_positives`).
        own_ids: whether the sample stage writes each image's own tags (``own_ids``), which the
            draw needs to keep them out of the image's negatives.
        max_tags_key: the config key bounding the vocabulary the method can train on ("" = none).
    """
    summary: str
    draw: Callable
    expected: Callable
    stage_negatives: bool = True
    own_ids: bool = False
    max_tags_key: str = ""

    def written(self, positives: int, negatives: int) -> tuple[int, int]:
        """``(P, K)``: the positives and negatives per image the sample stage writes, from the config's."""
        return positives, negatives if self.stage_negatives else 0


# --- the trainer's draws (TensorFlow, imported when a trainer calls them) ---------------------

MASK_PAD = 2 ** 31 - 1   # own_ids' padding (-1) while searching: above every tag id, so rows stay sorted


def own_tag_mask(own_ids, ids):
    """Whether each candidate is one of its row's own tags: bool[B, C].

    Args:
        own_ids: int32[B, M], each row's tags padded with -1 (the epoch's ``own_ids``).
        ids: int32[B, C] candidates per row, or int32[C] shared by every row.

    One sort of [B, M] and a binary search per candidate: O(B·C·log M), nothing of size V.
    """
    import tensorflow as tf

    own = tf.sort(tf.where(own_ids < 0, tf.constant(MASK_PAD, tf.int32), own_ids), axis=1)
    if ids.shape.rank == 1:
        ids = tf.broadcast_to(ids[None, :], [tf.shape(own)[0], tf.shape(ids)[0]])
    at = tf.minimum(tf.searchsorted(own, ids, out_type=tf.int32), tf.shape(own)[1] - 1)
    return tf.gather(own, at, batch_dims=1) == ids


def presampled_negatives(batch, vocab_size):
    """Option II: the epoch's own K negatives per row, as the sample stage drew them."""
    return Candidates(row_ids=batch["neg_ids"])


def next_image_tags(batch, vocab_size):
    """Option I: every tag of the next row's image (the last row's: the first's) minus the row's own tags."""
    import tensorflow as tf

    following = tf.roll(batch["own_ids"], shift=-1, axis=0)
    valid = (following >= 0) & ~own_tag_mask(batch["own_ids"], following)
    return Candidates(row_ids=tf.maximum(following, 0), valid=valid)


def batch_positives(batch, vocab_size):
    """In-batch: the B·P positives of the whole batch, minus the row's own tags (its own positives too)."""
    import tensorflow as tf

    shared = tf.reshape(batch["pos_ids"], [-1])
    return Candidates(shared_ids=shared, valid=~own_tag_mask(batch["own_ids"], shared))


def presampled_and_batch_positives(batch, vocab_size):
    """Mixed: the epoch's K negatives (as drawn), then the batch's positives minus the row's own tags."""
    import tensorflow as tf

    in_batch = batch_positives(batch, vocab_size)
    drawn = tf.ones_like(batch["neg_ids"], dtype=tf.bool)
    return Candidates(row_ids=batch["neg_ids"], shared_ids=in_batch.shared_ids,
                      valid=tf.concat([drawn, in_batch.valid], axis=1))


def every_tag(batch, vocab_size):
    """Full softmax: every tag of the vocabulary but the row's own."""
    import tensorflow as tf

    shared = tf.range(vocab_size, dtype=tf.int32)
    return Candidates(shared_ids=shared, valid=~own_tag_mask(batch["own_ids"], shared))


# A new method is one entry here (the sample stage, the trainer and validation ask the entry, not its name).
METHODS: dict[str, Method] = {
    "presampled": Method(
        "Option II: K negatives per image drawn by the sample stage for each epoch by neg_weight (none of "
        "the image's own tags unless exclude_own_tags is false)",
        presampled_negatives, lambda shares, P, K, B: K * shares.negative),
    "next_image": Method(
        "Option I: the tags of the next image in the batch minus the image's own, drawn by the trainer; "
        "epochs hold positives only", next_image_tags, lambda shares, P, K, B: shares.image,
        stage_negatives=False, own_ids=True),
    "in_batch": Method(
        "every positive of the batch minus the image's own tags, drawn by the trainer; epochs hold "
        "positives only", batch_positives, lambda shares, P, K, B: B * P * shares.positive,
        stage_negatives=False, own_ids=True),
    "mixed": Method(
        "the K pre-sampled negatives plus the in-batch ones", presampled_and_batch_positives,
        lambda shares, P, K, B: K * shares.negative + B * P * shares.positive, own_ids=True),
    "full_softmax": Method(
        "every tag of the vocabulary but the image's own (the reference the samplers approximate); "
        "vocabularies up to full_softmax_max_tags", every_tag,
        lambda shares, P, K, B: np.ones_like(shares.negative), stage_negatives=False, own_ids=True,
        max_tags_key="full_softmax_max_tags"),
}


def method_name(config: Mapping) -> str:
    """The config's ``sampling``; ``presampled`` when unset (pipeline/defaults.yaml sets ``mixed``; a
    mapping without the key is an epoch manifest written before there were other methods)."""
    return str(config.get("sampling") or "presampled")


def method(config: Mapping) -> Method:
    """The entry of :data:`METHODS` named by the config key ``sampling`` (:func:`method_name`), its
    settings checked.

    Raises:
        Im2vecError: an unknown name (with the known ones); ``exclude_own_tags`` or
            ``logq_correction`` not true/false; ``exclude_own_tags: false`` with a method whose
            epochs hold no pre-drawn negatives (its draw always leaves the image's own tags out).
    """
    name = method_name(config)
    if name not in METHODS:
        raise Im2vecError(f"sampling: unknown method {name!r}; known methods: {', '.join(sorted(METHODS))}")
    entry = METHODS[name]
    for key in ("exclude_own_tags", "logq_correction"):
        if not isinstance(config.get(key, False), bool):
            raise Im2vecError(f"{key} must be true or false, got {config.get(key)!r}")
    if not config.get("exclude_own_tags", True) and not entry.stage_negatives:
        raise Im2vecError(f"exclude_own_tags: false keeps own tags among the sample stage's negatives, and sampling "
                          f"{name} has none (its draw always leaves the image's own tags out)")
    return entry


def check_vocabulary(config: Mapping, vocab_size: int) -> None:
    """Raise Im2vecError (one line) when the configured method cannot train on V = ``vocab_size`` tags."""
    entry = method(config)
    if entry.max_tags_key and vocab_size > int(config[entry.max_tags_key]):
        raise Im2vecError(f"sampling {method_name(config)} scores every tag of the vocabulary for every image, and "
                          f"it has {vocab_size:,} tags, more than {entry.max_tags_key} "
                          f"({int(config[entry.max_tags_key]):,}): pick another sampling method or raise the limit")


def check_epoch(config: Mapping, manifest: dict, uri: str) -> None:
    """Raise Im2vecError (one line) unless an epoch (its manifest) holds what the configured method reads.

    A method with stage negatives needs K > 0; one with own tags needs ``own_ids``. An epoch
    sampled for a method that writes more (mixed writes both) serves every method.
    """
    entry, name = method(config), method_name(config)
    missing = [what for what, needed, there in (
        ("negatives", entry.stage_negatives, int(manifest.get("negatives") or 0) > 0),
        ("own_ids", entry.own_ids, int(manifest.get("own_tags") or 0) > 0)) if needed and not there]
    if missing:
        raise Im2vecError(f"{uri} was sampled for sampling {manifest.get('sampling', 'presampled')} and holds no "
                          f"{' or '.join(missing)}, which sampling {name} needs: sample it again with "
                          f"the same sampling (`im2vec sample --set sampling={name}`)")


def expected_candidates(entry: Method, shares: TagShares, positives: int, negatives: int,
                        batch_size: int) -> np.ndarray:
    """Q_t of ``entry`` (:attr:`Method.expected`) as float64[V] > 0: a tag it never offers gets the
    smallest count of one it does, so log Q stays finite."""
    expected = np.asarray(entry.expected(shares, positives, negatives, batch_size), dtype=np.float64)
    offered = expected[expected > 0]
    return np.maximum(expected, offered.min() if len(offered) else 1.0)


# --- counter-based random numbers ---------------------------------------------------------------

def mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: uint64 array -> uint64 array of the same shape, well mixed bits."""
    with np.errstate(over="ignore"):
        z = np.asarray(z, dtype=np.uint64)
        z = (z ^ (z >> np.uint64(30))) * _MUL1
        z = (z ^ (z >> np.uint64(27))) * _MUL2
        return z ^ (z >> np.uint64(31))


def stream_key(seed: int, epoch: int, stream: int) -> np.uint64:
    """One uint64 key for a (seed, epoch, stream); every draw of that stream derives from it."""
    key = mix64(np.array([seed], dtype=np.uint64) + _GOLDEN)
    key = mix64(key ^ np.uint64(epoch))
    return mix64(key ^ np.uint64(stream))[0]


def draw_bits(key: np.uint64, photo_id: np.ndarray, counter) -> np.ndarray:
    """64 random bits per (photo, counter), numpy-broadcast.

    Args:
        key: from :func:`stream_key`.
        photo_id: int64 array, e.g. [n, 1] for a grid of draws or [m] for scattered redraws.
        counter: non-negative int array broadcastable against ``photo_id``, e.g. ``arange(K)``.

    Returns:
        uint64 array of the broadcast shape: the ``counter``-th output of a splitmix64 sequence
        seeded by the image's own key.
    """
    photo_key = mix64(np.asarray(photo_id).astype(np.uint64) ^ key)
    with np.errstate(over="ignore"):
        return mix64(photo_key + (np.asarray(counter).astype(np.uint64) + np.uint64(1)) * _GOLDEN)


def unit_floats(bits: np.ndarray) -> np.ndarray:
    """uint64 bits -> float64 uniform on [0, 1), 53 bits of precision."""
    return (bits >> np.uint64(11)).astype(np.float64) * _TO_UNIT


# --- tables built once on the driver -----------------------------------------------------------

@dataclass(frozen=True)
class SamplingTables:
    """Everything a task needs to draw, indexed by tag_id (V = vocabulary size).

    Attributes:
        alias_prob: float64[V], Vose alias table: keep column i with this probability ...
        alias: int32[V], ... else take this tag.
        pos_weight: int64[V], ``pos_weight`` scaled to integers (max :data:`POS_WEIGHT_SCALE`, min 1).
    """
    alias_prob: np.ndarray
    alias: np.ndarray
    pos_weight: np.ndarray

    @property
    def vocab_size(self) -> int:
        """V, the number of tags."""
        return len(self.alias)


def build_tables(neg_weight: np.ndarray, pos_weight: np.ndarray) -> SamplingTables:
    """Sampling tables from the vocabulary's weights, both float64[V] in tag_id order (>= 0)."""
    return SamplingTables(*build_alias(neg_weight), quantize_weights(pos_weight))


def build_alias(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vose's alias table for drawing i with probability ``weights[i] / weights.sum()``.

    Args:
        weights: float64[V], non-negative, not all zero.

    Returns:
        ``(alias_prob float64[V], alias int32[V])`` for :func:`alias_draw`. The table is a
        deterministic function of ``weights`` (the driver builds it once and broadcasts it).
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 1 or len(weights) == 0 or not np.all(np.isfinite(weights)) \
            or weights.min() < 0 or weights.sum() <= 0:
        raise ValueError("alias table needs finite, non-negative weights with a positive sum")
    size = len(weights)
    scaled = (weights * (size / weights.sum())).tolist()
    prob = [1.0] * size
    alias = list(range(size))
    small = [i for i, p in enumerate(scaled) if p < 1.0]
    large = [i for i, p in enumerate(scaled) if p >= 1.0]
    # Plain Python lists: this loop is O(V) and runs once per stage (about 1 s for V = 1M).
    while small and large:
        s, g = small.pop(), large.pop()
        prob[s], alias[s] = scaled[s], g
        scaled[g] = (scaled[g] + scaled[s]) - 1.0
        (small if scaled[g] < 1.0 else large).append(g)
    return np.array(prob, dtype=np.float64), np.array(alias, dtype=np.int32)


def alias_draw(alias_prob: np.ndarray, alias: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Draw one tag per 64-bit word: int32 array of ``bits``' shape.

    One uniform u picks column ``floor(u * V)`` and its fractional part decides between the
    column and its alias, so a draw costs one hash and two gathers.
    """
    size = len(alias)
    scaled = unit_floats(bits) * size
    column = np.minimum(scaled.astype(np.int64), size - 1)
    keep = (scaled - column) < alias_prob[column]
    return np.where(keep, column, alias[column]).astype(np.int32)


def quantize_weights(weights: np.ndarray) -> np.ndarray:
    """float64[V] weights -> int64[V] proportional integers in [1, POS_WEIGHT_SCALE]."""
    weights = np.asarray(weights, dtype=np.float64)
    if len(weights) == 0 or not np.all(np.isfinite(weights)) or weights.min() < 0 or weights.max() <= 0:
        raise ValueError("positive weights must be finite, non-negative, not all zero")
    return np.maximum(1, np.rint(weights / weights.max() * POS_WEIGHT_SCALE)).astype(np.int64)


# --- draws over a batch ------------------------------------------------------------------------

def draw_positives(photo_id: np.ndarray, offsets: np.ndarray, tag_ids: np.ndarray, pos_weight: np.ndarray,
                   seed: int, epoch: int, count: int) -> np.ndarray:
    """``count`` positives per image from its own tags, ∝ ``pos_weight``, with replacement.

    Args:
        photo_id: int64[n]; offsets: int64[n + 1]; tag_ids: int32[offsets[-1]] (every image has
            at least one tag).
        pos_weight: int64[V] from :func:`quantize_weights`.
        seed, epoch: select the draws; count: P.

    Returns:
        int32[n, P] tag ids, each one of the image's own tags.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    if np.any(offsets[1:] <= offsets[:-1]):
        raise ValueError("every image needs at least one tag to draw positives from")
    weights = pos_weight[tag_ids]
    cumulative = np.cumsum(weights)
    row_end = cumulative[offsets[1:] - 1]
    row_start = cumulative[offsets[:-1]] - weights[offsets[:-1]]
    bits = draw_bits(stream_key(seed, epoch, POSITIVES), photo_id[:, None], np.arange(count))
    # floor(u * total) depends on this image alone (total < 2**53 is exact in float64).
    total = (row_end - row_start)[:, None]
    within = np.minimum((unit_floats(bits) * total).astype(np.int64), total - 1)
    picked = np.searchsorted(cumulative, row_start[:, None] + within, side="right")
    return tag_ids[picked].astype(np.int32)


def draw_negatives(photo_id: np.ndarray, offsets: np.ndarray, tag_ids: np.ndarray, alias_prob: np.ndarray,
                   alias: np.ndarray, seed: int, epoch: int, count: int, exclude_own: bool = True) -> np.ndarray:
    """``count`` negatives per image by the alias table, none of them one of the image's own tags.

    Args:
        photo_id: int64[n]; offsets: int64[n + 1]; tag_ids: int32[offsets[-1]], ascending and
            unique within each image, fewer than V per image.
        alias_prob, alias: from :func:`build_alias` over ``neg_weight``.
        seed, epoch: select the draws; count: K.
        exclude_own: False keeps every first draw, own tags included (the original research
            code's pre-drawn reserve; config ``exclude_own_tags``).

    Returns:
        int32[n, K]: each draw follows neg_weight restricted to the tags the image does not carry
        (up to the fallback after :data:`NEGATIVE_TRIES` hits, see the module docstring), or all of
        neg_weight without ``exclude_own``. A draw that is not an own tag is the same either way.
    """
    size = len(alias)
    offsets = np.asarray(offsets, dtype=np.int64)
    n = len(photo_id)
    key = stream_key(seed, epoch, NEGATIVES)
    slots = np.arange(count, dtype=np.int64)
    negatives = alias_draw(alias_prob, alias, draw_bits(key, photo_id[:, None], slots))
    if not exclude_own:
        return negatives
    row_of_tag = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
    # Sorted (image, tag) keys: the exact membership test of any (image, candidate) is one searchsorted.
    own_keys = row_of_tag * size + tag_ids
    # A 64-bit mask per image (bit = tag mod 64) clears most draws without a search; only those
    # whose bit is set get the exact membership test.
    masks = np.zeros(n, np.uint64)
    tagged = offsets[1:] > offsets[:-1]
    if tagged.any():
        masks[tagged] = np.bitwise_or.reduceat(np.left_shift(np.uint64(1), (tag_ids & 63).astype(np.uint64)),
                                               offsets[:-1][tagged])
    rows, cols = np.nonzero((masks[:, None] >> (negatives & 63).astype(np.uint64)) & np.uint64(1))
    hit = _is_own(own_keys, rows * size + negatives[rows, cols])
    rows, cols = rows[hit], cols[hit]
    for retry in range(1, NEGATIVE_TRIES):
        if len(rows) == 0:
            return negatives
        redrawn = alias_draw(alias_prob, alias, draw_bits(key, photo_id[rows], (retry << 32) + cols))
        negatives[rows, cols] = redrawn
        hit = _is_own(own_keys, rows * size + redrawn)
        rows, cols = rows[hit], cols[hit]
    if len(rows):
        # Out of tries: uniform over the tags the image does not carry.
        carried = np.diff(offsets)[rows]
        if np.any(carried >= size):
            raise ValueError("an image carrying every tag of the vocabulary has no negative to draw")
        bits = draw_bits(key, photo_id[rows], (NEGATIVE_TRIES << 32) + cols)
        rank = np.minimum((unit_floats(bits) * (size - carried)).astype(np.int64), size - carried - 1)
        negatives[rows, cols] = nth_absent_tag(rows, rank, offsets, tag_ids, size)
    return negatives


def _is_own(own_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    if len(own_keys) == 0:
        return np.zeros(keys.shape, dtype=bool)
    at = np.minimum(np.searchsorted(own_keys, keys), len(own_keys) - 1)
    return own_keys[at] == keys


def nth_absent_tag(rows: np.ndarray, rank: np.ndarray, offsets: np.ndarray, tag_ids: np.ndarray,
                   size: int) -> np.ndarray:
    """The ``rank``-th (0-based) tag id in [0, size) that image ``rows`` does not carry: int32[m].

    The r-th absent tag is r + #{own tags t : t - (own tags below t) <= r}; the count is one
    searchsorted over (row, gap) keys, which stay sorted across the flattened rows.
    """
    row_of_tag = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
    gaps = tag_ids - (np.arange(len(tag_ids)) - offsets[row_of_tag])
    gap_keys = row_of_tag * (size + 1) + gaps
    below = np.searchsorted(gap_keys, rows * (size + 1) + rank, side="right") - offsets[rows]
    return (rank + below).astype(np.int32)


def padded_tags(offsets: np.ndarray, tag_ids: np.ndarray, width: int) -> np.ndarray:
    """Each image's tags in a fixed width, padded with -1: int32[n, width] (an epoch's ``own_ids``).

    Args:
        offsets: int64[n + 1]; tag_ids: int32[offsets[-1]]; width: M, at least the most tags of an image.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    counts = np.diff(offsets)
    if len(counts) and counts.max() > width:
        raise ValueError(f"an image carries {counts.max()} tags, more than the {width} own_ids holds")
    padded = np.full((len(counts), width), -1, dtype=np.int32)
    rows = np.repeat(np.arange(len(counts)), counts)
    padded[rows, np.arange(len(rows)) - offsets[rows]] = tag_ids[offsets[0]:offsets[-1]]
    return padded


def positive_shares(offsets: np.ndarray, tag_ids: np.ndarray, pos_weight: np.ndarray) -> np.ndarray:
    """Expected positives per tag over a batch of images, for one draw per image: float64[V].

    An image's positive is its tag t with probability pos_weight_t / (its tags' pos_weight sum), so
    tag t's expected count is that probability summed over the images carrying t (divide by the
    number of images for :attr:`TagShares.positive`).
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    weights = np.asarray(pos_weight, dtype=np.float64)[tag_ids]
    tagged = offsets[1:] > offsets[:-1]
    totals = np.zeros(len(offsets) - 1)
    totals[tagged] = np.add.reduceat(weights, offsets[:-1][tagged]) if tagged.any() else 0.0
    per_tag = weights / np.repeat(totals, np.diff(offsets))
    return np.bincount(tag_ids, weights=per_tag, minlength=len(pos_weight))


# --- Arrow batches -----------------------------------------------------------------------------

def output_schema(with_feature: bool, own_ids: bool = False) -> pa.Schema:
    """Arrow schema of :func:`sample_batch`'s output."""
    fields = [pa.field("photo_id", pa.int64())]
    if with_feature:
        fields.append(pa.field("feature", pa.binary()))
    names = ("pos_ids", "neg_ids", *(["own_ids"] if own_ids else []))
    fields += [pa.field(name, pa.list_(pa.int32())) for name in names]
    return pa.schema(fields)


def sample_batch(batch: pa.RecordBatch, tables: SamplingTables, seed: int, epoch: int,
                 positives: int, negatives: int, *, exclude_own: bool = True, own_tags: int = 0) -> pa.RecordBatch:
    """Draw one epoch's positives and negatives for a batch of images.

    Args:
        batch: ``photo_id`` int64, ``tag_ids`` list<int32> (1 to V-1 tags each, ascending, unique),
            optionally ``feature`` binary holding a Petastorm NdarrayCodec array (``np.save`` bytes).
        tables: from :func:`build_tables`.
        seed, epoch: select the draws. positives, negatives: P and K per image (K may be 0).
        exclude_own: whether negatives avoid the image's own tags (:func:`draw_negatives`).
        own_tags: M > 0 adds ``own_ids``, the image's tags padded with -1 to M (:func:`padded_tags`).

    Returns:
        A batch in :func:`output_schema`: ``photo_id``, [``feature`` as it came: the epoch
        contract stores Petastorm's NdarrayCodec too (pipeline.datasets.epochs)], ``pos_ids``
        list<int32>[P], ``neg_ids`` list<int32>[K] [, ``own_ids`` list<int32>[M]]; rows in input order.
    """
    photo_id = batch.column("photo_id").to_numpy().astype(np.int64)
    lists = batch.column("tag_ids")
    offsets = lists.offsets.to_numpy().astype(np.int64)
    tag_ids = lists.values.to_numpy()[offsets[0]:offsets[-1]].astype(np.int32)
    offsets -= offsets[0]
    n = len(photo_id)
    columns = [pa.array(photo_id)]
    if "feature" in batch.schema.names:
        columns.append(batch.column("feature"))
    drawn = [draw_positives(photo_id, offsets, tag_ids, tables.pos_weight, seed, epoch, positives),
             draw_negatives(photo_id, offsets, tag_ids, tables.alias_prob, tables.alias, seed, epoch, negatives,
                            exclude_own)]
    if own_tags:
        drawn.append(padded_tags(offsets, tag_ids, own_tags))
    for values in drawn:
        columns.append(pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * values.shape[1]),
                                                pa.array(values.reshape(-1), pa.int32())))
    return pa.RecordBatch.from_arrays(columns, schema=output_schema("feature" in batch.schema.names, own_tags > 0))


# --- checking drawn epochs ---------------------------------------------------------------------

def draw_fit(observed: np.ndarray, expected: np.ndarray, min_expected: float = 5.0) -> dict:
    """How well draw counts per tag match an expected distribution.

    Args:
        observed: int[V] draws per tag.
        expected: float[V] expected draws per tag (any scale; rescaled to the observed total).
        min_expected: tags expected fewer times are pooled into one chi-square bin (dropped when
            the pool itself is expected fewer times), so the statistic stays valid.

    Returns:
        A dict: ``draws``; ``tv_distance`` = ½ Σ |observed share - expected share|;
        ``tv_noise``, the TV distance that sampling noise alone gives on average,
        ½ Σ sqrt(2 p (1 - p) / (π N)), to read the first against; ``chi2``, ``dof``, ``p_value``
        and ``bins`` of Pearson's test. Draws of independent multinomials with different
        per-image probabilities vary a little less than one multinomial, so the p-value errs
        on the high side.
    """
    from scipy import stats

    observed = np.asarray(observed, dtype=np.float64)
    draws = observed.sum()
    share = np.asarray(expected, dtype=np.float64) / np.sum(expected)
    tv = 0.5 * np.abs(observed / draws - share).sum()
    noise = 0.5 * np.sqrt(2 * share * (1 - share) / (np.pi * draws)).sum()
    big = share * draws >= min_expected
    f_obs, f_exp = list(observed[big]), list(share[big] * draws)
    if share[~big].sum() * draws >= min_expected:
        f_obs.append(observed[~big].sum())
        f_exp.append(share[~big].sum() * draws)
    f_obs, f_exp = np.array(f_obs), np.array(f_exp)
    chi2, p_value = stats.chisquare(f_obs, f_exp * (f_obs.sum() / f_exp.sum()))
    return {"draws": int(draws), "tv_distance": float(tv), "tv_noise": float(noise), "chi2": float(chi2),
            "dof": int(len(f_obs) - 1), "p_value": float(p_value), "bins": int(len(f_obs))}


def frequency_deciles(images: np.ndarray, occurrences: np.ndarray, shares: dict[str, np.ndarray]) -> list[dict]:
    """Split the vocabulary into ten bins of tag occurrences, rarest tags first, and sum per bin.

    Args:
        images: int[V] images per tag (the vocabulary's count); tags sort by it.
        occurrences: int[V] times each tag occurs in the tag lists considered; each bin holds about
            a tenth of them (a tag never straddles two bins).
        shares: name -> float[V] per-tag amounts (e.g. drawn positives); each is reported per bin
            as its share of the total.

    Returns:
        Ten dicts (fewer when occurrences concentrate on few tags): ``decile`` (1 = rarest),
        ``tags``, ``images_min``, ``images_max``, ``occurrences`` share, and one share per name.
    """
    by_rarity = np.argsort(images, kind="stable")
    counts = np.asarray(occurrences, dtype=np.float64)[by_rarity]
    before = np.cumsum(counts) - counts
    decile = np.minimum(9, (10 * before / counts.sum()).astype(np.int64))
    table = []
    for d in np.unique(decile[counts > 0]):
        members = by_rarity[(decile == d) & (counts > 0)]
        row = {"decile": int(d) + 1, "tags": int(len(members)), "images_min": int(images[members].min()),
               "images_max": int(images[members].max()),
               "occurrences": float(occurrences[members].sum() / np.sum(occurrences))}
        row.update({name: float(values[members].sum() / np.sum(values)) for name, values in shares.items()})
        table.append(row)
    return table
