"""evaluate: how well the trained model tags and retrieves the held-out test images, against baselines.

Reads (ROOT = the run root URI):
    ROOT/tagged/          the test split (by user, so no test user's photos were trained on) and the
                          train split (the baselines' training images)
    ROOT/vocab/ zero_shot/  the vocabulary; the tags the vocab stage held out (zero_shot_fraction)
    ROOT/features/        CNN features; ROOT/model/ and ROOT/wordvec/words.kv (pipeline.query.load_model)
    ROOT/clean/           the test images' original tags (zero-shot ground truth, the example grid)
Writes ROOT/reports/:
    evaluation.json       one object per method (im2vec, popularity, knn, zero_shot), see below
    evaluation.md         the same as a Markdown table (``im2vec evaluate`` prints it)
    evaluation_pr.png     precision and recall at k = 1..10, per method
    evaluation_examples.png  test images with their predicted and original tags
    _manifest.json        last: rows_in = test-split images = rows_out (images evaluated)
                          + without_features + left_out (beyond evaluation_images); rows_rejected = 0

The test set: the test-split images of tagged/ that have features; when there are more than
``evaluation_images``, those with the smallest hash of (seed, photo_id), the same on every run.
An image's true tags are its vocabulary tags (tagged/).

Methods, each predicting k tags per test image and (but popularity) scoring every image for a tag:
    im2vec      the trained model: tags ranked by g(f)·v_t + tag_bias_t as ``im2vec tag`` ranks them
                (pipeline.query); images ranked for a tag by cosine(g(f), v_t)
    popularity  the k most frequent tags of the training images, for every image
    knn         the ``knn_k`` nearest training images by cosine of CNN features vote their tags,
                each vote weighted by its cosine; ties (tags no neighbour carries) go to the
                more frequent tag (tag_ids are in frequency order); found by brute force, a block
                of training images at a time, so memory holds the test set and one block
    zero_shot   the held-out tags (ROOT/zero_shot/), never seen in training: an image scores a
                held-out tag w as g(f)·v_w with w's word vector (pipeline.query.word_vector); the
                k best of the held-out tags that have a vector are predicted; ground truth is the
                test images' clean/ tags among those held-out tags

Metrics at k = 5 (model/metrics.py): per-tag precision, recall, F1 and N+ (the JEC/TagProp/FastTag
protocol: averaged over tags with at least one relevant test image; a tag never predicted has
precision 0), per-image P@5 and R@5 (over images with at least one true tag), and the mean
average precision of word queries (each tag with a relevant test image ranks all test images;
``map_random`` is what a random ranking would score). ``ms_per_image`` (im2vec, knn) is the
compute time per query image to produce its tags, reading excluded: im2vec embeds and scores
V tags, knn scans every training image.
"""
from __future__ import annotations

import io
import json
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from model import metrics
from pipeline import Im2vecError, sampling, storage

KEYS = ("seed", "evaluation_images", "knn_k")
K = 5                    # the reported cut-off: P/R/F1/N+ at 5
CURVE_K = 10             # the plots go from k = 1 to this
EXAMPLES = 8             # test images in the example grid
KNN_BLOCK = 4096         # training images compared with the whole test set at once
METHODS = ("im2vec", "popularity", "knn", "zero_shot")


def log(message: str) -> None:
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


# --- inputs ------------------------------------------------------------------------------------

def _dataset(uri: str) -> ds.Dataset:
    fs, path = storage.filesystem(uri)
    return ds.dataset(path, filesystem=fs, format="parquet")


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
    from pipeline import query

    tagged = _dataset(storage.join(root, "tagged")).to_table(
        columns=["photo_id", "tag_ids"], filter=pc.field("split") == "test")
    photo_id = tagged.column("photo_id").to_numpy()
    order = np.lexsort((photo_id, sampling.mix64(photo_id.astype(np.uint64) ^ np.uint64(seed))))
    # Walk the hash order until `limit` images have features: features rejects a few images.
    chosen, features, without, start = [], [], 0, 0
    while sum(map(len, chosen)) < limit and start < len(order):
        need = limit - sum(map(len, chosen))
        wanted = photo_id[order[start:start + 2 * need + 16]]
        start += len(wanted)
        found, feature = query.read_features(root, wanted)
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
    table = _dataset(storage.join(root, "tagged")).to_table(columns=["photo_id"], filter=pc.field("split") == "train")
    return np.unique(table.column("photo_id").to_numpy())


def held_out_tags(root: str) -> list[str] | None:
    """The tags the vocab stage held out (ROOT/zero_shot/), most frequent first; None if there is no list."""
    uri = storage.join(root, "zero_shot")
    if not storage.exists(uri):
        return None
    table = _dataset(uri).to_table(columns=["tag", "images"])
    return [t for _, t in sorted(zip((-table.column("images").to_numpy()).tolist(), table.column("tag").to_pylist()))]


# --- the nearest-neighbour baseline ------------------------------------------------------------

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


def nearest_training_images(root: str, query: np.ndarray, train_ids: np.ndarray, k: int
                            ) -> tuple[np.ndarray, np.ndarray, float]:
    """The k training images nearest to each query by cosine of CNN features, scanning features/.

    Args:
        query: float32[N, D] features of the query images; train_ids: sorted int64 ids that may answer.

    Returns:
        ``(cosine float32[N, k], photo_id int64[N, k], compute seconds)``, best first; seconds
        leave out reading and decoding features/.
    """
    from pipeline import query as queries

    query = queries.normalize_rows(query)
    best_scores = np.full((len(query), 0), -np.inf, np.float32)
    best_ids = np.zeros((len(query), 0), np.int64)
    seconds = 0.0
    scanner = _dataset(storage.join(root, "features")).scanner(columns=["photo_id", "feature"], batch_size=KNN_BLOCK)
    for batch in scanner.to_batches():
        ids = batch.column(0).to_numpy()
        at = np.minimum(np.searchsorted(train_ids, ids), max(len(train_ids) - 1, 0))
        keep = train_ids[at] == ids if len(train_ids) else np.zeros(len(ids), bool)
        if not keep.any():
            continue
        block = queries.decode_features(batch.column(1).filter(pa.array(keep)))
        started = time.perf_counter()
        block = queries.normalize_rows(block)
        best_scores, best_ids = merge_nearest(best_scores, best_ids, query @ block.T, ids[keep], k)
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

    def row_block(self, start: int, stop: int) -> np.ndarray:
        """float32[stop - start, V], dense."""
        lo, hi = np.searchsorted(self.rows, [start, stop])
        dense = np.zeros((stop - start, self.shape[1]), np.float32)
        dense[self.rows[lo:hi] - start, self.columns[lo:hi]] = self.values[lo:hi]
        return dense

    def column_block(self, tag_ids: np.ndarray) -> np.ndarray:
        """float32[N, Q], dense, for Q distinct tag ids."""
        column = np.full(self.shape[1], -1, np.int64)
        column[tag_ids] = np.arange(len(tag_ids))
        found = column[self.columns] >= 0
        dense = np.zeros((self.shape[0], len(tag_ids)), np.float32)
        dense[self.rows[found], column[self.columns[found]]] = self.values[found]
        return dense

    def top_k(self, k: int) -> np.ndarray:
        """int32[N, k], the k best-voted tags of each image (ties to the lower, more frequent, tag_id)."""
        rows = max(1, metrics.SCORE_BLOCK // max(self.shape[1], 1))
        return np.concatenate([metrics.top_k_of_scores(self.row_block(s, min(s + rows, self.shape[0])), k)
                               for s in range(0, self.shape[0], rows)] or [np.zeros((0, k), np.int32)])


def neighbour_tags(root: str, photo_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The vocabulary tags of some training images: (row int64[N, k] into the lists, offsets, tag_ids)."""
    unique = np.unique(photo_ids)
    table = _dataset(storage.join(root, "tagged")).to_table(
        columns=["photo_id", "tag_ids"], filter=pc.field("photo_id").isin(pa.array(unique)))
    table = table.take(pc.sort_indices(table, [("photo_id", "ascending")]))
    offsets, tag_ids = ragged(table.column("tag_ids"))
    rows = np.searchsorted(table.column("photo_id").to_numpy(), photo_ids)
    return rows, offsets, tag_ids


# --- scoring a method --------------------------------------------------------------------------

def mean_average_precision(image_scores, offsets: np.ndarray, tag_ids: np.ndarray, size: int) -> dict:
    """Retrieval: each tag with a relevant image queries the N images.

    Args:
        image_scores: callable, int[Q] tag ids -> float[N, Q] scores of every image for those tags.
        offsets, tag_ids: the true tags of the N images; size: number of tags (ids < size).

    Returns:
        ``{"map", "map_random", "queries"}``; map_random is the mean share of relevant images, about
        what a random ranking scores.
    """
    n = len(offsets) - 1
    relevant_counts = np.bincount(np.asarray(tag_ids, np.int64)[:int(offsets[-1])], minlength=size)
    queries = np.flatnonzero(relevant_counts)
    if len(queries) == 0 or n == 0:
        return {"map": None, "map_random": None, "queries": 0}
    block = max(1, metrics.SCORE_BLOCK // (4 * n))
    precisions = [metrics.average_precision(image_scores(queries[s:s + block]),
                                            metrics.relevance(offsets, tag_ids, queries[s:s + block]))
                  for s in range(0, len(queries), block)]
    return {"map": float(np.mean(np.concatenate(precisions))),
            "map_random": float(np.mean(relevant_counts[queries] / n)), "queries": int(len(queries))}


def score(top: np.ndarray, offsets: np.ndarray, tag_ids: np.ndarray, size: int, image_scores=None) -> dict:
    """Every metric of one method from its ranked tags (int[N, >= CURVE_K]) and, if it ranks images, image_scores.

    Returns:
        ``precision``, ``recall``, ``f1``, ``n_plus``, ``tags`` (per tag, at K), ``p_at_5``, ``r_at_5``
        (per image), ``images``, ``map``/``map_random``/``map_queries`` (None without image_scores), and
        ``curve``: per-image and per-tag precision and recall for k = 1..CURVE_K.
    """
    per_tag = metrics.per_tag_metrics(top[:, :K], offsets, tag_ids, size)
    p_at_k, r_at_k = metrics.precision_recall_at_k(top[:, :K], offsets, tag_ids)
    curve = {"k": [], "p_at_k": [], "r_at_k": [], "precision": [], "recall": []}
    for k in range(1, min(CURVE_K, top.shape[1]) + 1):
        p, r = metrics.precision_recall_at_k(top[:, :k], offsets, tag_ids)
        at_k = metrics.per_tag_metrics(top[:, :k], offsets, tag_ids, size)
        for key, value in (("k", k), ("p_at_k", p), ("r_at_k", r), ("precision", at_k["precision"]),
                           ("recall", at_k["recall"])):
            curve[key].append(value)
    retrieval = mean_average_precision(image_scores, offsets, tag_ids, size) if image_scores else \
        {"map": None, "map_random": None, "queries": 0}
    return {**per_tag, "p_at_5": p_at_k, "r_at_5": r_at_k,
            "images": int((np.diff(offsets) > 0).sum()), "map": retrieval["map"],
            "map_random": retrieval["map_random"], "map_queries": retrieval["queries"], "curve": curve}


def cosine_scores(embeddings: np.ndarray, vectors: np.ndarray):
    """image_scores for :func:`score`: ids -> cosine of each image's embedding (float[N, d]) with those
    rows of ``vectors`` (float[C, d]), float32[N, len(ids)]."""
    from pipeline.query import normalize_rows

    images, vectors = normalize_rows(embeddings), normalize_rows(vectors)
    return lambda ids: images @ vectors[ids].T


# --- the methods -------------------------------------------------------------------------------

def evaluate_zero_shot(root: str, model, embeddings: np.ndarray, photo_ids: np.ndarray, manifest: dict) -> dict:
    """The zero_shot object of the report (see the module docstring); ``{"run": False, "reason"}`` if not run."""
    from pipeline import query

    held = held_out_tags(root)
    fraction = float((manifest.get("parameters") or {}).get("zero_shot_fraction") or 0)
    if not held:
        if not fraction:
            reason = "zero_shot_fraction is 0: no tag was held out of training"
        elif held is None:
            reason = f"{storage.join(root, 'zero_shot')} is missing"
        else:
            reason = f"no tag was held out (zero_shot_fraction {fraction} of too few tags)"
        return {"run": False, "reason": reason + " (run `im2vec vocab --set zero_shot_fraction=0.1` and the "
                "stages after it)", "held_out": 0}
    vectors, with_vector = [], []
    for tag in held:
        try:
            vectors.append(query.word_vector(model, tag))
            with_vector.append(tag)
        except Im2vecError:
            pass
    counts = {"held_out": len(held), "with_vector": len(with_vector)}
    if not with_vector:
        return {"run": False, "reason": "no held-out tag has a word vector (wordvec/words.kv)", **counts}
    column = {tag: i for i, tag in enumerate(with_vector)}
    tags_of = query.photo_tags(root, photo_ids)
    truth = [sorted({column[t] for t in tags_of.get(int(p), []) if t in column}) for p in photo_ids]
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in truth])]).astype(np.int64)
    tag_ids = np.array([i for t in truth for i in t], np.int32)
    vectors = np.stack(vectors)
    top = metrics.top_k_tags(embeddings, vectors, CURVE_K)
    result = score(top, offsets, tag_ids, len(with_vector), cosine_scores(embeddings, vectors))
    relevant = np.bincount(tag_ids, minlength=len(with_vector))
    return {"run": True, **result, **counts, "relevant_in_test": int((relevant > 0).sum()),
            "examples": {tag: int(n) for tag, n in zip(with_vector, relevant) if n}}


def evaluate(root: str, config: dict) -> tuple[dict, dict]:
    """Run every method on the test set; returns ``(report, test)``: the evaluation.json object and the test set."""
    from model import data
    from pipeline import query

    params = parameters(config)
    vocab_manifest = storage.read_manifest(storage.join(root, "vocab"))
    if vocab_manifest is None:
        raise Im2vecError(f"{storage.join(root, 'vocab')} is missing or incomplete: run `im2vec vocab` first")
    model = query.load_model(root)
    size = len(model.tags)
    test = evaluation_set(root, limit=params["evaluation_images"], seed=params["seed"])
    n = len(test["photo_id"])
    offsets, tag_ids = test["offsets"], test["tag_ids"]
    log(f"{n:,} test images (of {test['split_images']:,} in the test split), {size:,} tags")

    started = time.perf_counter()
    embeddings = query.embed(model, test["feature"])
    top = metrics.top_k_tags(embeddings, model.tag_vectors, CURVE_K, model.tag_bias)
    im2vec_seconds = time.perf_counter() - started
    report = {"im2vec": {**score(top, offsets, tag_ids, size, cosine_scores(embeddings, model.tag_vectors)),
                         "ms_per_image": 1000 * im2vec_seconds / n}}
    predictions = {"im2vec": top}
    log(f"im2vec: F1 {report['im2vec']['f1']:.4f}")

    train_counts = data.train_tag_counts(root, size)
    popular = metrics.popularity_top_k(train_counts, n, CURVE_K)
    report["popularity"] = score(popular, offsets, tag_ids, size)

    train_ids = train_photo_ids(root)
    neighbour_scores, neighbour_ids, knn_seconds = nearest_training_images(root, test["feature"], train_ids,
                                                                           params["knn_k"])
    rows, neighbour_offsets, neighbour_tag_ids = neighbour_tags(root, neighbour_ids)
    started = time.perf_counter()
    votes = Votes(neighbour_scores, rows, neighbour_offsets, neighbour_tag_ids, size)
    knn_top = votes.top_k(CURVE_K)
    knn_seconds += time.perf_counter() - started
    report["knn"] = {**score(knn_top, offsets, tag_ids, size, votes.column_block),
                     "ms_per_image": 1000 * knn_seconds / n, "k": params["knn_k"]}
    log(f"knn: F1 {report['knn']['f1']:.4f}")

    report["zero_shot"] = evaluate_zero_shot(root, model, embeddings, test["photo_id"], vocab_manifest)
    train_manifest = storage.read_manifest(storage.join(root, "model")) or {}
    report["sizes"] = {"test_images": n, "test_split_images": test["split_images"],
                       "without_features": test["without_features"], "vocab_size": size,
                       "train_images": int(len(train_ids)), "k": K}
    trained_with = train_manifest.get("parameters") or {}
    report["model"] = {"epoch": train_manifest.get("epoch"), **{key: trained_with[key] for key in (
        "loss", "hidden_sizes", "tag_learning_rate", "tag_bias_strength", "batch_size", "learning_rate", "epochs")
        if key in trained_with}}
    test["predictions"] = {**predictions, "knn": knn_top}
    return report, test


# --- the report --------------------------------------------------------------------------------

def _number(value, digits: int = 3) -> str:
    return "–" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))


def markdown(report: dict) -> str:
    """evaluation.md: one table row per method, then what the numbers are over."""
    sizes = report["sizes"]
    lines = [f"## Evaluation at k={K} on {sizes['test_images']:,} test images", "",
             "| method | precision | recall | F1 | N+ | P@5 | R@5 | mAP | ms/image |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in METHODS:
        m = report[name]
        if not m.get("run", True):
            lines.append(f"| {name} | not run: {m['reason']} | | | | | | | |")
            continue
        lines.append(f"| {name} | {_number(m['precision'])} | {_number(m['recall'])} | {_number(m['f1'])} | "
                     f"{m['n_plus']} / {m['tags']} | {_number(m['p_at_5'])} | {_number(m['r_at_5'])} | "
                     f"{_number(m['map'])} | {_number(m.get('ms_per_image'), 2)} |")
    lines += ["", f"Precision, recall, F1 and N+ are per tag (averaged over the {report['im2vec']['tags']:,} "
              f"vocabulary tags with a relevant test image; N+ = tags recalled at least once); P@5/R@5 per image; "
              f"mAP over word queries (random ranking: im2vec {_number(report['im2vec']['map_random'])}). "
              f"knn: {report['knn']['k']} nearest of {sizes['train_images']:,} training images. "
              f"Model: {json.dumps(report['model'])}."]
    zero = report["zero_shot"]
    if zero.get("run"):
        lines.append(f"zero_shot: {zero['held_out']} tags held out of training, {zero['with_vector']} with a word "
                     f"vector, {zero['relevant_in_test']} on a test image ({zero['images']} images); ranked among "
                     f"the {zero['with_vector']} (random-ranking mAP {_number(zero['map_random'])}).")
    return "\n".join(lines) + "\n"


def plot_curves(report: dict) -> bytes:
    """PNG: per-image P@k and R@k, and per-tag precision and recall, for k = 1..CURVE_K, one line per method."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.2), layout="constrained")
    per_image, per_tag = figure.subplots(1, 2)
    for i, name in enumerate(METHODS):
        m = report[name]
        if not m.get("run", True):
            continue
        curve = m["curve"]
        for axes, p, r in ((per_image, "p_at_k", "r_at_k"), (per_tag, "precision", "recall")):
            axes.plot(curve["k"], curve[p], "o-", color=f"C{i}", label=f"{name} precision")
            axes.plot(curve["k"], curve[r], "s--", color=f"C{i}", label=f"{name} recall")
    per_image.set(title="per image: P@k, R@k", xlabel="k (tags predicted per image)")
    per_tag.set(title="per tag: mean precision, recall", xlabel="k (tags predicted per image)")
    for axes in (per_image, per_tag):
        axes.grid(alpha=0.3)
        axes.set_ylim(bottom=0)
    per_tag.legend(fontsize=7, ncol=2)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def read_images(root: str, config: dict, photo_ids: np.ndarray) -> list:
    """PIL images (or None) of some photos, through the features stage's ``images`` template."""
    from PIL import Image

    from pipeline import imagesource

    features = storage.read_manifest(storage.join(root, "features")) or {}
    text = (features.get("parameters") or {}).get("images") or config.get("images")
    if not text:
        return [None] * len(photo_ids)
    template = imagesource.parse_template(text)
    clean = _dataset(storage.join(root, "clean")).to_table(
        columns=list(dict.fromkeys(["photo_id", *template.columns])),
        filter=pc.field("photo_id").isin(pa.array(photo_ids)))
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


def plot_examples(root: str, config: dict, report: dict, test: dict, tags: list[str]) -> bytes:
    """PNG: the first EXAMPLES test images, with im2vec's and knn's top 5 (✓ = a true tag) and their original tags."""
    from matplotlib.figure import Figure

    from pipeline import query

    photo_ids = test["photo_id"][:EXAMPLES]
    images = read_images(root, config, photo_ids)
    original = query.photo_tags(root, photo_ids)
    columns = 4
    figure = Figure(figsize=(4 * columns, 5.2 * -(-len(photo_ids) // columns)), layout="constrained")
    axes_list = np.atleast_1d(figure.subplots(-(-len(photo_ids) // columns), columns)).ravel()
    for i, axes in enumerate(axes_list):
        axes.axis("off")
        if i >= len(photo_ids):
            continue
        if images[i] is not None:
            axes.imshow(images[i])
        true = set(test["tag_ids"][test["offsets"][i]:test["offsets"][i + 1]].tolist())
        predicted = {name: ", ".join(tags[t] + (" ✓" if t in true else "") for t in top[i][:K])
                     for name, top in test["predictions"].items()}
        own = ", ".join(original.get(int(photo_ids[i]), [])[:12])
        # parse_math=False: a tag is user text, and "$" would start matplotlib's math mode.
        axes.set_title(f"photo {photo_ids[i]}\nim2vec: {predicted['im2vec']}\nknn: {predicted['knn']}\n"
                       f"original: {own}", fontsize=8, wrap=True, loc="left", parse_math=False)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()


def run(config: dict, root: str) -> dict:
    """Evaluate the trained model under ``root`` and write ROOT/reports/ (see the module docstring).

    Returns:
        The manifest; its ``report`` field is evaluation.json's object and ``markdown`` the summary.
    """
    from pipeline import query

    started = time.time()
    root = storage.to_uri(root)
    reports = storage.join(root, "reports")
    storage.delete(storage.join(reports, storage.MANIFEST))
    report, test = evaluate(root, config)
    summary = markdown(report)
    storage.write_text(storage.join(reports, "evaluation.json"), json.dumps(report, indent=2) + "\n")
    storage.write_text(storage.join(reports, "evaluation.md"), summary)
    storage.write_bytes(storage.join(reports, "evaluation_pr.png"), plot_curves(report))
    storage.write_bytes(storage.join(reports, "evaluation_examples.png"),
                        plot_examples(root, config, report, test, query.read_vocab_tags(root)))
    sizes = report["sizes"]
    left_out = sizes["test_split_images"] - sizes["test_images"] - sizes["without_features"]
    manifest = storage.write_manifest(
        reports, "evaluate", rows_in=sizes["test_split_images"], rows_out=sizes["test_images"], rows_rejected=0,
        without_features=sizes["without_features"], left_out=left_out,
        metrics={name: {key: report[name].get(key) for key in ("precision", "recall", "f1", "n_plus", "map")}
                 for name in METHODS},
        parameters=parameters(config), inputs=[storage.join(root, name) for name in (
            "tagged", "vocab", "zero_shot", "features", "model", "wordvec", "clean")], started=started)
    return {**manifest, "report": report, "markdown": summary}


def main(argv: list[str] | None = None) -> int:
    from pipeline import cli

    return cli.main(["evaluate", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
