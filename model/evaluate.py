"""evaluate: how well the trained model tags and retrieves the held-out test images, against baselines.

Reads (ROOT = the run root URI; every read is in :func:`load` and the readers beside it):
    ROOT/tagged/          the test split (by user, so no test user's photos were trained on) and the
                          train split (the baselines' training images)
    ROOT/vocab/ zero_shot/  the vocabulary; the tags the vocab stage held out (zero_shot_fraction)
    ROOT/features/        CNN features; ROOT/model/ and ROOT/wordvec/words.kv (pipeline.query.load_model)
    ROOT/clean/           the test images' original tags (zero-shot ground truth, the example grid)
Writes ROOT/reports/ (model/report.py draws them):
    evaluation.json       one object per method (im2vec, popularity, knn, zero_shot): model.metrics.summary
    evaluation.md         the same as a Markdown table (``im2vec evaluate`` prints it)
    evaluation_pr.png     precision and recall at k = 1..10, per method
    evaluation_examples.png  test images with their predicted and original tags
    _manifest.json        last: rows_in = test-split images = rows_out (images evaluated)
                          + without_features + left_out (beyond evaluation_images); rows_rejected = 0

The test set: the test-split images of tagged/ that have features; when there are more than
``evaluation_images``, those with the smallest hash of (seed, photo_id), the same on every run.
An image's true tags are its vocabulary tags (tagged/).

Methods: ``im2vec``, the trained model, ranks tags as ``im2vec tag`` ranks them
(pipeline.query.tag_probabilities: g(f)·v_t + tag_bias_t mixed with the CNN's ConSE prior and, when
index/ was made by this model, the votes of the nearest training images in g's space), and the test
images for a tag by that same probability p(tag | image) (pipeline.query.probability_columns, the
tagger's one formula), as knn ranks them by its votes; ``map_by_cosine`` is its mAP with the images
ranked by cosine(g(f), v_t) instead, as ``im2vec search`` ranks them. ``popularity``, ``knn`` and
``zero_shot`` are in model/baselines.py. zero_shot keeps the projection alone (tags by g(f)·v_w,
images by cosine(g(f), v_w)), by choice: a held-out tag has no row in the vocabulary's softmax, no
tag_bias and no training image to vote for it, so the fused tagger has no probability for it
(``--any-word`` scores such words by the ConSE prior alone, which would measure the CNN's ImageNet
classifier, not whether g carries over to unseen words); and cosine is how ``im2vec search`` ranks
images for a word outside the vocabulary. zero_shot's ground truth: the test images' clean/ tags
among the held-out tags.

Metrics at k = 5 (model/metrics.py): per-tag precision, recall, F1 and N+ (the JEC/TagProp/FastTag
protocol), per-image P@5 and R@5, and the mean average precision of word queries. ``ms_per_image``
(im2vec, knn) is the compute time per query image to produce its tags, reading excluded: im2vec
embeds, scans the training images' embeddings in index/ for its neighbours and scores V tags; knn
scans every training image's CNN features.

Memory: the test images' features (N x D) and, for im2vec, their pipeline.query.ImageTerms (N x d
twice, the neighbours' sparse votes); mAP scores the N images for a few tags at a time (model.metrics
.mean_average_precision: N x Q <= SCORE_BLOCK / 4), never N x V at once.
"""
from __future__ import annotations

import functools
import io
import json
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from model import baselines, metrics
from model.report import EXAMPLES, METHODS, markdown, plot_curves, plot_examples
from pipeline import Im2vecError, storage
from pipeline.datasets import (clean as clean_data, features as features_data, model as model_data,
                               tagged as tagged_data, vocab as vocab_data, zero_shot as zero_shot_data)

KEYS = ("seed", "evaluation_images", "knn_k")
KNN_BLOCK = 4096         # training images compared with the whole test set at once


def log(message: str) -> None:
    """One progress line on stdout: ``[im2vec] evaluate: message``."""
    print(f"[im2vec] evaluate: {message}", flush=True)


def parameters(config: dict) -> dict:
    """The configuration values evaluate uses (:data:`KEYS`), checked and typed."""
    try:
        params = {"seed": int(config["seed"]), "evaluation_images": int(config["evaluation_images"]),
                  "knn_k": int(config["knn_k"])}
    except (TypeError, ValueError) as err:
        raise Im2vecError(f"evaluate: a config value has the wrong type: {err}") from None
    if params["evaluation_images"] < 1 or params["knn_k"] < 1:
        raise Im2vecError("evaluation_images and knn_k must be at least 1")
    return params


# --- reading: the one place that reads the run root ---------------------------------------------

@dataclass
class Inputs:
    """What evaluate reads (:func:`load`): arrays read at once, and readers for what is read as needed.

    Attributes:
        model: pipeline.query.Model; vocab_manifest, train_manifest: the vocab and train manifests.
        test: :func:`evaluation_set`; train_ids: sorted int64 train-split photo ids;
        train_counts: int64[V] train-split images per tag; held_out: :func:`pipeline.datasets.zero_shot.held_out_tags`.
        feature_blocks: () -> the training images' ``(photo_id, feature float32)`` blocks.
        neighbours: pipeline.query.load_neighbours (the training images of index/), or None.
        neighbour_tags: :func:`neighbour_tags` on this root; photo_tags: photo ids -> {photo_id: clean/ tags};
        images: photo ids -> PIL images or None (:func:`read_images`).
    """
    model: object
    vocab_manifest: dict
    train_manifest: dict
    test: dict
    train_ids: np.ndarray
    train_counts: np.ndarray
    held_out: list[str] | None
    feature_blocks: Callable
    neighbours: object
    neighbour_tags: Callable
    photo_tags: Callable
    images: Callable


def load(root: str, config: dict, params: dict) -> Inputs:
    """Read what evaluating ``root`` needs (see the module docstring); raises Im2vecError when an input is missing."""
    from model import data
    from pipeline import query

    vocab_manifest = vocab_data.DATASET.require(root)
    model = query.load_model(root)
    test = evaluation_set(root, limit=params["evaluation_images"], seed=params["seed"])
    train_ids = train_photo_ids(root)
    neighbours = query.load_neighbours(root, model)
    if neighbours is None:
        log("no index/ made by this model: im2vec's tags go without the training images' votes")
    return Inputs(model=model, vocab_manifest=vocab_manifest,
                  train_manifest=model_data.DATASET.manifest(root) or {}, test=test,
                  train_ids=train_ids, train_counts=data.train_tag_counts(root, len(model.tags)),
                  held_out=zero_shot_data.held_out_tags(root), feature_blocks=functools.partial(feature_blocks, root, train_ids),
                  neighbours=neighbours,
                  neighbour_tags=functools.partial(neighbour_tags, root),
                  photo_tags=functools.partial(query.photo_tags, root),
                  images=functools.partial(read_images, root, config))


def ragged(lists: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A list<int> array -> (offsets int64[N + 1] from 0, values int32[offsets[-1]]) (model.metrics' layout)."""
    lists = lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
    offsets = lists.offsets.to_numpy().astype(np.int64)
    values = lists.values.to_numpy()[offsets[0]:offsets[-1]].astype(np.int32)
    return offsets - offsets[0], values


def evaluation_set(root: str, *, limit: int, seed: int) -> dict:
    """The test images: their features and vocabulary tags.

    Returns:
        ``photo_id`` int64[N], ``feature`` float32[N, D], ``offsets`` int64[N + 1] and ``tag_ids``
        int32[...] (true tags), and the counts ``split_images`` (test-split images in tagged/) and
        ``without_features`` (of the candidates looked at, those with no features).
    """
    tagged = tagged_data.read_split(root, "test")
    photo_id = tagged.column("photo_id").to_numpy()
    order = tagged_data.hash_order(photo_id, seed)
    # Walk the hash order until `limit` images have features: features rejects a few images.
    chosen, features, without, start = [], [], 0, 0
    while sum(map(len, chosen)) < limit and start < len(order):
        need = limit - sum(map(len, chosen))
        wanted = photo_id[order[start:start + 2 * need + 16]]
        start += len(wanted)
        found, feature = features_data.read_rows(root, wanted)
        without += len(wanted) - len(found)
        chosen.append(found[:need])
        features.append(feature[:need])
    found = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
    if len(found) == 0:
        raise Im2vecError(f"no test-split image of {root}/tagged has features: check test_fraction and the "
                          "features stage")
    position = pc.index_in(pa.array(found), tagged.column("photo_id").combine_chunks()).to_numpy()
    offsets, tag_ids = ragged(tagged.column("tag_ids").take(pa.array(position)))
    return {"photo_id": found, "feature": np.concatenate(features), "offsets": offsets, "tag_ids": tag_ids,
            "split_images": len(photo_id), "without_features": without}


def train_photo_ids(root: str) -> np.ndarray:
    """Sorted int64 photo ids of the train split (tagged/)."""
    return np.unique(tagged_data.read_split(root, "train", ["photo_id"]).column("photo_id").to_numpy())


def feature_blocks(root: str, train_ids: np.ndarray):
    """Yield ``(photo_id int64[B], feature float32[B, D])`` of the images of features/ in ``train_ids``
    (sorted int64), KNN_BLOCK rows of features/ at a time (blocks without one are skipped)."""
    for ids, features in features_data.batches(root, KNN_BLOCK):
        at = np.minimum(np.searchsorted(train_ids, ids), max(len(train_ids) - 1, 0))
        keep = train_ids[at] == ids if len(train_ids) else np.zeros(len(ids), bool)
        if keep.any():
            yield ids[keep], features[keep].astype(np.float32)


def neighbour_tags(root: str, photo_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The vocabulary tags of some training images: (row int64[N, k] into the lists, offsets, tag_ids)."""
    unique = np.unique(photo_ids)
    table = tagged_data.DATASET.arrow(root).to_table(
        columns=["photo_id", "tag_ids"], filter=pc.field("photo_id").isin(pa.array(unique)))
    table = table.take(pc.sort_indices(table, [("photo_id", "ascending")]))
    offsets, tag_ids = ragged(table.column("tag_ids"))
    rows = np.searchsorted(table.column("photo_id").to_numpy(), photo_ids)
    return rows, offsets, tag_ids


def read_images(root: str, config: dict, photo_ids: np.ndarray) -> list:
    """PIL images (or None) of some photos, through the features stage's ``image_uri`` template."""
    from PIL import Image

    from pipeline import imagesource

    text = features_data.image_uri(root) or config.get("image_uri")
    if not text:
        return [None] * len(photo_ids)
    template = imagesource.parse_template(text)
    # Example pictures only: a clean/ without a manifest is read too, as query.photo_tags does.
    clean = clean_data.photo_rows(root, photo_ids, list(dict.fromkeys(["photo_id", *template.columns])), finished=False)
    uri_of = dict(zip(clean.column("photo_id").to_pylist(), template.expand(clean).to_pylist()))
    reader = imagesource.source_for(config)
    images = []
    for photo_id in photo_ids.tolist():
        fetched = reader.read(uri_of.get(photo_id))
        try:
            images.append(Image.open(io.BytesIO(fetched.data)).convert("RGBA") if fetched.data else None)
        except OSError:
            images.append(None)
    return images


# --- the methods ---------------------------------------------------------------------------------

def zero_shot(inputs: Inputs, embeddings: np.ndarray, root: str) -> dict:
    """The zero_shot object of the report (model.baselines.zero_shot); ``{"run": False, "reason"}`` if not run."""
    from pipeline import query

    held = inputs.held_out
    if held:
        photo_ids = inputs.test["photo_id"]
        return baselines.zero_shot(embeddings, photo_ids, held, functools.partial(query.word_vector, inputs.model),
                                   inputs.photo_tags(photo_ids))
    fraction = float((inputs.vocab_manifest.get("parameters") or {}).get("zero_shot_fraction") or 0)
    if not fraction:
        reason = "zero_shot_fraction is 0: no tag was held out of training"
    elif held is None:
        reason = f"{storage.join(root, 'zero_shot')} is missing"
    else:
        reason = f"no tag was held out (zero_shot_fraction {fraction} of too few tags)"
    return {"run": False, "reason": reason + " (run `im2vec vocab --set zero_shot_fraction=0.1` and the "
            "stages after it)", "held_out": 0}


def im2vec_figures(model, terms, top: np.ndarray, truth: tuple, tag_ids: np.ndarray | None = None) -> dict:
    """im2vec's object of a report (this one and model/cross.py's): model.metrics.summary of its ranked
    tags, the images for a tag ranked by p(tag | image) (pipeline.query.probability_columns), and
    ``map_by_cosine``, its mAP with the images ranked by cosine(g(f), v_t) instead.

    Args:
        model: pipeline.query.Model; terms: pipeline.query.image_terms of the N images.
        top: int32[N, CURVE_K] pipeline.query.top_tags of those images, over the same columns as ``truth``.
        truth: ``(offsets, tag_ids, S)``, the images' true tags as columns 0..S-1.
        tag_ids: int64[S] the vocabulary tag id of each column (the tags shared with another corpus);
            None: column t is tag t, S = V.
    """
    from pipeline import query

    def probabilities(columns: np.ndarray) -> np.ndarray:
        return query.probability_columns(model, terms, columns if tag_ids is None else tag_ids[columns])

    vectors = model.tag_vectors if tag_ids is None else model.tag_vectors[tag_ids]
    by_cosine = metrics.mean_average_precision(baselines.cosine_scores(terms.embeddings, vectors), *truth)
    return {**metrics.summary(top, *truth, probabilities), "map_by_cosine": by_cosine["map"]}


def evaluate(inputs: Inputs, params: dict, root: str) -> tuple[dict, dict]:
    """Run every method on the test set.

    Returns:
        ``(report, predictions)``: the evaluation.json object, and im2vec's and knn's ranked tags
        (int32[N, CURVE_K] each).
    """
    from pipeline import query

    model, test = inputs.model, inputs.test
    size, n = len(model.tags), len(test["photo_id"])
    truth = (test["offsets"], test["tag_ids"], size)
    log(f"{n:,} test images (of {test['split_images']:,} in the test split), {size:,} tags")

    started = time.perf_counter()
    embeddings = query.embed(model, test["feature"])
    terms = query.image_terms(model, embeddings, test["feature"], inputs.neighbours)
    top, _ = query.top_tags(model, terms, metrics.CURVE_K)
    im2vec_seconds = time.perf_counter() - started
    report = {"im2vec": {**im2vec_figures(model, terms, top, truth), "ms_per_image": 1000 * im2vec_seconds / n}}
    log(f"im2vec: F1 {report['im2vec']['f1']:.4f}, mAP {report['im2vec']['map'] or 0:.4f} "
        f"(images by cosine: {report['im2vec']['map_by_cosine'] or 0:.4f})")
    report["popularity"] = metrics.summary(baselines.popularity_top_k(inputs.train_counts, n, metrics.CURVE_K), *truth)
    knn_top, votes, knn_seconds = baselines.knn(test["feature"], inputs.feature_blocks(), inputs.neighbour_tags,
                                                size, params["knn_k"])
    report["knn"] = {**metrics.summary(knn_top, *truth, votes.column_block), "ms_per_image": 1000 * knn_seconds / n,
                     "k": params["knn_k"]}
    log(f"knn: F1 {report['knn']['f1']:.4f}")
    report["zero_shot"] = zero_shot(inputs, embeddings, root)
    report["sizes"] = {"test_images": n, "test_split_images": test["split_images"],
                       "without_features": test["without_features"], "vocab_size": size,
                       "train_images": int(len(inputs.train_ids)), "k": metrics.TOP_K}
    trained_with = inputs.train_manifest.get("parameters") or {}
    report["model"] = {"epoch": inputs.train_manifest.get("epoch"), **{key: trained_with[key] for key in (
        "loss", "hidden_sizes", "tag_learning_rate", "tag_bias_strength", "batch_size", "learning_rate", "epochs")
        if key in trained_with}}
    return report, {"im2vec": top, "knn": knn_top}


def examples_png(inputs: Inputs, predictions: dict) -> bytes:
    """evaluation_examples.png of the first EXAMPLES test images (model.report.plot_examples)."""
    test = inputs.test
    shown = test["photo_id"][:EXAMPLES]
    true_tags = [set(test["tag_ids"][test["offsets"][i]:test["offsets"][i + 1]].tolist()) for i in range(len(shown))]
    return plot_examples(shown, inputs.images(shown), inputs.photo_tags(shown), true_tags, predictions,
                         inputs.model.tags)


def run(config: dict, root: str) -> dict:
    """Evaluate the trained model under ``root`` and write ROOT/reports/ (see the module docstring).

    Returns:
        The manifest; its ``report`` field is evaluation.json's object and ``markdown`` the summary.
    """
    started = time.time()
    root = storage.to_uri(root)
    reports = storage.join(root, "reports")
    storage.delete(storage.join(reports, storage.MANIFEST))
    params = parameters(config)
    inputs = load(root, config, params)
    report, predictions = evaluate(inputs, params, root)
    summary = markdown(report)
    storage.write_text(storage.join(reports, "evaluation.json"), json.dumps(report, indent=2) + "\n")
    storage.write_text(storage.join(reports, "evaluation.md"), summary)
    storage.write_bytes(storage.join(reports, "evaluation_pr.png"), plot_curves(report))
    storage.write_bytes(storage.join(reports, "evaluation_examples.png"), examples_png(inputs, predictions))
    sizes = report["sizes"]
    left_out = sizes["test_split_images"] - sizes["test_images"] - sizes["without_features"]
    manifest = storage.write_manifest(
        reports, "evaluate", rows_in=sizes["test_split_images"], rows_out=sizes["test_images"], rows_rejected=0,
        without_features=sizes["without_features"], left_out=left_out,
        metrics={name: {key: report[name].get(key) for key in ("precision", "recall", "f1", "n_plus", "map")}
                 for name in METHODS},
        parameters=params, inputs=[storage.join(root, name) for name in (
            "tagged", "vocab", "zero_shot", "features", "model", "wordvec", "clean")], started=started)
    return {**manifest, "report": report, "markdown": summary}
