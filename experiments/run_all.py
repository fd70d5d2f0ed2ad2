"""Run named training settings over seeds with the harness; append one JSON line per run.

Each run records validation figures (capped per user: the selection set; and uncapped), and the
test figures (uncapped, as `im2vec evaluate` scores today, and capped) for the projection alone
and for post-hoc taggers on top of it (hybrid with neighbour votes, ConSE prior), each at a grid of
fusion weights, so a weight can be chosen on validation afterwards (experiments/summarize.py).

    PYTHONPATH=. python experiments/run_all.py --root /data/demo --out results.jsonl \
        --seeds 1 2 3 --runs default option1 in_batch ...
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import replace

import numpy as np

sys.path.insert(0, ".")
from experiments import harness  # noqa: E402
from experiments.harness import Method  # noqa: E402

CAP = 25
RUNS = {
    "default": Method(),
    "np0": Method(neg_power=0.0),
    "np1": Method(neg_power=1.0),
    "np075_noexcl": Method(exclude_own=False),
    "np1_noexcl": Method(neg_power=1.0, exclude_own=False),
    "option1": Method(negatives="next_image"),
    "in_batch": Method(negatives="in_batch"),
    "in_batch_logq": Method(negatives="in_batch", logq=True),
    "mixed": Method(negatives="mixed"),
    "mixed_logq": Method(negatives="mixed", logq=True),
    "presampled_logq": Method(logq=True),
    "uniform_pos": Method(positives="uniform"),
    "full": Method(negatives="full"),
    "full_uniform_pos": Method(negatives="full", positives="uniform"),
    "in_batch_logq_uniform_pos": Method(negatives="in_batch", logq=True, positives="uniform"),
}
HYBRID_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
CONSE_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


def softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def normalized(votes):
    return votes / np.maximum(votes.sum(axis=1, keepdims=True), 1e-12)


def class_vectors(words, names):
    """float32[1000, d] mean word vector of each ImageNet class name (words.kv); rows without any word are 0."""
    out = np.zeros((len(names), words.vector_size), np.float32)
    for i, name in enumerate(names):
        found = [words[w] for w in re.split(r"[\s\-']+", name.lower()) if w and w in words.key_to_index]
        if found:
            out[i] = np.mean(found, axis=0)
    return out


def imagenet_names():
    """Class names in torchvision's class order (sorted WordNet ids), from Debian darknet's 1k label lists."""
    base = "/usr/share/darknet/data/imagenet."
    wnids = open(base + "labels.list").read().split("\n")[:1000]
    names = open(base + "shortnames.list").read().split("\n")[:1000]
    return [n for _, n in sorted(zip(wnids, names))]


class Context:
    """Everything fixed across runs: the eval sets and the baselines' scores."""

    def __init__(self, root):
        from gensim.models import KeyedVectors

        from pipeline import cnn, storage

        self.corpus = c = harness.load_corpus(root)
        v, t = c.splits["validation"], c.splits["test"]
        self.sets = {"val": v.subset(harness.user_capped(v.photo_id, v.user_id, CAP, 13)), "val_all": v,
                     "test": t, "test_capped": t.subset(harness.user_capped(t.photo_id, t.user_id, CAP, 13))}
        self.knn = {name: harness.knn_scores(c, s.feature) for name, s in self.sets.items()}
        # distance from the training corpus: 1 - cosine to the nearest training image (CNN features)
        from pipeline.query import normalize_rows
        base = normalize_rows(c.splits["train"].feature)
        self.far = {name: 1 - (normalize_rows(s.feature) @ base.T).max(axis=1) for name, s in self.sets.items()}
        typical = float(np.mean(self.far["val"]))
        self.far = {name: np.clip(f / typical, 0, 3)[:, None] for name, f in self.far.items()}
        state = cnn.read_torch_checkpoint(cnn.default_checkpoint())
        W, b = state["classifier.1.weight"], state["classifier.1.bias"]
        self.words = KeyedVectors.load(storage.filesystem(storage.join(c.root, "wordvec", "words.kv"))[1], mmap="r")
        self.class_vectors = class_vectors(self.words, imagenet_names())
        self.class_probs = {name: softmax(s.feature @ W.T + b) for name, s in self.sets.items()}
        V = c.vocab_size
        pop = np.tile(-np.arange(V, dtype=np.float32), (1, 1))
        popular = np.argsort(-c.train_counts, kind="stable")
        rank_score = np.zeros(V, np.float32)
        rank_score[popular] = -np.arange(V)
        self.baselines = {}
        for name, s in self.sets.items():
            self.baselines[name] = {
                "knn": harness.score_split(s, self.knn[name], None, None, V),
                "popularity": harness.score_split(s, np.tile(rank_score, (len(s), 1)), None, None, V)}
        del pop

    def conse(self, name, tag_vectors, top=10):
        """float32[N, V] cosine of each image's ConSE vector (top classes' probability-weighted name vectors) with tags."""
        from pipeline.query import normalize_rows

        probs = self.class_probs[name]
        keep = np.argsort(-probs, axis=1)[:, :top]
        p = np.take_along_axis(probs, keep, 1)
        vec = np.einsum("nk,nkd->nd", p, self.class_vectors[keep]) / p.sum(1, keepdims=True)
        return normalize_rows(vec) @ normalize_rows(tag_vectors).T


def evaluate_run(ctx: Context, result: dict) -> dict:
    """Every figure of one trained model on every eval set, for each post-hoc variant and weight."""
    c = ctx.corpus
    V = c.vocab_size
    proj, tv, bias = result["projection"], result["tag_vectors"], result["bias"]
    train_emb = harness.embed(proj, c.splits["train"].feature)
    out = {}
    for name, s in ctx.sets.items():
        e = harness.embed(proj, s.feature)
        logits = e @ tv.T + bias
        figures = {"projection": harness.score_split(s, logits, e, tv, V)}
        out[name] = figures
        if name == "test":
            import functools

            from model import baselines
            from pipeline.datasets import zero_shot
            from pipeline import query

            model = query.Model(projection=proj, tag_vectors=tv, tag_bias=bias, tags=c.tags, words=ctx.words)
            held = zero_shot.held_out_tags(c.root)
            zero = baselines.zero_shot(e, s.photo_id, held, functools.partial(query.word_vector, model),
                                       query.photo_tags(c.root, s.photo_id)) if held else {}
            out["zero_shot"] = {k: zero.get(k) for k in ("f1", "p_at_5", "map", "map_random", "relevant_in_test")}
        if name not in ("val", "test", "test_capped"):
            continue     # post-hoc variants: chosen on val, reported on test
        p = softmax(logits)
        # the same tags per image; images ranked for a tag by p(t | image) instead of cosine
        figures["prob"] = harness.score_split(s, p, None, None, V)
        learned_knn = normalized(harness.knn_scores(c, e, train_vectors=train_emb))
        cnn_knn = normalized(np.maximum(ctx.knn[name], 0))
        for w in HYBRID_WEIGHTS[1:]:
            figures[f"hybrid_learned_{w}"] = harness.score_split(s, (1 - w) * p + w * learned_knn, None, None, V)
            figures[f"hybrid_cnn_{w}"] = harness.score_split(s, (1 - w) * p + w * cnn_knn, None, None, V)
        conse = softmax(ctx.conse(name, tv) / 0.1)
        for w in CONSE_WEIGHTS[1:]:
            figures[f"conse_{w}"] = harness.score_split(s, (1 - w) * p + w * conse, None, None, V)
            gate = np.clip(w * ctx.far[name], 0, 1)     # more prior for images far from the training corpus
            figures[f"conse_far_{w}"] = harness.score_split(s, (1 - gate) * p + gate * conse, None, None, V)
        if ctx.combos:
            for w in (0.2, 0.3, 0.4):
                gate = np.clip(w * ctx.far[name], 0, 1)
                fused = (1 - gate) * p + gate * conse
                for h in (0.1, 0.2, 0.3):
                    figures[f"conse_far_{w}+hybrid_cnn_{h}"] = harness.score_split(
                        s, (1 - h) * fused + h * cnn_knn, None, None, V)
                    figures[f"conse_far_{w}+hybrid_learned_{h}"] = harness.score_split(
                        s, (1 - h) * fused + h * learned_knn, None, None, V)
                    plain = (1 - w) * p + w * conse      # the same without the distance gate
                    figures[f"conse_{w}+hybrid_learned_{h}"] = harness.score_split(
                        s, (1 - h) * plain + h * learned_knn, None, None, V)
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--runs", nargs="+", required=True)
    parser.add_argument("--set", action="append", default=[], help="override a Method field for every run")
    parser.add_argument("--views", default="", help="augmented train views (.npy from augment_views.py)")
    parser.add_argument("--tag", default="", help="suffix for run names")
    parser.add_argument("--combos", action="store_true", help="also ConSE + hybrid fusions")
    args = parser.parse_args()
    harness.limit_threads(1)
    started = time.time()
    ctx = Context(args.root)
    ctx.combos = args.combos
    if args.views:
        ctx.corpus.extra["views"] = np.load(args.views).astype(np.float32)
    print(f"context ready in {time.time() - started:.0f}s; val {len(ctx.sets['val'])} capped of "
          f"{len(ctx.sets['val_all'])}, test {len(ctx.sets['test'])} ({len(ctx.sets['test_capped'])} capped)",
          flush=True)
    with open(args.out + ".baselines.json", "w") as fh:
        json.dump(ctx.baselines, fh, indent=1)
    for run in args.runs:
        method = RUNS[run]
        for kv in args.set:
            key, value = kv.split("=", 1)
            current = getattr(method, key)
            value = json.loads(value)
            method = replace(method, **{key: tuple(value) if isinstance(current, tuple) else type(current)(value)})
        for seed in args.seeds:
            result = harness.train(ctx.corpus, method, seed, ctx.sets["val"])
            figures = evaluate_run(ctx, result)
            record = {"run": run + args.tag, "method": method.__dict__, "seed": seed, "best_epoch": result["epoch"],
                      "strength": result["strength"], "seconds": result["seconds"],
                      "history": [{**{k: h[k] for k in ("epoch", "loss", "val_f1", "strength")},
                                   "by_strength": {str(k): v for k, v in h["val_f1_by_strength"].items()}}
                                  for h in result["history"]],
                      "figures": figures}
            with open(args.out, "a") as fh:
                fh.write(json.dumps(record, default=float) + "\n")
            print(f"{run}{args.tag} seed {seed}: best epoch {result['epoch']} s={result['strength']} "
                  f"val F1 {figures['val']['projection']['f1']:.4f} P@5 {figures['val']['projection']['p_at_5']:.4f} "
                  f"mAP {figures['val']['projection']['map']:.4f} ({result['seconds']:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
