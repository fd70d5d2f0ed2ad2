"""The model: a projection g(f) of image features into tag-vector space, its losses, and the tag table.

Shapes: ``B`` images per batch, ``D`` feature size (1280 for MobileNetV2), ``d`` tag-vector size
(50 for GloVe 6B 50d), ``P`` positive and ``K`` negative tags per image, ``V`` tags.

The projection ("deep") is a Keras model and lives on the GPU when there is one. The tag table
("wide", V x d, up to millions of rows) lives on the CPU and is updated sparsely: a step gathers
the U distinct rows its batch names, and :meth:`TagTable.apply_gradients` runs Adagrad on those
U rows only (the accumulator is read and written at the same rows), so a step costs
O(B·(P+K)·d) whatever V is. A stock Keras optimizer would turn the table's gradient into a dense
V x d update of the table and its slots on every step.
"""
from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf


def build_projection(feature_dim: int, tag_dim: int, hidden_sizes: Sequence[int] = (1024,)) -> keras.Model:
    """g(f): float32[B, D] image features -> float32[B, d] points in tag-vector space.

    The features are L2-normalized first (part of the saved model, so every caller gets it): a
    CNN's pooled activations vary in norm from image to image for reasons that say little about
    the tags (contrast, clutter), and unit inputs let one learning rate suit any backbone.

    Args:
        feature_dim: D; tag_dim: d.
        hidden_sizes: widths of ReLU hidden layers; () makes g a linear map of the normalized
            features (a D x d matrix and a bias).

    Returns:
        A ``keras.Sequential`` named ``projection``, its weights created.
    """
    layers = [keras.Input((feature_dim,), name="feature"), keras.layers.UnitNormalization(name="unit_feature")]
    layers += [keras.layers.Dense(int(size), activation="relu", name=f"hidden_{i}")
               for i, size in enumerate(hidden_sizes)]
    layers.append(keras.layers.Dense(tag_dim, name="to_tag_space"))
    return keras.Sequential(layers, name="projection")


def scores(image_vectors: tf.Tensor, tag_vectors: tf.Tensor) -> tf.Tensor:
    """Dot products v_t·g(f): image_vectors [B, d], tag_vectors [B, T, d] -> float32[B, T].

    One elementwise product and a sum over all T of a row's tags at once: its gradient is again
    elementwise. An einsum, or products taken separately over the positives' and negatives'
    slices, cost 3-4x as much in the backward pass (tiny batched matmuls, zero-padded slice
    gradients), which for a linear g is most of a step.
    """
    return tf.reduce_sum(image_vectors[:, None, :] * tag_vectors, axis=-1)


def negative_sampling_loss(pos_scores: tf.Tensor, neg_scores: tf.Tensor) -> tf.Tensor:
    """word2vec's negative-sampling loss per image: float32[B].

    ``-log σ(v_pos·g) - Σ_k log σ(-v_neg_k·g)``, averaged over the image's P positives (which
    share its K negatives). pos_scores: [B, P] and neg_scores: [B, K], from :func:`scores`.
    """
    # softplus(-x) = -log σ(x), computed stably for large |x|.
    return tf.reduce_mean(tf.nn.softplus(-pos_scores), axis=1) + tf.reduce_sum(tf.nn.softplus(neg_scores), axis=1)


def ranking_loss(pos_scores: tf.Tensor, neg_scores: tf.Tensor) -> tf.Tensor:
    """Fast0Tag's pairwise ranking loss per image: float32[B].

    ``Σ_k log(1 + exp(v_neg_k·g - v_pos·g))``, averaged over the P positives. Arguments as for
    :func:`negative_sampling_loss`. Only score differences matter, so it ranks but does not
    calibrate: a tag's score is not a probability.
    """
    margins = neg_scores[:, None, :] - pos_scores[:, :, None]     # [B, P, K]
    return tf.reduce_mean(tf.reduce_sum(tf.nn.softplus(margins), axis=2), axis=1)


def softmax_loss(pos_scores: tf.Tensor, neg_scores: tf.Tensor) -> tf.Tensor:
    """Sampled softmax loss per image: float32[B].

    ``-log(exp(v_pos·g) / (exp(v_pos·g) + Σ_k exp(v_neg_k·g)))`` = ``log(1 + Σ_k exp(v_neg_k·g -
    v_pos·g))``, averaged over the P positives. Arguments as for :func:`negative_sampling_loss`.
    Like :func:`ranking_loss` it only sees score differences, but the negatives share one
    normalizer: a positive's gradient is at most 1 (split among its negatives by their softmax
    weight, the highest-scoring getting most) where the ranking loss gives up to K, one sigmoid per
    negative. On the demo it kept zero-shot words better (docs/experiments.md).
    """
    margins = neg_scores[:, None, :] - pos_scores[:, :, None]     # [B, P, K]
    # softplus(logsumexp(m)) = log(1 + Σ exp(m)), stable for large |m|.
    return tf.reduce_mean(tf.nn.softplus(tf.reduce_logsumexp(margins, axis=2)), axis=1)


# The losses, by their config name (``loss``): a new loss is a function (pos_scores float32[B, P],
# neg_scores float32[B, K]) -> float32[B] per image, and one entry here.
LOSSES = {"negative_sampling": negative_sampling_loss, "ranking": ranking_loss, "softmax": softmax_loss}


def loss_function(name: str):
    """The per-image loss called ``name`` (a key of :data:`LOSSES`)."""
    return LOSSES[name]


def tag_bias(candidate_weight: np.ndarray, pos_weight: np.ndarray, strength: float = 0.5) -> np.ndarray:
    """Per-tag offsets added to ``g(f)·v_t`` to rank a vocabulary's tags for an image.

    This is the one place that decides how tags are ranked for an image: training validation
    (model/train.py) ranks by ``g(f)·v_t + tag_bias_t`` with the trainer's ROOT/model/tag_bias.npy,
    and ``im2vec tag``, serve and the evaluate stage by its softmax mixed with the CNN's ConSE prior
    (pipeline.query.tag_probabilities). Ranking images for one tag needs no offset.

    Training draws positives ∝ pos_weight (from the image's own tags) and offers tag t as a
    negative Q_t times per row (Option II: ∝ neg_weight), so the loss is lowest when
    ``g(f)·v_t ≈ log odds(t on the image) + log pos_weight_t - log Q_t + const``: rare tags score
    above their odds (the sampler's intent, rare tags pull harder) and frequent ones below.
    ``strength`` 1 adds all of ``log(Q_t / pos_weight_t)`` and ranks by the odds themselves: the
    best per-image P@5, but the few frequent tags then fill most images' top 5 and the rare ones
    are never predicted. 0 keeps the sampler's lift of rare tags (with unigram^0.75 negatives a
    tag seen 3 times is hardly ever pushed down, and fills every image's top 5). In between, each
    tag is predicted for about as many images as carry it, what per-tag precision/recall/F1 (the
    tagging literature's measure) reward; 0.25 did best on the demo's validation split capped per
    user, 0.5 on the uncapped split, which one user's icon theme dominates (the strengths tried:
    docs/experiments.md).

    Args:
        candidate_weight: float64[V] > 0, how often the sampling method offers each tag as a
            negative, any scale (pipeline.sampling.expected_candidates; vocab/'s neg_weight for
            Option II; flat for the full softmax and under the log-Q correction, whose scores
            carry no such lift).
        pos_weight: float64[V] > 0, vocab/'s positive weights.
        strength: the share of the sampler's log weighting to undo, in [0, 1] (config
            ``tag_bias_strength``).

    Returns:
        float32[V], centred on 0, so a word outside the vocabulary (zero-shot, offset 0) sits
        with a typical tag.
    """
    bias = np.log(np.asarray(candidate_weight, dtype=np.float64)) - np.log(np.asarray(pos_weight, dtype=np.float64))
    return (float(strength) * (bias - bias.mean())).astype(np.float32)


class TagTable(tf.Module):
    """The tag vectors, one row per tag_id, on the CPU; trained sparsely with Adagrad, or frozen.

    Args:
        initial: float32[V, d] starting vectors (the wordvec stage's, row = tag_id).
        learning_rate: Adagrad's step size; 0 freezes the table (no accumulator is made).
        initial_accumulator: Adagrad's starting sum of squared gradients (Keras' default 0.1),
            which caps the first steps at ``learning_rate / sqrt(0.1)`` per unit gradient.

    Attributes:
        vectors: tf.Variable float32[V, d]; accumulator: tf.Variable float32[V, d] or None.
    """

    def __init__(self, initial: np.ndarray, learning_rate: float = 0.0, initial_accumulator: float = 0.1):
        super().__init__(name="tag_table")
        self.learning_rate = float(learning_rate)
        with tf.device("/CPU:0"):
            self.vectors = tf.Variable(np.asarray(initial, dtype=np.float32), trainable=False, name="tag_vectors")
            self.accumulator = None if self.frozen else tf.Variable(
                tf.fill(tf.shape(self.vectors), tf.constant(initial_accumulator, tf.float32)), trainable=False,
                name="tag_accumulator")

    @property
    def frozen(self) -> bool:
        """Whether the table is not trained (learning rate 0)."""
        return self.learning_rate <= 0

    def lookup(self, tag_ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Gather the distinct rows a batch uses.

        Args:
            tag_ids: int32[...] tag ids, repeats allowed.

        Returns:
            ``(unique_ids int32[U], rows float32[U, d], index int32[...])`` with
            ``rows[index] == vectors[tag_ids]``; U <= tag_ids.size, independent of V.
        """
        with tf.device("/CPU:0"):
            unique_ids, index = tf.unique(tf.reshape(tag_ids, [-1]))
            rows = tf.gather(self.vectors, unique_ids)
        return unique_ids, rows, tf.reshape(index, tf.shape(tag_ids))

    def apply_gradients(self, unique_ids: tf.Tensor, row_gradients: tf.Tensor) -> None:
        """One sparse Adagrad step on rows ``unique_ids`` (int32[U], distinct) with gradients float32[U, d].

        Reads and writes those U rows of the table and of the accumulator; every other row is left as it is.
        """
        if self.frozen:
            return
        with tf.device("/CPU:0"):
            accumulated = tf.gather(self.accumulator, unique_ids) + tf.square(row_gradients)
            self.accumulator.scatter_update(tf.IndexedSlices(accumulated, unique_ids))
            step = self.learning_rate * row_gradients * tf.math.rsqrt(accumulated)
            self.vectors.scatter_sub(tf.IndexedSlices(step, unique_ids))


def merge_rows(ids: tf.Tensor, row_gradients: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Sum gradients of repeated rows: int32[n] ids, float32[n, d] -> distinct int32[U], float32[U, d].

    Needed after gathering sparse gradients from several replicas, which may name the same tag.
    """
    unique_ids, index = tf.unique(ids)
    return unique_ids, tf.math.unsorted_segment_sum(row_gradients, index, tf.shape(unique_ids)[0])
