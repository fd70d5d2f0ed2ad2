"""Ranking metrics for tagging: the top-k tags of each image, precision@k and recall@k.

An image's true tags are ragged: ``offsets`` int64[N + 1] and ``tag_ids`` int32[offsets[-1]]
(image i's tags are ``tag_ids[offsets[i]:offsets[i + 1]]``), the layout of a list column.
"""
from __future__ import annotations

import numpy as np

# Scores computed at once while ranking: [rows, V] float32 stays around 64 MiB.
SCORE_BLOCK = 1 << 24


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
        if k < size:
            best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        else:
            best = np.tile(np.arange(size), (len(scores), 1))
        order = np.argsort(-np.take_along_axis(scores, best, axis=1), axis=1, kind="stable")
        top[start:start + rows] = np.take_along_axis(best, order, axis=1)
    return top


def hits(top_ids: np.ndarray, offsets: np.ndarray, tag_ids: np.ndarray) -> np.ndarray:
    """How many of each image's ranked tags are true tags: int64[N].

    Args:
        top_ids: int[N, k] ranked tags (distinct within a row).
        offsets, tag_ids: the true tags (see the module docstring); ascending within an image.
    """
    top_ids = np.asarray(top_ids, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    n = len(top_ids)
    row_of_tag = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
    span = int(max(top_ids.max(initial=0), np.max(tag_ids, initial=0))) + 1
    # (image, tag) pairs as sorted int64 keys: membership of every ranked tag is one searchsorted.
    true_keys = np.sort(row_of_tag * span + np.asarray(tag_ids, dtype=np.int64))
    keys = np.arange(n, dtype=np.int64)[:, None] * span + top_ids
    if len(true_keys) == 0:
        return np.zeros(n, dtype=np.int64)
    at = np.minimum(np.searchsorted(true_keys, keys), len(true_keys) - 1)
    return (true_keys[at] == keys).sum(axis=1)


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


def popularity_top_k(images_per_tag: np.ndarray, n: int, k: int = 5) -> np.ndarray:
    """The baseline ranking: the k most frequent tags for every one of n images, int32[n, k]."""
    best = np.argsort(-np.asarray(images_per_tag), kind="stable")[:k].astype(np.int32)
    return np.tile(best, (n, 1))
