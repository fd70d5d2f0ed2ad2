"""Cross-corpus evaluation: a model trained on one run root, scored on another root's test images.

``im2vec evaluate --root TRAINED --against OTHER``. The two roots have their own vocabularies; a tag
is the same tag in both when its (normalized) string is. Reads:

    TRAINED/model/, vocab/, wordvec/   the model and its tags (pipeline.query.load_model)
    TRAINED/tagged/, features/         the training split: popularity's counts, knn's voters
    OTHER/vocab/, tagged/, features/   the test images (OTHER's test split), their tags, their features
                                       (made by the same CNN: :func:`check_same_cnn`)

Writes TRAINED/reports/cross-NAME/ (NAME = OTHER's last path component; pipeline.datasets.cross):
``evaluation.json`` (one object per method, as the in-corpus evaluation.json), ``evaluation.md``,
then ``_manifest.json``. The in-corpus reports/evaluation.json is not touched.

Methods, over the S shared tags (ordered by TRAINED's tag_id, so ties go to its more frequent tag):

    im2vec      the fused tagger of the in-corpus report (pipeline.query.probability_columns: the projection's
                softmax over TRAINED's vocabulary, the ConSE prior, the votes of TRAINED's index/), its
                p(tag | image) of the shared tags ranking tags for an image and images for a tag (mAP);
                ``map_by_cosine`` ranks images by cosine(g(f), v_t) beside it
    popularity  TRAINED's train-split images per shared tag
    knn         TRAINED's ``knn_k`` nearest training images vote their tags; the shared tags' votes
    zero_shot   OTHER's vocabulary tags outside TRAINED's vocabulary that have a word vector
                (TRAINED's words.kv), scored g(f)·v_w (model.baselines.zero_shot)

An image's true tags are its OTHER vocabulary tags among the shared ones (zero_shot: among the
others). Every figure comes from model.metrics.summary, as in the in-corpus report.
"""
from __future__ import annotations

import functools
import json
import time

import numpy as np

from model import baselines, metrics
from model import evaluate as in_corpus
from model.report import table
from pipeline import Im2vecError, storage
from pipeline.datasets import cross, features, model as model_data, vocab


def log(message: str) -> None:
    """One progress line on stdout: ``[im2vec] evaluate --against: message``."""
    print(f"[im2vec] evaluate --against: {message}", flush=True)


def check_same_cnn(trained_root: str, other_root: str) -> dict:
    """The CNN settings and feature size both roots' features/ were made with; raises Im2vecError
    (one line) when they differ: features of another CNN mean nothing to the trained projection."""
    made = []
    for root in (trained_root, other_root):
        manifest = features.DATASET.require(root)
        parameters = manifest.get("parameters") or {}
        made.append({**{key: parameters.get(key) for key in features.MODEL_KEYS},
                     "feature_dim": manifest.get("feature_dim")})
    if made[0] != made[1]:
        differ = ", ".join(f"{key} {made[0][key]!r} vs {made[1][key]!r}" for key in made[0] if made[0][key] != made[1][key])
        raise Im2vecError(f"{features.DATASET.uri(other_root)} was made by another CNN than "
                          f"{features.DATASET.uri(trained_root)} ({differ}): run `im2vec features` on "
                          f"{other_root} with the trained root's cnn settings")
    return made[0]


def shared_tags(trained_tags: list[str], other_tags: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The tags both vocabularies hold, by tag string.

    Args:
        trained_tags, other_tags: each vocabulary in tag_id order (``tags[tag_id]`` is the tag).

    Returns:
        ``(trained_ids, other_ids)``, int64[S] each: shared tag s is ``trained_tags[trained_ids[s]]``
        == ``other_tags[other_ids[s]]``; in ascending trained_ids.
    """
    other_id = {tag: i for i, tag in enumerate(other_tags)}
    pairs = [(i, other_id[tag]) for i, tag in enumerate(trained_tags) if tag in other_id]
    trained_ids = np.array([p[0] for p in pairs], np.int64)
    return trained_ids, np.array([p[1] for p in pairs], np.int64)


def to_columns(offsets: np.ndarray, tag_ids: np.ndarray, columns_of_ids: np.ndarray, vocab_size: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Ragged true tags in one id space -> the same images' tags among some of those ids, renumbered.

    Args:
        offsets, tag_ids: int64[N + 1] and int[...] the images' tags (model.metrics' layout), ids < vocab_size.
        columns_of_ids: int[C] distinct ids; id ``columns_of_ids[c]`` becomes column c, other ids are dropped.

    Returns:
        ``(offsets int64[N + 1], tag_ids int32[...])`` over columns 0..C-1, each image's in ascending column.
    """
    column = np.full(vocab_size, -1, np.int64)
    column[np.asarray(columns_of_ids, np.int64)] = np.arange(len(columns_of_ids))
    offsets = np.asarray(offsets, np.int64)
    mapped = column[np.asarray(tag_ids, np.int64)[:offsets[-1]]]
    row = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    kept = mapped >= 0
    order = np.lexsort((mapped[kept], row[kept]))
    counts = np.bincount(row[kept], minlength=len(offsets) - 1)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), mapped[kept][order].astype(np.int32)


def score(model, terms, train_counts: np.ndarray, votes: baselines.Votes, shared: np.ndarray,
          offsets: np.ndarray, tag_ids: np.ndarray) -> dict:
    """im2vec, popularity and knn over the shared tags (model.metrics.summary each).

    Args:
        model: the trained pipeline.query.Model; terms: pipeline.query.image_terms of the N test images
            (with their features and TRAINED's neighbours, as the in-corpus evaluation has them);
        train_counts: int64[V] TRAINED's train-split images per tag;
        votes: knn's votes over the trained vocabulary (model.baselines.knn).
        shared: int64[S] trained tag ids of the shared tags, ascending; column s of every ranking is shared[s].
        offsets, tag_ids: the test images' true tags as columns 0..S-1 (:func:`to_columns`).
    """
    from pipeline import query

    truth = (offsets, tag_ids, len(shared))
    top, _ = query.top_tags(model, terms, metrics.CURVE_K, shared)
    report = {"im2vec": in_corpus.im2vec_figures(model, terms, top, truth, shared)}
    report["popularity"] = metrics.summary(
        baselines.popularity_top_k(train_counts[shared], len(terms.embeddings), metrics.CURVE_K), *truth)
    shared_votes = votes.column_block(shared)
    report["knn"] = metrics.summary(metrics.top_k_of_scores(shared_votes, metrics.CURVE_K), *truth,
                                    lambda columns: shared_votes[:, columns])
    return report


def other_only(model, other_tags: list[str], embeddings: np.ndarray, photo_ids: np.ndarray, offsets: np.ndarray,
               tag_ids: np.ndarray) -> dict:
    """The zero_shot object: OTHER's vocabulary tags outside TRAINED's, through TRAINED's word vectors.

    ``other_only`` counts those tags, ``with_vector`` those among them with a vector; the rest as
    model.baselines.zero_shot returns it (``{"run": False, "reason"}`` when none has a vector).
    """
    from pipeline import query

    outside = [tag for tag in other_tags if model.tag_id(tag) is None]
    if not outside:
        return {"run": False, "reason": "every tag of the other vocabulary is in the trained one", "other_only": 0,
                "with_vector": 0}
    own = {int(p): [other_tags[t] for t in tag_ids[offsets[i]:offsets[i + 1]]] for i, p in enumerate(photo_ids)}
    result = baselines.zero_shot(embeddings, photo_ids, outside, functools.partial(query.word_vector, model), own)
    result["other_only"] = result.pop("held_out")
    if not result["run"]:
        result["reason"] = f"none of the {len(outside):,} tags outside the trained vocabulary has a word vector"
    return result


def evaluate(config: dict, root: str, other_root: str) -> dict:
    """Score the model under ``root`` on ``other_root``'s test images (see the module docstring).

    Returns:
        The cross-NAME/evaluation.json object: ``im2vec``, ``popularity``, ``knn``, ``zero_shot``
        (model.metrics.summary figures each), ``sizes``, ``shared_tags`` (the 20 most frequent in
        the trained root), ``trained`` and ``against`` (the two roots) and ``model``.
    """
    from model import data
    from pipeline import query

    params = in_corpus.parameters(config)
    cnn = check_same_cnn(root, other_root)
    model = query.load_model(root)
    other_tags = vocab.tags(other_root)
    shared, other_shared = shared_tags(model.tags, other_tags)
    if len(shared) == 0:
        raise Im2vecError(f"the vocabularies of {root} and {other_root} share no tag")
    test = in_corpus.evaluation_set(other_root, limit=params["evaluation_images"], seed=params["seed"])
    n = len(test["photo_id"])
    log(f"{n:,} test images of {other_root}, {len(shared):,} shared tags (of {len(model.tags):,} trained, "
        f"{len(other_tags):,} other)")
    offsets, tag_ids = to_columns(test["offsets"], test["tag_ids"], other_shared, len(other_tags))
    embeddings = query.embed(model, test["feature"])
    neighbours = query.load_neighbours(root, model)
    if neighbours is None:
        log("no index/ made by this model: im2vec's tags go without the training images' votes")
    terms = query.image_terms(model, embeddings, test["feature"], neighbours)
    train_ids = in_corpus.train_photo_ids(root)
    _, votes, _ = baselines.knn(test["feature"], in_corpus.feature_blocks(root, train_ids),
                                functools.partial(in_corpus.neighbour_tags, root), len(model.tags), params["knn_k"])
    report = score(model, terms, data.train_tag_counts(root, len(model.tags)), votes, shared, offsets, tag_ids)
    report["knn"]["k"] = params["knn_k"]
    report["zero_shot"] = other_only(model, other_tags, embeddings, test["photo_id"], test["offsets"], test["tag_ids"])
    report["sizes"] = {"test_images": n, "test_split_images": test["split_images"],
                       "without_features": test["without_features"], "shared_tags": len(shared),
                       "trained_vocab_size": len(model.tags), "other_vocab_size": len(other_tags),
                       "test_images_with_shared_tag": int((np.diff(offsets) > 0).sum()),
                       "train_images": int(len(train_ids)), "k": metrics.TOP_K}
    report["shared_tags"] = [model.tags[t] for t in shared[:20]]
    report.update(trained=root, against=other_root, cnn=cnn,
                  model={"epoch": (model_data.DATASET.manifest(root) or {}).get("epoch")})
    for name in ("im2vec", "popularity", "knn"):
        log(f"{name}: P@5 {report[name]['p_at_5']:.4f} F1 {report[name]['f1']:.4f}")
    return report


def markdown(report: dict) -> str:
    """cross-NAME/evaluation.md: the methods' table (model.report.table), then what it is over."""
    sizes, zero = report["sizes"], report["zero_shot"]
    lines = [f"## {report['trained']} evaluated on {report['against']}", "", *table(report), "",
             f"At k={metrics.TOP_K} over the {sizes['shared_tags']:,} tags the two vocabularies share (of "
             f"{sizes['trained_vocab_size']:,} trained and {sizes['other_vocab_size']:,} other), on "
             f"{sizes['test_images']:,} test images of the other root ({sizes['test_images_with_shared_tag']:,} "
             f"with a shared tag); per-tag figures over the {report['im2vec']['tags']:,} shared tags on a test image. "
             f"popularity and knn ({report['knn']['k']} nearest of {sizes['train_images']:,}) use the trained "
             f"root's training images. Most frequent shared tags: {', '.join(report['shared_tags'])}."]
    if zero.get("run"):
        lines.append(f"zero_shot: {zero['other_only']:,} tags of the other vocabulary are not in the trained one, "
                     f"{zero['with_vector']:,} with a word vector, {zero['relevant_in_test']:,} on a test image; "
                     f"ranked among the {zero['with_vector']:,} (random-ranking mAP {zero['map_random']:.3f}).")
    return "\n".join(lines) + "\n"


def run(config: dict, root: str, other_root: str) -> dict:
    """Evaluate ``root``'s model on ``other_root`` and write ROOT/reports/cross-NAME/ (module docstring).

    Returns:
        The manifest; ``report`` is evaluation.json's object and ``markdown`` the summary.
    """
    started = time.time()
    root, other_root = storage.to_uri(root), storage.to_uri(other_root)
    folder = cross.dataset(other_root).uri(root)
    storage.delete(storage.join(folder, storage.MANIFEST))
    report = evaluate(config, root, other_root)
    summary = markdown(report)
    storage.write_text(storage.join(folder, cross.EVALUATION), json.dumps(report, indent=2) + "\n")
    storage.write_text(storage.join(folder, "evaluation.md"), summary)
    sizes = report["sizes"]
    manifest = storage.write_manifest(
        folder, "evaluate --against", rows_in=sizes["test_split_images"], rows_out=sizes["test_images"],
        rows_rejected=0, against=other_root, without_features=sizes["without_features"],
        left_out=sizes["test_split_images"] - sizes["test_images"] - sizes["without_features"],
        parameters=in_corpus.parameters(config),
        inputs=[storage.join(root, name) for name in ("model", "vocab", "wordvec", "tagged", "features")] +
               [storage.join(other_root, name) for name in ("vocab", "tagged", "features")], started=started)
    return {**manifest, "report": report, "markdown": summary}
