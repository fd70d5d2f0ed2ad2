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
sample stage writes per image and what the trainer draws itself from a batch.
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
class Method:
    """A way of choosing each training row's positive and negative tags: one entry of :data:`METHODS`.

    Attributes:
        summary: what it does, in one line.
        stage_negatives: True: the sample stage writes ``negatives`` (K) negatives per image into
            ``neg_ids`` (:func:`draw_negatives`); False: it writes positives-only epochs (K = 0).
            Either way it writes ``positives`` (P) positives per image (:func:`draw_positives`).
        batch_negatives: what the trainer draws itself from each batch, in the graph: None (nothing:
            the loss takes the epoch's ``neg_ids``), or a function ``(pos_ids int32[B, P], neg_ids
            int32[B, K]) -> int32[B, K']``, the negatives the loss takes instead (model/train.py).
    """
    summary: str
    stage_negatives: bool = True
    batch_negatives: Callable | None = None

    def written(self, positives: int, negatives: int) -> tuple[int, int]:
        """``(P, K)``: the positives and negatives per image the sample stage writes, from the config's."""
        return positives, negatives if self.stage_negatives else 0


# A new method is one entry here (the sample stage and the trainer ask the entry, not its name).
METHODS: dict[str, Method] = {
    "presampled": Method("Option II: K negatives per image drawn for each epoch by neg_weight, never one of "
                         "the image's own tags; P positives from its tags by pos_weight"),
}


def method(config: Mapping) -> Method:
    """The entry of :data:`METHODS` named by the config key ``sampling`` (default ``presampled``).

    Raises:
        Im2vecError: an unknown name, with the known ones.
    """
    name = str(config.get("sampling") or "presampled")
    if name not in METHODS:
        raise Im2vecError(f"sampling: unknown method {name!r}; known methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


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
                   alias: np.ndarray, seed: int, epoch: int, count: int) -> np.ndarray:
    """``count`` negatives per image by the alias table, none of them one of the image's own tags.

    Args:
        photo_id: int64[n]; offsets: int64[n + 1]; tag_ids: int32[offsets[-1]], ascending and
            unique within each image, fewer than V per image.
        alias_prob, alias: from :func:`build_alias` over ``neg_weight``.
        seed, epoch: select the draws; count: K.

    Returns:
        int32[n, K]: each draw follows neg_weight restricted to the tags the image does not carry
        (up to the fallback after :data:`NEGATIVE_TRIES` hits, see the module docstring).
    """
    size = len(alias)
    offsets = np.asarray(offsets, dtype=np.int64)
    n = len(photo_id)
    row_of_tag = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
    # Sorted (image, tag) keys: the exact membership test of any (image, candidate) is one searchsorted.
    own_keys = row_of_tag * size + tag_ids
    key = stream_key(seed, epoch, NEGATIVES)
    slots = np.arange(count, dtype=np.int64)
    negatives = alias_draw(alias_prob, alias, draw_bits(key, photo_id[:, None], slots))
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


# --- Arrow batches -----------------------------------------------------------------------------

def output_schema(with_feature: bool) -> pa.Schema:
    """Arrow schema of :func:`sample_batch`'s output."""
    fields = [pa.field("photo_id", pa.int64())]
    if with_feature:
        fields.append(pa.field("feature", pa.binary()))
    fields += [pa.field("pos_ids", pa.list_(pa.int32())), pa.field("neg_ids", pa.list_(pa.int32()))]
    return pa.schema(fields)


def sample_batch(batch: pa.RecordBatch, tables: SamplingTables, seed: int, epoch: int,
                 positives: int, negatives: int) -> pa.RecordBatch:
    """Draw one epoch's positives and negatives for a batch of images.

    Args:
        batch: ``photo_id`` int64, ``tag_ids`` list<int32> (1 to V-1 tags each, ascending, unique),
            optionally ``feature`` binary holding a Petastorm NdarrayCodec array (``np.save`` bytes).
        tables: from :func:`build_tables`.
        seed, epoch: select the draws. positives, negatives: P and K per image.

    Returns:
        A batch in :func:`output_schema`: ``photo_id``, [``feature`` as it came: the epoch
        contract stores Petastorm's NdarrayCodec too (pipeline.datasets.epochs)], ``pos_ids``
        list<int32>[P], ``neg_ids`` list<int32>[K]; rows in input order.
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
    pos_ids = draw_positives(photo_id, offsets, tag_ids, tables.pos_weight, seed, epoch, positives)
    neg_ids = draw_negatives(photo_id, offsets, tag_ids, tables.alias_prob, tables.alias, seed, epoch, negatives)
    for drawn, width in ((pos_ids, positives), (neg_ids, negatives)):
        columns.append(pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * width),
                                                pa.array(drawn.reshape(-1))))
    return pa.RecordBatch.from_arrays(columns, schema=output_schema("feature" in batch.schema.names))


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
