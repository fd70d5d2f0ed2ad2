"""Tagging and retrieval metrics: top-k tags, per-image and per-tag precision/recall, average precision.

An image's true tags are ragged: ``offsets`` int64[N + 1] and ``tag_ids`` int32[offsets[-1]]
(image i's tags are ``tag_ids[offsets[i]:offsets[i + 1]]``), the layout of a list column.
A ranking is ``top_ids`` int[N, k]: each image's k predicted tags, best first, distinct in a row.

Two views of the same predictions (the image-annotation literature reports both):

* per image (:func:`precision_recall_at_k`): of an image's k predicted tags, how many are true
  (P@k = hits / k) and how many of its true tags were found (R@k = hits / true tags);
* per tag (:func:`per_tag_metrics`, the Corel5k / IAPR-TC12 protocol of JEC, TagProp and
  FastTag): each image is annotated with its k predicted tags, then for each tag, precision =
  correct / predicted and recall = correct / relevant over the test images; both averaged over
  tags, F1 = harmonic mean of the two averages, N+ = tags recalled at least once. Frequent tags
  cannot carry this view: a method that always predicts the same five tags scores near zero.

Retrieval (:func:`average_precision`, :func:`mean_average_precision`): each tag is a query, the
test images ranked by a score. :func:`summary` gathers every figure of one method (what the evaluate
stage reports per method): per-tag P/R/F1/N+ and per-image P@k/R@k at :data:`TOP_K`, mAP, and the
curves for k = 1..:data:`CURVE_K`.
"""
from __future__ import annotations

import numpy as np

# Scores computed at once while ranking: [rows, V] float32 stays around 64 MiB.
SCORE_BLOCK = 1 << 24
TOP_K = 5                # the reported cut-off: tags predicted per image for P/R/F1/N+ and P@k/R@k
CURVE_K = 10             # the precision/recall curves go from k = 1 to this


def top_k_of_scores(scores: np.ndarray, k: int) -> np.ndarray:
    """Columns of the k largest scores of each row, best first: int32[N, min(k, C)] for float[N, C].

    Ties go to the lower column (a stable order), so equal scores rank the same on every run.
    """
    scores = np.asarray(scores)
    size = scores.shape[1]
    k = min(k, size)
    if k < size:
        kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1:k]
        if not np.any((scores == kth).sum(axis=1) > 1):   # no tie at the cut, where argpartition picks any
            best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            order = np.argsort(-np.take_along_axis(scores, best, axis=1), axis=1, kind="stable")
            return np.take_along_axis(best, order, axis=1).astype(np.int32)
    return np.argsort(-scores, axis=1, kind="stable")[:, :k].astype(np.int32)


def top_k_tags(image_vectors: np.ndarray, tag_vectors: np.ndarray, k: int = 5,
               tag_bias: np.ndarray | None = None) -> np.ndarray:
    """The k highest-scoring tags of each image, best first: int32[N, k].

    Args:
        image_vectors: float32[N, d], g(f) of each image.
        tag_vectors: float32[V, d]; a tag's score is its dot product with the image's vector ...
        k: tags per image (at most V).
        tag_bias: ... plus this float32[V] offset, if given (see model.projection.tag_bias).

    Scores are computed a block of images at a time, so memory stays bounded for any V.
    """
    image_vectors = np.asarray(image_vectors, dtype=np.float32)
    tag_vectors = np.asarray(tag_vectors, dtype=np.float32)
    size = len(tag_vectors)
    k = min(k, size)
    rows = max(1, SCORE_BLOCK // max(size, 1))
    top = np.empty((len(image_vectors), k), dtype=np.int32)
    for start in range(0, len(image_vectors), rows):
        scores = image_vectors[start:start + rows] @ tag_vectors.T
        if tag_bias is not None:
            scores += tag_bias
        top[start:start + rows] = top_k_of_scores(scores, k)
    return top


def hit_mask(top_ids: np.ndarray, offsets: np.ndarray, tag_ids: np.ndarray) -> np.ndarray:
    """Which ranked tags are true tags of their image: bool[N, k].

    Args:
        top_ids: int[N, k] ranked tags (distinct within a row).
        offsets, tag_ids: the true tags (see the module docstring).
    """
    top_ids = np.asarray(top_ids, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    n = len(top_ids)
    row_of_tag = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
    tag_ids = np.asarray(tag_ids, dtype=np.int64)[:len(row_of_tag)]
    if len(tag_ids) == 0:
        return np.zeros(top_ids.shape, dtype=bool)
    span = int(max(top_ids.max(initial=0), tag_ids.max(initial=0))) + 1
    # (image, tag) pairs as sorted int64 keys: membership of every ranked tag is one searchsorted.
    true_keys = np.sort(row_of_tag * span + tag_ids)
    keys = np.arange(n, dtype=np.int64)[:, None] * span + top_ids
    at = np.minimum(np.searchsorted(true_keys, keys), len(true_keys) - 1)
    return true_keys[at] == keys


def hits(top_ids: np.ndarray, offsets: np.ndarray, tag_ids: np.ndarray) -> np.ndarray:
    """How many of each image's ranked tags are true tags: int64[N] (see :func:`hit_mask`)."""
    return hit_mask(top_ids, offsets, tag_ids).sum(axis=1, dtype=np.int64)


def precision_recall_at_k(top_ids: np.ndarray, offsets: np.ndarray, tag_ids: np.ndarray) -> tuple[float, float]:
    """Mean precision@k and recall@k over images that have at least one true tag.

    precision@k = hits / k; recall@k = hits / (number of true tags), per image, then averaged.
    ``k`` is ``top_ids.shape[1]``. Returns ``(0.0, 0.0)`` when no image has a tag.
    """
    counts = np.diff(np.asarray(offsets, dtype=np.int64))
    found = hits(top_ids, offsets, tag_ids)
    tagged = counts > 0
    if not tagged.any():
        return 0.0, 0.0
    k = np.asarray(top_ids).shape[1]
    return float((found[tagged] / k).mean()), float((found[tagged] / counts[tagged]).mean())


def per_tag_counts(top_ids: np.ndarray, offsets: np.ndarray, tag_ids: np.ndarray,
                   vocab_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(predicted, correct, relevant)``, each int64[V]: per tag, the images it was predicted for,
    those of them that carry it, and the images that carry it.

    Args:
        top_ids: int[N, k] each image's predicted tags; offsets, tag_ids: the true tags.
        vocab_size: V; every id must be < V.
    """
    top_ids = np.asarray(top_ids, dtype=np.int64)
    mask = hit_mask(top_ids, offsets, tag_ids)
    true = np.asarray(tag_ids, dtype=np.int64)[:int(np.asarray(offsets)[-1])]
    return (np.bincount(top_ids.ravel(), minlength=vocab_size), np.bincount(top_ids[mask], minlength=vocab_size),
            np.bincount(true, minlength=vocab_size))


def per_tag_metrics(top_ids: np.ndarray, offsets: np.ndarray, tag_ids: np.ndarray, vocab_size: int) -> dict:
    """Per-tag precision, recall, F1 and N+ of a k-tag annotation (the JEC/TagProp/FastTag protocol).

    Each image is annotated with its k predicted tags (``top_ids`` int[N, k]). For each tag t,
    P_t = correct_t / predicted_t and R_t = correct_t / relevant_t (:func:`per_tag_counts`).

    The tags averaged over are those with at least one relevant image (a true tag of some image):
    R_t is undefined for the others. A tag that is relevant but never predicted has P_t = 0
    (and R_t = 0), as in FastTag's evaluation code; predictions of tags no image carries count in
    no tag's average (but they do lower per-image P@k). ``precision`` and ``recall`` are the
    means of P_t and R_t; ``f1 = 2PR / (P + R)`` of those means (0 when both are 0); ``n_plus`` is
    the number of tags with R_t > 0, i.e. predicted correctly at least once.

    Returns:
        ``{"precision", "recall", "f1", "n_plus", "tags"}``; ``tags`` is how many tags were
        averaged. All zero when no image has a true tag.
    """
    predicted, correct, relevant = per_tag_counts(top_ids, offsets, tag_ids, vocab_size)
    evaluated = relevant > 0
    if not evaluated.any():
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0, "n_plus": 0, "tags": 0}
    precision_t = np.divide(correct, predicted, out=np.zeros(vocab_size), where=predicted > 0)[evaluated]
    recall_t = correct[evaluated] / relevant[evaluated]
    precision, recall = float(precision_t.mean()), float(recall_t.mean())
    return {"precision": precision, "recall": recall, "f1": f1(precision, recall),
            "n_plus": int((recall_t > 0).sum()), "tags": int(evaluated.sum())}


def f1(precision: float, recall: float) -> float:
    """The harmonic mean of precision and recall; 0 when both are 0."""
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def relevance(offsets: np.ndarray, tag_ids: np.ndarray, query_ids: np.ndarray) -> np.ndarray:
    """bool[N, Q]: whether image i carries tag ``query_ids[q]``.

    Args:
        offsets, tag_ids: the true tags of N images; query_ids: int[Q] distinct tag ids.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    query_ids = np.asarray(query_ids, dtype=np.int64)
    true = np.asarray(tag_ids, dtype=np.int64)[:int(offsets[-1])]
    rows = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    column = np.full(int(max(true.max(initial=0), query_ids.max(initial=0))) + 1, -1, dtype=np.int64)
    column[query_ids] = np.arange(len(query_ids))
    found = column[true] >= 0
    matrix = np.zeros((len(offsets) - 1, len(query_ids)), dtype=bool)
    matrix[rows[found], column[true[found]]] = True
    return matrix


def average_precision(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Average precision of each column's ranking of the rows: float64[Q], NaN where nothing is relevant.

    Args:
        scores: float[N, Q]: query q ranks the N images by ``scores[:, q]``, highest first.
        relevant: bool[N, Q]: the images that answer query q.

    AP_q = mean over the relevant images of the precision at their rank. Ties rank the
    irrelevant images first (the pessimistic order), so a method gains nothing from scores that
    cannot tell images apart: a constant score gives each query about its share of relevant
    images, not more.
    """
    scores = np.asarray(scores, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    order = np.lexsort((relevant, -scores), axis=0)      # by score descending, then irrelevant first
    ranked = np.take_along_axis(relevant, order, axis=0)
    found = np.cumsum(ranked, axis=0)
    ranks = np.arange(1, len(scores) + 1)[:, None]
    total = ranked.sum(axis=0)
    sums = np.where(ranked, found / ranks, 0.0).sum(axis=0)
    return np.divide(sums, total, out=np.full(scores.shape[1], np.nan), where=total > 0)



def mean_average_precision(image_scores, offsets: np.ndarray, tag_ids: np.ndarray, vocab_size: int) -> dict:
    """Retrieval: each tag with a relevant image queries the N images; the mean of their average precisions.

    Args:
        image_scores: callable, int[Q] tag ids -> float[N, Q] scores of every image for those tags.
        offsets, tag_ids: the true tags of the N images; vocab_size: number of tags (ids < vocab_size).

    Returns:
        ``{"map", "map_random", "queries"}``; map_random is the mean share of relevant images, about
        what a random ranking scores; both None when there is no query.
    """
    n = len(offsets) - 1
    relevant_counts = np.bincount(np.asarray(tag_ids, np.int64)[:int(offsets[-1])], minlength=vocab_size)
    queries = np.flatnonzero(relevant_counts)
    if len(queries) == 0 or n == 0:
        return {"map": None, "map_random": None, "queries": 0}
    block = max(1, SCORE_BLOCK // (4 * n))
    precisions = [average_precision(image_scores(chunk), relevance(offsets, tag_ids, chunk))
                  for chunk in (queries[s:s + block] for s in range(0, len(queries), block))]
    return {"map": float(np.mean(np.concatenate(precisions))),
            "map_random": float(np.mean(relevant_counts[queries] / n)), "queries": int(len(queries))}


def curves(top_ids: np.ndarray, offsets: np.ndarray, tag_ids: np.ndarray, vocab_size: int,
           curve_k: int = CURVE_K) -> dict:
    """Precision and recall as the number of predicted tags grows, k = 1..min(curve_k, top_ids.shape[1]).

    Returns:
        ``{"k", "p_at_k", "r_at_k", "precision", "recall"}``, each a list over k: per-image P@k and R@k
        (:func:`precision_recall_at_k`) and per-tag mean precision and recall (:func:`per_tag_metrics`).
    """
    curve = {"k": [], "p_at_k": [], "r_at_k": [], "precision": [], "recall": []}
    for k in range(1, min(curve_k, top_ids.shape[1]) + 1):
        p, r = precision_recall_at_k(top_ids[:, :k], offsets, tag_ids)
        at_k = per_tag_metrics(top_ids[:, :k], offsets, tag_ids, vocab_size)
        for key, value in (("k", k), ("p_at_k", p), ("r_at_k", r), ("precision", at_k["precision"]),
                           ("recall", at_k["recall"])):
            curve[key].append(value)
    return curve


def summary(top_ids: np.ndarray, offsets: np.ndarray, tag_ids: np.ndarray, vocab_size: int,
            image_scores=None) -> dict:
    """Every figure of one method from its ranked tags and, if it ranks images for a tag, its image scores.

    Args:
        top_ids: int[N, >= CURVE_K] each image's predicted tags, best first.
        offsets, tag_ids: the true tags of the N images; vocab_size: V.
        image_scores: None, or as for :func:`mean_average_precision`.

    Returns:
        ``precision``, ``recall``, ``f1``, ``n_plus``, ``tags`` (per tag, at TOP_K), ``p_at_5``, ``r_at_5``
        (per image, at TOP_K), ``images`` (with a true tag), ``map``/``map_random``/``map_queries``
        (None, None, 0 without image_scores), and ``curve`` (:func:`curves`).
    """
    per_tag = per_tag_metrics(top_ids[:, :TOP_K], offsets, tag_ids, vocab_size)
    p_at_k, r_at_k = precision_recall_at_k(top_ids[:, :TOP_K], offsets, tag_ids)
    retrieval = mean_average_precision(image_scores, offsets, tag_ids, vocab_size) if image_scores else \
        {"map": None, "map_random": None, "queries": 0}
    return {**per_tag, "p_at_5": p_at_k, "r_at_5": r_at_k, "images": int((np.diff(offsets) > 0).sum()),
            "map": retrieval["map"], "map_random": retrieval["map_random"], "map_queries": retrieval["queries"],
            "curve": curves(top_ids, offsets, tag_ids, vocab_size)}
