"""In-memory experiment harness: train im2vec's projection many times on one run root, fast.

Loads a run root's features/, tagged/, vocab/, wordvec/ (and zero_shot/, clean/ for the test's
zero-shot score) once into numpy, then trains the trainer's model (model.projection: the same
g, the same sparse-Adagrad tag table, Adam on g, softmax loss by default) in-process, with the
negatives drawn by one of several samplers (:data:`SAMPLERS`). Every epoch it scores validation
(per-tag F1 at 5, model.metrics), keeps the best epoch, and the final scores use the evaluate
stage's own code (model.metrics, model.baselines), so figures compare with `im2vec evaluate`.

Validation and test can be capped to ``user_cap`` images per user (the ``user_cap`` images
of each user with the smallest hash of (seed, photo_id)): one user's icon theme is ~850 of the
demo's 1,031 validation images.

Usage (see experiments/run_all.py for the comparisons):
    PYTHONPATH=. python experiments/harness.py --root /data/demo --method option2 --seeds 1 2 3
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field, replace

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

K = 5
BIAS_STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def limit_threads(threads: int = 1) -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


# --- the corpus ----------------------------------------------------------------------------------

def ragged_from_lists(lists) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(x) for x in lists], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = np.array([t for x in lists for t in x], np.int32)
    return offsets, values


def take_ragged(offsets, values, rows) -> tuple[np.ndarray, np.ndarray]:
    lists = [values[offsets[r]:offsets[r + 1]] for r in rows]
    return ragged_from_lists(lists)


def user_capped(photo_id: np.ndarray, user_id: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """Row numbers kept when each user keeps at most ``cap`` images (model.data.cap_per_user); cap 0 = all."""
    from model import data

    return data.cap_per_user(photo_id, user_id, cap, seed) if cap > 0 else np.arange(len(photo_id))


@dataclass
class Split:
    photo_id: np.ndarray
    user_id: np.ndarray
    feature: np.ndarray          # float32[N, D]
    offsets: np.ndarray
    tag_ids: np.ndarray

    def subset(self, rows) -> "Split":
        offsets, tag_ids = take_ragged(self.offsets, self.tag_ids, rows)
        return Split(self.photo_id[rows], self.user_id[rows], self.feature[rows], offsets, tag_ids)

    def __len__(self):
        return len(self.photo_id)


@dataclass
class Corpus:
    root: str
    tags: list
    images: np.ndarray           # int64[V] images per tag (vocab)
    pos_weight: np.ndarray       # float64[V] (vocab)
    initial: np.ndarray          # float32[V, d] wordvec
    splits: dict                 # name -> Split (tagged images with features)
    train_counts: np.ndarray = None
    extra: dict = field(default_factory=dict)

    @property
    def vocab_size(self):
        return len(self.tags)


def load_corpus(root: str) -> Corpus:
    import pyarrow.dataset as ds

    from model import data
    from pipeline import query, storage
    from pipeline.datasets import wordvec

    root = storage.to_uri(root)
    vocab = data.read_vocab(root)
    initial = wordvec.read_tag_vectors(root, vocab.num_rows)
    photo_ids, features = query.read_features(root)
    position = {int(p): i for i, p in enumerate(photo_ids.tolist())}
    tagged = ds.dataset(storage.filesystem(storage.join(root, "tagged"))[1], format="parquet").to_table().to_pydict()
    size = vocab.num_rows
    splits = {}
    for name in ("train", "validation", "test"):
        rows = [i for i, s in enumerate(tagged["split"]) if s == name and tagged["tag_ids"][i]
                and len(tagged["tag_ids"][i]) < size and int(tagged["photo_id"][i]) in position]
        rows.sort(key=lambda i: tagged["photo_id"][i])
        pid = np.array([tagged["photo_id"][i] for i in rows], np.int64)
        offsets, tag_ids = ragged_from_lists([sorted(tagged["tag_ids"][i]) for i in rows])
        splits[name] = Split(pid, np.array([tagged["user_id"][i] for i in rows], dtype=object),
                             features[[position[int(p)] for p in pid]].astype(np.float32), offsets, tag_ids)
    corpus = Corpus(root, vocab.column("tag").to_pylist(), vocab.column("images").to_numpy().astype(np.int64),
                    vocab.column("pos_weight").to_numpy().astype(np.float64), initial, splits)
    corpus.train_counts = np.bincount(splits["train"].tag_ids, minlength=size)
    return corpus


# --- samplers --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Method:
    """One training setting. ``negatives``: presampled | next_image | in_batch | mixed | full."""
    negatives: str = "presampled"
    neg_power: float = 0.75
    exclude_own: bool = True
    logq: bool = False
    positives: str = "pos_weight"     # pos_weight | uniform
    P: int = 2
    K: int = 20
    loss: str = "softmax"
    epochs: int = 20
    batch_size: int = 128
    learning_rate: float = 0.003
    tag_learning_rate: float = 0.1
    hidden: tuple = (1024,)
    patience: int = 0                 # 0 = train every epoch (still keeps the best)
    views: int = 1                    # feature augmentation: views per train image (extra['views'])

    def name(self):
        return json.dumps({k: v for k, v in self.__dict__.items() if v != getattr(Method(), k)}) or "default"


def negative_weights(corpus: Corpus, power: float) -> np.ndarray:
    return corpus.images.astype(np.float64) ** power


def sampling_bias(corpus: Corpus, method: Method, pos_share: np.ndarray) -> np.ndarray:
    """log Q_t - log posw_t: the sampler's lift of tag t's trained score (see model.projection.tag_bias).

    Q_t is the expected share of t among an image's candidate negatives, posw_t the positive weight.
    """
    V = corpus.vocab_size
    qneg = negative_weights(corpus, method.neg_power)
    qneg = qneg / qneg.sum()
    freq = corpus.images / corpus.images.sum()
    if method.negatives == "full" or method.logq:
        q = np.ones(V)
    elif method.negatives == "presampled":
        q = qneg
    elif method.negatives == "next_image":
        q = freq
    elif method.negatives == "in_batch":
        q = pos_share
    elif method.negatives == "mixed":
        q = method.K * qneg + method.batch_size * method.P * pos_share
    else:
        raise ValueError(method.negatives)
    posw = corpus.pos_weight if method.positives == "pos_weight" else np.ones(V)
    bias = np.log(np.maximum(q, 1e-12)) - np.log(posw)
    return bias - bias.mean()


def draw_epoch(corpus: Corpus, method: Method, seed: int, epoch: int):
    """(rows order int[N], pos_ids int32[N, P], neg_ids int32[N, K] or None) for one epoch of train images."""
    from pipeline import sampling

    train = corpus.splits["train"]
    V = corpus.vocab_size
    posw = corpus.pos_weight if method.positives == "pos_weight" else np.ones(V)
    pos_ids = sampling.draw_positives(train.photo_id, train.offsets, train.tag_ids, sampling.quantize_weights(posw),
                                      seed, epoch, method.P)
    neg_ids = None
    if method.negatives in ("presampled", "mixed"):
        prob, alias = sampling.build_alias(negative_weights(corpus, method.neg_power))
        if method.exclude_own:
            neg_ids = sampling.draw_negatives(train.photo_id, train.offsets, train.tag_ids, prob, alias, seed, epoch,
                                              method.K)
        else:
            bits = sampling.draw_bits(sampling.stream_key(seed, epoch, sampling.NEGATIVES), train.photo_id[:, None],
                                      np.arange(method.K))
            neg_ids = sampling.alias_draw(prob, alias, bits)
    order = np.random.default_rng([seed, epoch, 7]).permutation(len(train))
    return order, pos_ids, neg_ids


def own_matrix(corpus: Corpus, rows: np.ndarray) -> np.ndarray:
    train = corpus.splits["train"]
    own = np.zeros((len(rows), corpus.vocab_size), bool)
    lengths = np.diff(train.offsets)[rows]
    r = np.repeat(np.arange(len(rows)), lengths)
    starts = train.offsets[rows]
    within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    own[r, train.tag_ids[np.repeat(starts, lengths) + within]] = True
    return own


MAX_NEXT = 32   # Option I: at most this many of the next image's tags


def batch_candidates(corpus: Corpus, method: Method, rows, pos, neg, log_q):
    """(cand int32[B, C], valid bool[B, C], correction float32[B, P + C]) for one batch."""
    B = len(rows)
    own = own_matrix(corpus, rows)
    parts = []
    if method.negatives in ("presampled", "mixed"):
        parts.append(neg)
    if method.negatives == "next_image":
        train = corpus.splits["train"]
        nxt = np.roll(rows, -1)
        cand = np.zeros((B, MAX_NEXT), np.int32)
        valid_next = np.zeros((B, MAX_NEXT), bool)
        for i, r in enumerate(nxt):
            t = train.tag_ids[train.offsets[r]:train.offsets[r + 1]][:MAX_NEXT]
            cand[i, :len(t)] = t
            valid_next[i, :len(t)] = True
        parts.append(cand)
    if method.negatives in ("in_batch", "mixed"):
        flat = pos.reshape(-1)
        width = method.batch_size * method.P
        padded = np.zeros(width, np.int32)
        padded[:len(flat)] = flat
        parts.append(np.tile(padded, (B, 1)))
    if method.negatives == "full":
        parts.append(np.tile(np.arange(corpus.vocab_size, dtype=np.int32), (B, 1)))
    cand = np.concatenate(parts, axis=1).astype(np.int32)
    valid = np.ones(cand.shape, bool)
    if method.exclude_own or method.negatives != "presampled":
        valid &= ~own[np.arange(B)[:, None], cand]
    if method.negatives == "next_image":
        valid[:, :MAX_NEXT] &= valid_next
    if method.negatives in ("in_batch", "mixed"):
        width = method.batch_size * method.P
        n_real = len(pos.reshape(-1))
        real = np.zeros(width, bool)
        real[:n_real] = True
        # an image's own positives are excluded by the own-tag mask already
        valid[:, cand.shape[1] - width:] &= real[None, :]
    correction = np.zeros((B, method.P + cand.shape[1]), np.float32)
    if method.logq:
        correction = log_q[np.concatenate([pos, cand], axis=1)].astype(np.float32)
    return cand, valid, correction


# --- training --------------------------------------------------------------------------------------

def make_step(projection, optimizer, table, loss_name: str, P: int):
    import tensorflow as tf

    from model.projection import loss_function, scores

    loss_fn = loss_function(loss_name)

    @tf.function(reduce_retracing=True)
    def step(feature, pos_ids, cand, valid, correction):
        unique_ids, rows, index = table.lookup(tf.concat([pos_ids, cand], axis=1))
        with tf.GradientTape() as tape:
            tape.watch(rows)
            image_vectors = projection(feature, training=True)
            s = scores(image_vectors, tf.gather(rows, index)) - correction
            neg = tf.where(valid, s[:, P:], -1e9)
            per_image = loss_fn(s[:, :P], neg)
            loss = tf.reduce_mean(per_image)
        gradients, row_gradients = tape.gradient(loss, [projection.trainable_variables, rows])
        if not table.frozen:
            table.apply_gradients(unique_ids, tf.convert_to_tensor(row_gradients))
        optimizer.apply_gradients(zip(gradients, projection.trainable_variables))
        return loss

    return step


def embed(projection, feature):
    return np.asarray(projection(feature.astype(np.float32), training=False))


def tag_scores(embeddings, tag_vectors, bias):
    return embeddings @ tag_vectors.T + bias


def quick_f1(scores, split: Split, V: int) -> float:
    from model import metrics

    top = metrics.top_k_of_scores(scores, K)
    return metrics.per_tag_metrics(top, split.offsets, split.tag_ids, V)["f1"]


def train(corpus: Corpus, method: Method, seed: int, val: Split, log=None) -> dict:
    """Train one model; keep the (epoch, bias strength) with the best validation per-tag F1.

    Returns: {"projection": keras model at the best epoch, "tag_vectors", "bias" (chosen), "strength",
              "epoch", "history": [{"epoch", "loss", "val_f1" (best strength), ...}], "seconds"}.
    """
    import keras
    import tensorflow as tf

    from model.projection import TagTable, build_projection

    started = time.time()
    train_split = corpus.splits["train"]
    keras.utils.set_random_seed(seed)
    projection = build_projection(train_split.feature.shape[1], corpus.initial.shape[1], list(method.hidden))
    optimizer = keras.optimizers.Adam(method.learning_rate)
    optimizer.build(projection.trainable_variables)
    table = TagTable(corpus.initial, method.tag_learning_rate)
    step = make_step(projection, optimizer, table, method.loss, method.P)
    V = corpus.vocab_size
    history, best, waited = [], None, 0
    pos_share = None
    for epoch in range(1, method.epochs + 1):
        order, pos_ids, neg_ids = draw_epoch(corpus, method, seed, epoch)
        if pos_share is None:
            pos_share = np.bincount(pos_ids.ravel(), minlength=V) / pos_ids.size + 1e-9
            log_q = np.log(sampling_bias_q(corpus, method, pos_share)).astype(np.float32)
            bias0 = sampling_bias(corpus, method, pos_share)
        views = corpus.extra.get("views")
        losses = []
        for start in range(0, len(order), method.batch_size):
            rows = order[start:start + method.batch_size]
            pos = pos_ids[rows]
            neg = neg_ids[rows] if neg_ids is not None else None
            cand, valid, correction = batch_candidates(corpus, method, rows, pos, neg, log_q)
            feature = train_split.feature[rows]
            if views is not None and method.views > 1:
                pick = np.random.default_rng([seed, epoch, start]).integers(0, method.views, len(rows))
                feature = np.where((pick > 0)[:, None], views[pick.clip(1) - 1, rows], feature)
            losses.append(float(step(tf.constant(feature), tf.constant(pos), tf.constant(cand), tf.constant(valid),
                                      tf.constant(correction))))
        e = embed(projection, val.feature)
        tv = table.vectors.numpy()
        raw = e @ tv.T
        f1s = {s: quick_f1(raw + s * bias0, val, V) for s in BIAS_STRENGTHS}
        s_best = max(f1s, key=f1s.get)
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "val_f1": f1s[s_best], "strength": s_best,
                        "val_f1_by_strength": f1s})
        if log:
            log(f"epoch {epoch}: loss {np.mean(losses):.4f} val F1 {f1s[s_best]:.4f} (s={s_best})")
        if best is None or f1s[s_best] > best["val_f1"]:
            best = {"val_f1": f1s[s_best], "epoch": epoch, "strength": s_best, "weights": projection.get_weights(),
                    "tag_vectors": tv.copy()}
            waited = 0
        else:
            waited += 1
            if method.patience and waited >= method.patience:
                break
    projection.set_weights(best["weights"])
    return {"projection": projection, "tag_vectors": best["tag_vectors"], "bias": best["strength"] * bias0,
            "bias0": bias0, "strength": best["strength"], "epoch": best["epoch"], "history": history,
            "seconds": time.time() - started, "last_tag_vectors": table.vectors.numpy(),
            "pos_share": pos_share}


def sampling_bias_q(corpus: Corpus, method: Method, pos_share: np.ndarray) -> np.ndarray:
    """Q_t for the log-Q correction: expected count of tag t among one image's candidates."""
    qneg = negative_weights(corpus, method.neg_power)
    qneg = qneg / qneg.sum()
    if method.negatives == "presampled":
        return method.K * qneg + 1e-12
    if method.negatives == "in_batch":
        return method.batch_size * method.P * pos_share
    if method.negatives == "mixed":
        return method.K * qneg + method.batch_size * method.P * pos_share
    if method.negatives == "next_image":
        return corpus.images / corpus.images.sum() * 3 + 1e-12
    return np.ones(corpus.vocab_size)


# --- scoring ---------------------------------------------------------------------------------------

def score_split(split: Split, scores: np.ndarray, embeddings: np.ndarray, tag_vectors: np.ndarray, V: int) -> dict:
    """The evaluate stage's figures at k = 5 (model.metrics.summary without its k = 1..10 curve).

    Tags ranked by ``scores`` float[N, V]; images ranked for a tag by cosine(embeddings, tag_vectors)
    as the evaluate stage ranks them, or by ``scores`` when embeddings is None.
    """
    from model import baselines, metrics

    top = metrics.top_k_of_scores(scores, K)
    image_scores = baselines.cosine_scores(embeddings, tag_vectors) if embeddings is not None else \
        (lambda ids: scores[:, ids])
    per_tag = metrics.per_tag_metrics(top, split.offsets, split.tag_ids, V)
    p_at_5, r_at_5 = metrics.precision_recall_at_k(top, split.offsets, split.tag_ids)
    retrieval = metrics.mean_average_precision(image_scores, split.offsets, split.tag_ids, V)
    return {**{k: per_tag[k] for k in ("precision", "recall", "f1", "n_plus", "tags")}, "p_at_5": p_at_5,
            "r_at_5": r_at_5, "map": retrieval["map"], "map_random": retrieval["map_random"]}


def knn_scores(corpus: Corpus, query: np.ndarray, k: int = 10, train_vectors: np.ndarray | None = None) -> np.ndarray:
    """Dense float32[N, V]: the k nearest train images (cosine) vote their tags, weighted by cosine (as model.baselines.knn)."""
    from pipeline.query import normalize_rows

    train = corpus.splits["train"]
    base = normalize_rows(train.feature if train_vectors is None else train_vectors)
    q = normalize_rows(query)
    sims = q @ base.T
    nearest = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    votes = np.zeros((len(q), corpus.vocab_size), np.float32)
    for j in range(k):
        rows = nearest[:, j]
        w = np.maximum(sims[np.arange(len(q)), rows], 0)
        lengths = np.diff(train.offsets)[rows]
        r = np.repeat(np.arange(len(q)), lengths)
        starts = np.repeat(train.offsets[rows], lengths)
        within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        np.add.at(votes, (r, train.tag_ids[starts + within]), np.repeat(w, lengths))
    # ties (tags no neighbour carries) go to the more frequent tag, as model.baselines' Votes
    return votes - np.arange(corpus.vocab_size, dtype=np.float32) * 1e-7


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[13])
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--cap", type=int, default=25)
    args = parser.parse_args()
    limit_threads(1)
    corpus = load_corpus(args.root)
    method = Method()
    for kv in args.set:
        key, value = kv.split("=", 1)
        method = replace(method, **{key: type(getattr(method, key))(json.loads(value))})
    val = corpus.splits["validation"]
    if args.cap:
        val = val.subset(user_capped(val.photo_id, val.user_id, args.cap, 13))
    for seed in args.seeds:
        result = train(corpus, method, seed, val, log=print)
        print(seed, result["epoch"], result["strength"], max(h["val_f1"] for h in result["history"]))


if __name__ == "__main__":
    main()
