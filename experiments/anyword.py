"""`im2vec tag --any-word`: which rule for scoring words outside the vocabulary?

Candidates are words.kv keys (GloVe: ordered by corpus frequency). A vocabulary tag scores
g(f)·v_t + tag_bias_t; rules for any other word w:
    dot          g(f)·v_w over the ANY_WORD_LIMIT most frequent words (today)
    top N        the same, over the N most frequent words only
    unit         g(f)·(v_w / |v_w|)·m: the word's direction at the vocabulary's median tag norm m
                 (GloVe norms vary with frequency and co-occurrence spread, not with meaning)
    unit top N   both
Judged on validation images (capped per user) by P@5 against the image's own clean/ tags
(every user tag, not only the vocabulary's: an any-word answer can be right outside it), and
shown on photos from outside the corpus.

    PYTHONPATH=. python experiments/anyword.py --root /data/demo PHOTO...
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

sys.path.insert(0, ".")


def conse_query(model, embeddings, features, gamma, train_features, typical=None, gate=True):
    """Unit query vectors: g(f) moved towards the ConSE vector of MobileNetV2's ImageNet classes, the more
    the farther the image is from the training images (1 - cosine to the nearest, over its mean on validation)."""
    from experiments.run_all import class_vectors, imagenet_names, softmax
    from pipeline import cnn
    from pipeline.query import normalize_rows

    state = cnn.read_torch_checkpoint(cnn.default_checkpoint())
    probs = softmax(features @ state["classifier.1.weight"].T + state["classifier.1.bias"])
    keep = np.argsort(-probs, axis=1)[:, :10]
    p = np.take_along_axis(probs, keep, 1)
    vectors = class_vectors(model.words, imagenet_names())
    conse = normalize_rows(np.einsum("nk,nkd->nd", p, vectors[keep]))
    far = 1 - (normalize_rows(features) @ normalize_rows(train_features).T).max(axis=1)
    typical = float(far.mean()) if typical is None else typical
    weight = np.clip(gamma * far / typical, 0, 1)[:, None] if gate else np.full((len(features), 1), gamma)
    return normalize_rows((1 - weight) * normalize_rows(embeddings) + weight * conse), typical


def mixture(model, embeddings, conse, far_ratio, lam, n, tau=0.05, k=5):
    """Names and probabilities: (1 - l) p_tag + l p_word, l = clip(lam * far_ratio, 0, 1).

    p_tag: softmax over the vocabulary of g(f)·v_t + tag_bias_t (the tag ranking as it is);
    p_word: softmax over the n most frequent other words of cosine(ConSE vector, v_w) / tau.
    """
    from experiments.run_all import softmax
    from pipeline import query

    keys = model.words.index_to_key
    vocabulary = set(model.tags) | {t.replace(" ", "_") for t in model.tags}
    candidates = np.array([i for i, key in enumerate(keys[:n])
                           if key not in vocabulary and query.WORD_PATTERN.match(key)], np.int64)
    vectors = query.normalize_rows(np.asarray(model.words.vectors[candidates], np.float32))
    weight = np.clip(lam * far_ratio, 0, 1)[:, None]
    p = np.concatenate([(1 - weight) * softmax(embeddings @ model.tag_vectors.T + model.tag_bias),
                        weight * softmax(conse @ vectors.T / tau)], axis=1)
    names = np.array(list(model.tags) + [keys[i] for i in candidates], dtype=object)
    top = np.argsort(-p, axis=1)[:, :k]
    return names[top], np.take_along_axis(p, top, 1)


def rank(model, embeddings, rule: str, n: int, k: int = 5, train_embeddings=None):
    """[(words, scores)] per image, vocabulary tags and candidate words ranked together."""
    from model import metrics
    from pipeline import query

    keys = model.words.index_to_key
    vocabulary = set(model.tags) | {t.replace(" ", "_") for t in model.tags}
    candidates = np.array([i for i, key in enumerate(keys[:n])
                           if key not in vocabulary and query.WORD_PATTERN.match(key)], np.int64)
    vectors = np.asarray(model.words.vectors[candidates], np.float32)
    if rule.startswith("unit"):
        target = float(np.median(np.linalg.norm(model.tag_vectors, axis=1)))
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True) * target
    word_bias = np.zeros(len(vectors), np.float32)
    if "prior" in rule:
        # the tags' offsets as a function of the tag's GloVe frequency rank, extended to every word
        ranks = np.array([model.words.key_to_index.get(t.replace(" ", "_"), -1) for t in model.tags])
        known = ranks >= 0
        slope, intercept = np.polyfit(np.log1p(ranks[known]), model.tag_bias[known], 1)
        word_bias = (intercept + slope * np.log1p(candidates)).astype(np.float32)
    if "center" in rule:
        # hubness: a word that scores high on every image says nothing about this one
        word_mean = (train_embeddings @ vectors.T).mean(axis=0)
        tag_mean = (train_embeddings @ model.tag_vectors.T + model.tag_bias).mean()
        word_bias = word_bias - word_mean + tag_mean
    all_vectors = np.concatenate([model.tag_vectors, vectors])
    bias = np.concatenate([model.tag_bias, word_bias])
    if rule == "cosine":     # embeddings are unit query vectors: every candidate by cosine, no offsets
        all_vectors = all_vectors / np.linalg.norm(all_vectors, axis=1, keepdims=True)
        bias = np.zeros(len(all_vectors), np.float32)
    names = np.array(list(model.tags) + [keys[i] for i in candidates], dtype=object)
    top = metrics.top_k_tags(embeddings, all_vectors, k, bias)
    scores = np.einsum("nd,nkd->nk", embeddings, all_vectors[top]) + bias[top]
    return names[top], scores


RULES = [("dot", 0), ("dot", 100_000), ("dot", 10_000), ("unit", 100_000), ("unit", 10_000),
         ("unit_prior", 100_000), ("unit_prior", 10_000), ("unit_center", 100_000), ("unit_center", 10_000),
         ("unit_prior_center", 100_000), ("unit_prior_center", 10_000), ("dot_center", 100_000)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("photos", nargs="*")
    args = parser.parse_args()
    from experiments import harness
    from pipeline import query

    harness.limit_threads(1)
    model = query.load_model(args.root)
    corpus = harness.load_corpus(args.root)
    val = corpus.splits["validation"]
    val = val.subset(harness.user_capped(val.photo_id, val.user_id, 25, 13))
    own = query.photo_tags(args.root, val.photo_id)
    embeddings = query.embed(model, val.feature)
    train_embeddings = query.embed(model, corpus.splits["train"].feature)
    train_features = corpus.splits["train"].feature
    typical = None
    conse, typical = conse_query(model, embeddings, val.feature, 1.0, train_features, None, False)
    far = 1 - (query.normalize_rows(val.feature) @ query.normalize_rows(train_features).T).max(axis=1)
    typical = float(far.mean())
    for lam in (0.1, 0.2, 0.3, 0.5):
        for n in (10_000, 30_000):
            names, _ = mixture(model, embeddings, conse, far / typical, lam, n)
            hits = [len(set(row) & set(own.get(int(p), []))) for row, p in zip(names, val.photo_id)]
            outside = np.mean([[w not in set(model.tags) for w in row] for row in names])
            print(f"| mixture {lam} | {n:,} | {np.mean(hits) / 5:.3f} | {outside:.2f} |", flush=True)
    for gamma, gate in ():
        q, typical = conse_query(model, embeddings, val.feature, gamma, train_features, typical, gate)
        for n in (10_000, 30_000):
            names, _ = rank(model, q, "cosine", n)
            hits = [len(set(row) & set(own.get(int(p), []))) for row, p in zip(names, val.photo_id)]
            outside = np.mean([[w not in set(model.tags) for w in row] for row in names])
            print(f"| conse {gamma} {'gated' if gate else 'fixed'}, cosine | {n:,} | {np.mean(hits) / 5:.3f} | "
                  f"{outside:.2f} |", flush=True)
    print("| rule | words | P@5 vs own clean tags | share of top 5 outside the vocabulary |\n|---|---:|---:|---:|")
    for rule, n in RULES[:1]:
        names, _ = rank(model, embeddings, rule, n, train_embeddings=train_embeddings)
        hits = [len(set(row) & {t.replace(" ", "_") for t in own.get(int(p), [])} | set(row) & set(own.get(int(p), [])))
                for row, p in zip(names, val.photo_id)]
        outside = np.mean([[w not in set(model.tags) for w in row] for row in names])
        print(f"| {rule} | {n:,} | {np.mean(hits) / 5:.3f} | {outside:.2f} |", flush=True)
    if args.photos:
        from pipeline import tagging

        found, failed = tagging.image_features(args.root, args.photos)
        for path, error in failed.items():
            print(f"{path}: not tagged ({error.reason}: {error.detail})")
        args.photos = [path for path in args.photos if path in found]
        features = np.stack([found[path] for path in args.photos])
        embeddings = query.embed(model, features)
        far = 1 - (query.normalize_rows(features) @ query.normalize_rows(train_features).T).max(axis=1)
        print("photos' distance from the training images / validation's mean:", np.round(far / typical, 2).tolist())
        conse, _ = conse_query(model, embeddings, features, 1.0, train_features, typical, False)
        for lam in (0.1, 0.2, 0.3, 0.5):
            for n in (10_000, 30_000):
                print(f"\nmixture {lam}, top {n:,} words:")
                names, probs = mixture(model, embeddings, conse, far / typical, lam, n)
                for path, row in zip(args.photos, names):
                    print(f"  {path.rsplit('/', 1)[-1]}: {', '.join(row)}")
        for gamma, gate in ():
            q, _ = conse_query(model, embeddings, features, gamma, train_features, typical, gate)
            for n in (10_000, 30_000):
                print(f"\nconse {gamma} {'gated' if gate else 'fixed'}, cosine, top {n:,} words:")
                names, _ = rank(model, q, "cosine", n)
                for path, row in zip(args.photos, names):
                    print(f"  {path.rsplit('/', 1)[-1]}: {', '.join(row)}")
        for rule, n in RULES[:1]:
            print(f"\n{rule} top {n:,}:")
            names, _ = rank(model, embeddings, rule, n, train_embeddings=train_embeddings)
            for path, row in zip(args.photos, names):
                print(f"  {path.rsplit('/', 1)[-1]}: {', '.join(row)}")


if __name__ == "__main__":
    main()
