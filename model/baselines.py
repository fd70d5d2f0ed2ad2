"""The methods the evaluate stage compares im2vec with: popularity, knn and zero-shot.

Each method predicts ranked tags for the test images and, but popularity, scores every test image
for a tag (what :func:`model.metrics.summary` needs). Nothing here reads the run root: the evaluate
stage (model/evaluate.py) reads it and hands over arrays, or iterables of feature blocks.

    popularity  the k most frequent tags of the training images, for every image
    knn         the ``knn_k`` nearest training images by cosine of CNN features vote their tags,
                each vote weighted by its cosine; ties (tags no neighbour carries) go to the
                more frequent tag (tag_ids are in frequency order); found by brute force, a block
                of training images at a time, so memory holds the test set and one block
    zero_shot   tags held out of training: an image scores a held-out tag w as g(f)·v_w with w's
                word vector; the k best of the held-out tags that have a vector are predicted, and
                the images are ranked for w by cosine(g(f), v_w)

The layout of true tags and rankings is model.metrics': ``offsets`` int64[N + 1], ``tag_ids``
int32[offsets[-1]]; ``top`` int32[N, k], best first.
"""
from __future__ import annotations

import copy
import time
from typing import Callable, Iterable

import numpy as np

from model import metrics
from pipeline import Im2vecError


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """float[N, d] -> float32[N, d] rows of unit L2 norm (a zero row stays zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def popularity_top_k(images_per_tag: np.ndarray, n: int, k: int = metrics.TOP_K) -> np.ndarray:
    """The popularity ranking: the k most frequent tags (int[V] images per tag) for every one of n images.

    Returns:
        int32[n, k]; ties go to the lower tag_id.
    """
    best = np.argsort(-np.asarray(images_per_tag), kind="stable")[:k].astype(np.int32)
    return np.tile(best, (n, 1))


def cosine_scores(embeddings: np.ndarray, vectors: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """How zero_shot ranks images for a tag, as ``im2vec search`` does (and evaluate's ``map_by_cosine``
    and the cross-corpus im2vec; in-corpus im2vec ranks them by pipeline.query.probability_columns).

    Args:
        embeddings: float[N, d] g(f) of the images; vectors: float[C, d] the tags' vectors.

    Returns:
        ``image_scores`` for :func:`model.metrics.summary`: int[Q] rows of ``vectors`` -> float32[N, Q],
        the cosine of each image's embedding with each of those vectors.
    """
    images, vectors = normalize_rows(embeddings), normalize_rows(vectors)
    return lambda ids: images @ vectors[ids].T


# --- knn -----------------------------------------------------------------------------------------

def merge_nearest(best_scores: np.ndarray, best_ids: np.ndarray, scores: np.ndarray, ids: np.ndarray,
                  k: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep each row's k best of its running best and a new block.

    Args:
        best_scores, best_ids: float32[N, k'] and int64[N, k'] so far (k' <= k; -inf pads).
        scores: float32[N, B] the new block's scores; ids: int64[B] its columns' ids.

    Returns:
        float32[N, min(k, k' + B)] and int64[...] best first.
    """
    all_scores = np.concatenate([best_scores, scores], axis=1)
    all_ids = np.concatenate([best_ids, np.broadcast_to(ids, scores.shape)], axis=1)
    top = metrics.top_k_of_scores(all_scores, k)
    return np.take_along_axis(all_scores, top, axis=1), np.take_along_axis(all_ids, top, axis=1)


def nearest_images(query: np.ndarray, blocks: Iterable[tuple[np.ndarray, np.ndarray]], k: int
                   ) -> tuple[np.ndarray, np.ndarray, float]:
    """The k images of ``blocks`` nearest to each query by cosine of CNN features.

    Args:
        query: float32[N, D] features of the query images.
        blocks: ``(photo_id int64[B], feature float32[B, D])`` pieces of the images that may answer.

    Returns:
        ``(cosine float32[N, k], photo_id int64[N, k], compute seconds)``, best first; the seconds
        leave out producing the blocks (reading and decoding).
    """
    query = normalize_rows(query)
    best_scores = np.full((len(query), 0), -np.inf, np.float32)
    best_ids = np.zeros((len(query), 0), np.int64)
    seconds = 0.0
    for ids, block in blocks:
        started = time.perf_counter()
        best_scores, best_ids = merge_nearest(best_scores, best_ids, query @ normalize_rows(block).T, ids, k)
        seconds += time.perf_counter() - started
    return best_scores, best_ids, seconds


class Votes:
    """The knn baseline's tag scores as a sparse N x V matrix: each image's neighbours' cosines summed per tag.

    Args:
        neighbour_scores: float32[N, k] cosines; neighbour_rows: int64[N, k] rows into the neighbours' tags.
        offsets, tag_ids: the neighbours' tags (model.metrics' layout); vocab_size: V.
    """

    def __init__(self, neighbour_scores: np.ndarray, neighbour_rows: np.ndarray, offsets: np.ndarray,
                 tag_ids: np.ndarray, vocab_size: int):
        n = len(neighbour_scores)
        lengths = np.diff(offsets)[neighbour_rows.ravel()]
        image = np.repeat(np.repeat(np.arange(n, dtype=np.int64), neighbour_rows.shape[1]), lengths)
        weight = np.repeat(np.maximum(neighbour_scores.ravel(), 0.0), lengths)
        starts = np.repeat(offsets[neighbour_rows.ravel()], lengths)
        within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        tag = tag_ids[starts + within].astype(np.int64)
        keys, inverse = np.unique(image * vocab_size + tag, return_inverse=True)
        self.rows, self.columns = keys // vocab_size, keys % vocab_size
        self.values = np.bincount(inverse, weights=weight).astype(np.float32)
        self.shape = (n, vocab_size)

    def normalized(self) -> Votes:
        """The same votes as float64 shares: each image's sum to 1 (an image without votes keeps none)."""
        shares = copy.copy(self)
        sums = np.bincount(self.rows, weights=self.values, minlength=self.shape[0])
        shares.values = self.values / np.maximum(sums[self.rows], 1e-12)
        return shares

    def voted(self) -> np.ndarray:
        """bool[N]: which images have any vote of positive weight."""
        return np.bincount(self.rows, weights=self.values, minlength=self.shape[0]) > 0

    def images(self, start: int, stop: int) -> Votes:
        """The votes of images start..stop - 1 alone (row 0 is image ``start``)."""
        lo, hi = np.searchsorted(self.rows, [start, stop])
        part = copy.copy(self)
        part.rows, part.columns, part.values = self.rows[lo:hi] - start, self.columns[lo:hi], self.values[lo:hi]
        part.shape = (stop - start, self.shape[1])
        return part

    def row_block(self, start: int, stop: int) -> np.ndarray:
        """float[stop - start, V] (the values' type: float32, float64 when normalized), dense."""
        lo, hi = np.searchsorted(self.rows, [start, stop])
        dense = np.zeros((stop - start, self.shape[1]), self.values.dtype)
        dense[self.rows[lo:hi] - start, self.columns[lo:hi]] = self.values[lo:hi]
        return dense

    def column_block(self, tag_ids: np.ndarray) -> np.ndarray:
        """float[N, Q] (the values' type), dense, for Q distinct tag ids."""
        column = np.full(self.shape[1], -1, np.int64)
        column[tag_ids] = np.arange(len(tag_ids))
        found = column[self.columns] >= 0
        dense = np.zeros((self.shape[0], len(tag_ids)), self.values.dtype)
        dense[self.rows[found], column[self.columns[found]]] = self.values[found]
        return dense

    def top_k(self, k: int) -> np.ndarray:
        """int32[N, k], the k best-voted tags of each image (ties to the lower, more frequent, tag_id)."""
        rows = max(1, metrics.SCORE_BLOCK // max(self.shape[1], 1))
        return np.concatenate([metrics.top_k_of_scores(self.row_block(s, min(s + rows, self.shape[0])), k)
                               for s in range(0, self.shape[0], rows)] or [np.zeros((0, k), np.int32)])


def knn(query: np.ndarray, blocks: Iterable[tuple[np.ndarray, np.ndarray]], neighbour_tags: Callable,
        vocab_size: int, k: int) -> tuple[np.ndarray, Votes, float]:
    """The knn baseline: each query image's k nearest images (by cosine of CNN features) vote their tags.

    Args:
        query: float32[N, D] the test images' features; blocks: as for :func:`nearest_images`, the
            training images.
        neighbour_tags: int64[N, k] photo ids -> ``(rows int64[N, k], offsets, tag_ids)``, those photos'
            tags (rows index the ragged lists).
        vocab_size: V; k: neighbours per image (config ``knn_k``).

    Returns:
        ``(top int32[N, CURVE_K], votes, compute seconds)``: the best-voted tags, the votes (its
        ``column_block`` ranks images for a tag) and the time spent comparing and voting.
    """
    scores, photo_ids, seconds = nearest_images(query, blocks, k)
    rows, offsets, tag_ids = neighbour_tags(photo_ids)
    started = time.perf_counter()
    votes = Votes(scores, rows, offsets, tag_ids, vocab_size)
    top = votes.top_k(metrics.CURVE_K)
    return top, votes, seconds + time.perf_counter() - started


# --- zero-shot -----------------------------------------------------------------------------------

def zero_shot(embeddings: np.ndarray, photo_ids: np.ndarray, held_out: list[str],
              word_vector: Callable[[str], np.ndarray], photo_tags: dict[int, list[str]]) -> dict:
    """The zero_shot object of the report: the held-out tags found through their word vectors alone.

    Args:
        embeddings: float32[N, d] g(f) of the test images; photo_ids: int64[N] their ids.
        held_out: the tags held out of training (non-empty), most frequent first.
        word_vector: tag -> float32[d]; raises Im2vecError for a tag without a vector.
        photo_tags: photo_id -> the image's own tags (clean/): the ground truth, among the held-out tags.

    Returns:
        ``{"run": True, **metrics.summary(...), "held_out", "with_vector", "relevant_in_test",
        "examples": {tag: test images carrying it}}``, or ``{"run": False, "reason", "held_out",
        "with_vector"}`` when no held-out tag has a vector.
    """
    vectors, with_vector = [], []
    for tag in held_out:
        try:
            vectors.append(word_vector(tag))
            with_vector.append(tag)
        except Im2vecError:
            pass
    counts = {"held_out": len(held_out), "with_vector": len(with_vector)}
    if not with_vector:
        return {"run": False, "reason": "no held-out tag has a word vector (wordvec/words.kv)", **counts}
    column = {tag: i for i, tag in enumerate(with_vector)}
    truth = [sorted({column[t] for t in photo_tags.get(int(p), []) if t in column}) for p in photo_ids]
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in truth])]).astype(np.int64)
    tag_ids = np.array([i for t in truth for i in t], np.int32)
    vectors = np.stack(vectors)
    top = metrics.top_k_tags(embeddings, vectors, metrics.CURVE_K)
    result = metrics.summary(top, offsets, tag_ids, len(with_vector), cosine_scores(embeddings, vectors))
    relevant = np.bincount(tag_ids, minlength=len(with_vector))
    return {"run": True, **result, **counts, "relevant_in_test": int((relevant > 0).sum()),
            "examples": {tag: int(n) for tag, n in zip(with_vector, relevant) if n}}
