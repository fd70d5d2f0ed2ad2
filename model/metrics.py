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

Retrieval (:func:`average_precision`): each tag is a query, the test images ranked by a score.
"""
from __future__ import annotations

import numpy as np

# Scores computed at once while ranking: [rows, V] float32 stays around 64 MiB.
SCORE_BLOCK = 1 << 24


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


def popularity_top_k(images_per_tag: np.ndarray, n: int, k: int = 5) -> np.ndarray:
    """The baseline ranking: the k most frequent tags for every one of n images, int32[n, k]."""
    best = np.argsort(-np.asarray(images_per_tag), kind="stable")[:k].astype(np.int32)
    return np.tile(best, (n, 1))
