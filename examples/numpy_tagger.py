"""A linear tagger in plain numpy, trained on im2vec's epochs through the project's reader.

    python examples/numpy_tagger.py --root ROOT --epochs 5 --out tagger.npz

Tag t scores an image's CNN features f (L2-normalized) as ``f·weights[t] + bias[t]``. Each row of
an epoch is one sampled-softmax example per positive: the positive tag against the row's K
negatives (which the sample stage drew), so a step touches only the 1+K tags involved. The reader
waits for epochs that ``im2vec schedule`` has not made yet and reports this trainer's progress
as the consumer ``--consumer``, so the scheduler samples ahead of it and deletes what it finished.
Nothing here needs TensorFlow or PyTorch: the reader yields numpy arrays.
"""
import argparse

import numpy as np

from pipeline import reader


def scatter_add(table: np.ndarray, ids: np.ndarray, rows: np.ndarray) -> None:
    """``table[ids[i]] += rows[i]`` for every i, repeated ids summed (``np.add.at``, but fast for rows)."""
    order = np.argsort(ids, kind="stable")
    unique, starts = np.unique(ids[order], return_index=True)
    table[unique] += np.add.reduceat(rows[order], starts)


def train(root: str, epochs: int, consumer: str, learning_rate: float, poll_seconds: float = 10, batch_size: int = 256):
    """Train ``epochs`` epochs; returns ``weights`` float32[V, D] and ``bias`` float32[V]."""
    first = reader.wait_for_epoch(root, 1, consumer=consumer, poll_seconds=poll_seconds)
    weights = np.zeros((first["vocab_size"], first["feature_dim"]), np.float32)
    bias = np.zeros(first["vocab_size"], np.float32)
    for epoch in range(1, epochs + 1):
        for features, pos_ids, neg_ids in reader.batches(root, epoch, batch_size=batch_size, consumer=consumer,
                                                         poll_seconds=poll_seconds):
            features /= np.linalg.norm(features, axis=1, keepdims=True) + 1e-6
            for positive in pos_ids.T:
                ids = np.concatenate([positive[:, None], neg_ids], axis=1)                    # [n, 1+K]
                logits = np.einsum("nd,nkd->nk", features, weights[ids]) + bias[ids]
                grad = np.exp(logits - logits.max(axis=1, keepdims=True))
                grad /= grad.sum(axis=1, keepdims=True)
                grad[:, 0] -= 1                                  # softmax cross-entropy, target = column 0
                step = -learning_rate * grad             # summed over the batch: rows rarely share a tag
                rows = (step[..., None] * features[:, None, :]).reshape(-1, features.shape[1])   # [n·(1+K), D]
                scatter_add(weights, ids.ravel(), rows)
                scatter_add(bias, ids.ravel(), step.ravel())
    return weights, bias


def scores(weights: np.ndarray, bias: np.ndarray, features: np.ndarray) -> np.ndarray:
    """float[N, D] features -> float32[N, V] tag scores (rank each row to tag the image)."""
    features = np.asarray(features, np.float32)
    return features / (np.linalg.norm(features, axis=1, keepdims=True) + 1e-6) @ weights.T + bias


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--consumer", default="numpy-tagger")
    parser.add_argument("--learning-rate", type=float, default=0.4)
    parser.add_argument("--poll-seconds", type=float, default=10, help="how often to look for an epoch not made yet")
    parser.add_argument("--out", required=True, help="an .npz file for weights and bias")
    args = parser.parse_args()
    weights, bias = train(args.root, args.epochs, args.consumer, args.learning_rate, args.poll_seconds)
    np.savez(args.out, weights=weights, bias=bias)
