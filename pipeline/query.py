"""Tag images and search images with words, with a trained model: the library behind tag, search and serve.

Shapes: ``N`` images, ``D`` feature size (1280 for MobileNetV2), ``d`` tag-space size (50 for
GloVe 6B 50d), ``V`` vocabulary tags, ``W`` words in ROOT/wordvec/words.kv.

Reads (ROOT = the run root URI):
    ROOT/model/projection.keras, tag_vectors.npy, tag_bias.npy   the trainer's outputs (model/train.py)
    ROOT/vocab/                  tag_id -> tag
    ROOT/wordvec/words.kv        gensim KeyedVectors of every pretrained word (zero-shot words); optional
    ROOT/index/                  the index stage's image embeddings (jobs/index.py)
    ROOT/features/               CNN features (photo ids given to ``im2vec tag``)
    ROOT/clean/                  the photos' original tags, to show next to results

Scores. A vocabulary tag t scores an image f as ``g(f)·v_t + tag_bias_t``, exactly as the trainer
validates (model.train.validate, model.projection.tag_bias): the offset undoes the sampler's
weighting so tags rank by how likely each is on the image. With any_word, other words of
words.kv compete through a mixture probability (:func:`rank_tags`): scored by ``g(f)·v_w``, rare
keys such as "shoh" (twice the typical GloVe norm) outranked every tag on photos far from the
training images. Tagging with the CNN features or index/ at hand ranks by the fused probability
(:func:`tag_probabilities`, one formula: :func:`probability_columns`), and so does the evaluate
stage when it ranks test images for a tag (mAP). Searching ranks index/'s images for one query by
cosine ``g(f)/|g(f)| · q/|q|`` (:func:`search` says why not by the probability).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from model import baselines
from model.baselines import normalize_rows
from pipeline import Im2vecError, storage
from pipeline.datasets import clean, features as features_data, index as index_data, model as model_data, tagged, \
    vocab, wordvec

# Words of words.kv that may tag an image with any_word=True: letters, inner - or ' allowed.
# GloVe's keys include punctuation and numbers ("," ".", "1998"), which are not tags.
WORD_PATTERN = re.compile(r"^[^\W\d_]+(?:[-'][^\W\d_]+)*$")
# ... and only the most frequent ones (pretrained files list words by frequency): the rarer are mostly
# names and misspellings with noisy vectors.
ANY_WORD_LIMIT = 30_000
# any_word: the share of the ranking's probability given to words outside the vocabulary, and how
# sharply they are told apart (softmax temperature over cosines); see rank_tags.
ANY_WORD_SHARE = 0.5
WORD_TEMPERATURE = 0.05
CONSE_CLASSES = 10   # classes of the CNN's own classifier whose names make an image's ConSE vector
# Tagging an image whose CNN features are at hand: the share of the tag probability that comes from
# the ConSE prior (tag_probabilities), and the prior's softmax temperature over cosines. Chosen on the
# demo's validation split (per-tag F1, 3 seeds, capped per user; the research notes of issue 13).
CONSE_WEIGHT = 0.4
CONSE_TEMPERATURE = 0.1
# ... and the share from the votes of the nearest training images in the learned space (TagProp-style),
# when the run has an index made by this model; chosen with CONSE_WEIGHT (validation, 3 seeds).
NEIGHBOUR_WEIGHT = 0.1
NEIGHBOURS = 10
NEIGHBOUR_BLOCK = 4096   # training images compared with a block of images at once


@dataclass
class Model:
    """Everything needed to score images and words.

    Attributes:
        projection: keras.Model, g: float32[N, D] features -> float32[N, d].
        tag_vectors: float32[V, d], row = tag_id (the trained tag table).
        tag_bias: float32[V], added to g(f)·v_t when ranking tags for an image.
        tags: tag_id -> tag.
        words: ROOT/wordvec/words.kv (vectors for any word), or None when the run has none.
        model_sha256: sha256 of projection.keras, to tell whether an index was made with this model.
        cnn: the CNN the features were made with (the config value ``cnn`` of features/), whose own
            classifier gives the ConSE vectors (:func:`conse_vectors`).
    """
    projection: object
    tag_vectors: np.ndarray
    tag_bias: np.ndarray
    tags: list[str]
    words: object | None = None
    model_sha256: str = ""
    cnn: str = "mobilenet_v2"
    _tag_ids: dict = field(default_factory=dict, repr=False)
    _classes: tuple | None = field(default=None, repr=False)
    _word_candidates: np.ndarray | None = field(default=None, repr=False)

    def tag_id(self, tag: str) -> int | None:
        """The tag_id of a (normalized) tag, or None."""
        if not self._tag_ids:
            self._tag_ids = {t: i for i, t in enumerate(self.tags)}
        return self._tag_ids.get(tag)

    def word_candidates(self) -> np.ndarray:
        """int64[W'] rows of words.kv that tag images with any_word=True.

        The ANY_WORD_LIMIT most frequent keys that look like words (WORD_PATTERN), less the
        vocabulary's tags (as ``tag`` or ``multi_word``), which are scored through the tag table.
        """
        if self._word_candidates is None:
            vocabulary = set(self.tags) | {t.replace(" ", "_") for t in self.tags}
            keys = self.words.index_to_key[:ANY_WORD_LIMIT]
            self._word_candidates = np.array([i for i, key in enumerate(keys)
                                              if key not in vocabulary and WORD_PATTERN.match(key)], np.int64)
        return self._word_candidates

    def classes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The CNN's classifier and its classes' word vectors: ``(weight float32[C, D], bias float32[C],
        class_vectors float32[C, d])``, or None when the CNN has no classifier or the run no words.kv.

        A class name's vector is the mean of its words' vectors in words.kv (zero when it has none).
        """
        if self._classes is None:
            from pipeline import cnn

            found = cnn.classifier(self.cnn) if self.words is not None else None
            self._classes = (None,) if found is None else (found[0], found[1], self._name_vectors(found[2]))
        return None if self._classes[0] is None else self._classes

    def _name_vectors(self, names: list[str]) -> np.ndarray:
        vectors = np.zeros((len(names), self.words.vector_size), np.float32)
        for i, name in enumerate(names):
            found = [self.words[w] for w in re.split(r"[\s\-']+", name.lower()) if w in self.words.key_to_index]
            if found:
                vectors[i] = np.mean(found, axis=0)
        return vectors


@dataclass
class Neighbours:
    """The training images that vote tags (:func:`tag_probabilities`): their unit g(f) float32[M, d] from
    index/, and their vocabulary tags (``offsets`` int64[M + 1], ``tag_ids`` int32[...], model.metrics' layout)."""
    embeddings: np.ndarray
    offsets: np.ndarray
    tag_ids: np.ndarray


@dataclass
class Index:
    """The index stage's output: photo_id int64[N] and float32[N, d] L2-normalized g(f), same order."""
    photo_ids: np.ndarray
    embeddings: np.ndarray
    model_sha256: str = ""   # of the projection.keras it was made with ("" if unknown)


# --- loading ---------------------------------------------------------------------------------------

# The features/ readers, under the names model/evaluate.py still calls them by.


def load_model(root: str) -> Model:
    """The trained model under ``root``: g, the tag table and offsets, the vocabulary and words.kv.

    Works while training runs (the trainer replaces its outputs atomically after every epoch).

    Raises:
        Im2vecError: there is no trained model yet, or it does not match the vocabulary.
    """
    root = storage.to_uri(root)
    data = model_data.read_projection_bytes(root)
    tag_vectors, tag_bias = model_data.read_array(root, "tag_vectors"), model_data.read_array(root, "tag_bias")
    tags = vocab.tags(root)
    if not len(tags) == len(tag_vectors) == len(tag_bias):
        raise Im2vecError(f"{model_data.DATASET.uri(root)} has {len(tag_vectors):,} tag vectors for a vocabulary of "
                          f"{len(tags):,} tags: train again after `im2vec vocab`")
    words = wordvec.load_words(root)
    if words is not None and words.vector_size != tag_vectors.shape[1]:
        raise Im2vecError(f"{wordvec.DATASET.uri(root)}/words.kv has vectors of size {words.vector_size}, "
                          f"the model {tag_vectors.shape[1]}")
    return Model(projection=model_data.load_projection(data), tag_vectors=tag_vectors, tag_bias=tag_bias, tags=tags,
                 words=words, model_sha256=hashlib.sha256(data).hexdigest(),
                 cnn=str(features_data.made_with(root).get("cnn") or "mobilenet_v2"))


def load_index(root: str) -> Index:
    """ROOT/index/ (jobs/index.py) in memory: all N x d as float32 (10M images x 50 dims = 2 GB).

    Raises:
        Im2vecError: there is no complete index (run ``im2vec index``), or it fails the data guard.
    """
    photo_ids, embeddings, manifest = index_data.read(storage.to_uri(root))
    return Index(photo_ids=photo_ids, embeddings=embeddings, model_sha256=str(manifest.get("model_sha256", "")))


def load_neighbours(root: str, model: Model, index: Index | None = None) -> Neighbours | None:
    """The train split's images of index/ with their tags (tagged/); None when there is no index or
    no tagged/, or the index was made by another model (the votes must be in this model's embedding)."""
    root = storage.to_uri(root)
    if not storage.exists(tagged.DATASET.uri(root)):
        return None
    if index is None:
        if index_data.DATASET.manifest(root) is None:
            return None
        index = load_index(root)
    if index.model_sha256 and index.model_sha256 != model.model_sha256:
        return None
    train = tagged.read_split(root, "train")
    position = pc.index_in(train.column("photo_id"), value_set=pa.array(index.photo_ids))
    lists = train.column("tag_ids").filter(pc.is_valid(position)).combine_chunks()
    offsets = lists.offsets.to_numpy().astype(np.int64)
    return Neighbours(embeddings=index.embeddings[pc.drop_null(position).to_numpy().astype(np.int64)],
                      offsets=offsets - offsets[0],
                      tag_ids=lists.values.to_numpy()[offsets[0]:offsets[-1]].astype(np.int32))


def neighbour_votes(neighbours: Neighbours, embeddings: np.ndarray, vocab_size: int) -> baselines.Votes:
    """The NEIGHBOURS training images nearest each image by cosine of g(f) vote their tags, each vote
    weighted by its (non-negative) cosine (model.baselines' knn, in the learned space).

    Args:
        embeddings: float32[N, d] g(f) of the images (raw or unit: cosines either way).

    Returns:
        N x V sparse votes (model.baselines.Votes), normalized: each image's sum to 1 (none at all when
        no neighbour has a tag). Memory: NEIGHBOUR_BLOCK training images x a block of images at a time.
    """
    from model import metrics

    count = len(neighbours.embeddings)
    rows = max(1, metrics.SCORE_BLOCK // NEIGHBOUR_BLOCK)
    k = min(NEIGHBOURS, count)
    scores, nearest = [np.zeros((0, k), np.float32)], [np.zeros((0, k), np.int64)]
    for start in range(0, len(embeddings), rows):
        training = ((np.arange(at, min(at + NEIGHBOUR_BLOCK, count)), neighbours.embeddings[at:at + NEIGHBOUR_BLOCK])
                    for at in range(0, count, NEIGHBOUR_BLOCK))
        block_scores, block_rows, _ = baselines.nearest_images(embeddings[start:start + rows], training, NEIGHBOURS)
        scores.append(block_scores)
        nearest.append(block_rows)
    return baselines.Votes(np.concatenate(scores), np.concatenate(nearest), neighbours.offsets, neighbours.tag_ids,
                           vocab_size).normalized()


# --- scoring ---------------------------------------------------------------------------------------

def embed(model: Model, features: np.ndarray) -> np.ndarray:
    """g(f): float16/float32[N, D] features -> float32[N, d], raw (not normalized) (pipeline.datasets.model.embed)."""
    return model_data.embed(model.projection, features)


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax of float[N, C]: float64[N, C], rows summing to 1."""
    scores = np.asarray(scores, dtype=np.float64)
    exp = np.exp(scores - scores.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def conse_vectors(model: Model, features: np.ndarray) -> np.ndarray | None:
    """ConSE (Norouzi et al. 2014): each image's CONSE_CLASSES likeliest classes by the CNN's own
    classifier (ImageNet's, for MobileNetV2), their names' word vectors averaged by probability.

    Args:
        features: float32[N, D], the images' CNN features (as ROOT/features/ holds them).

    Returns:
        float32[N, d], unit rows; None when the CNN has no classifier for these features
        (:meth:`Model.classes`) or the run has no word vectors.
    """
    classes = model.classes()
    features = np.asarray(features, dtype=np.float32)
    if classes is None or features.ndim != 2 or features.shape[1] != classes[0].shape[1]:
        return None
    weight, bias, class_vectors = classes
    probs = softmax(features @ weight.T + bias)
    best = np.argsort(-probs, axis=1)[:, :CONSE_CLASSES]
    shares = np.take_along_axis(probs, best, 1)
    return normalize_rows(np.einsum("nk,nkd->nd", shares, class_vectors[best]))


@dataclass
class ImageTerms:
    """What :func:`tag_probabilities` needs of N images besides the model: with it the probability of
    any Q tags on every image costs N x Q x d (:func:`probability_columns`), because the two softmax
    denominators over the whole vocabulary are computed once per image, here.

    Attributes:
        embeddings: float32[N, d] raw g(f).
        log_norm: float64[N], log sum over the V tags of exp(g(f)·v_t + tag_bias_t).
        conse: float32[N, d] unit ConSE vectors (:func:`conse_vectors`), or None (no prior).
        conse_log_norm: float64[N], log sum over the V tags of exp(cosine(conse, v_t) / CONSE_TEMPERATURE),
            or None.
        votes: the neighbours' votes (:func:`neighbour_votes`, rows summing to 1), or None.
    """
    embeddings: np.ndarray
    log_norm: np.ndarray
    conse: np.ndarray | None = None
    conse_log_norm: np.ndarray | None = None
    votes: baselines.Votes | None = None

    def images(self, start: int, stop: int) -> ImageTerms:
        """The terms of images start..stop - 1 alone."""
        stop = min(stop, len(self.embeddings))
        part = slice(start, stop)
        return ImageTerms(self.embeddings[part], self.log_norm[part],
                          None if self.conse is None else self.conse[part],
                          None if self.conse_log_norm is None else self.conse_log_norm[part],
                          None if self.votes is None else self.votes.images(start, stop))


def log_sum_exp(scores: np.ndarray) -> np.ndarray:
    """float64[N]: log of each row's sum of exp(scores) for float[N, C], without overflow."""
    scores = np.asarray(scores, dtype=np.float64)
    top = scores.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(scores - top).sum(axis=1, keepdims=True)))[:, 0]


def image_terms(model: Model, embeddings: np.ndarray, features: np.ndarray | None = None,
                neighbours: Neighbours | None = None) -> ImageTerms:
    """The per-image terms of :func:`tag_probabilities` (:class:`ImageTerms`) for N images.

    Args:
        embeddings: float32[N, d] raw g(f) (:func:`embed`).
        features: float32[N, D] the images' CNN features, for the ConSE prior; None: no prior.
        neighbours: training images that vote tags (:func:`load_neighbours`), or None.

    Computed a block of images at a time: a block x max(V, NEIGHBOUR_BLOCK) scores at once (the CNN's
    classifier has fewer classes than NEIGHBOUR_BLOCK), so memory stays bounded for any N and V.
    """
    from model import metrics

    embeddings = np.asarray(embeddings, dtype=np.float32)
    tag_units = normalize_rows(model.tag_vectors)
    rows = max(1, metrics.SCORE_BLOCK // max(len(model.tags), NEIGHBOUR_BLOCK))
    log_norm, conse, conse_log_norm = [np.zeros(0)], [], []
    for start in range(0, len(embeddings), rows):
        log_norm.append(log_sum_exp(embeddings[start:start + rows] @ model.tag_vectors.T + model.tag_bias))
        block_conse = None if features is None else conse_vectors(model, features[start:start + rows])
        if block_conse is not None:
            conse.append(block_conse)
            conse_log_norm.append(log_sum_exp(block_conse @ tag_units.T / CONSE_TEMPERATURE))
    votes = neighbour_votes(neighbours, embeddings, len(model.tags)) \
        if neighbours is not None and len(neighbours.embeddings) else None
    return ImageTerms(embeddings, np.concatenate(log_norm),
                      np.concatenate(conse) if conse else None, np.concatenate(conse_log_norm) if conse else None,
                      votes)


def probability_columns(model: Model, terms: ImageTerms, tag_ids: np.ndarray) -> np.ndarray:
    """How likely some vocabulary tags are on each image: float64[N, Q], column q for tag ``tag_ids[q]``.

    The one formula of the fused tagger (:func:`tag_probabilities` is it for all V tags): the softmax
    over the vocabulary of ``g(f)·v_t + tag_bias_t`` (the trainer's ranking); with a ConSE prior
    (``terms.conse``), (1 - CONSE_WEIGHT) of that plus CONSE_WEIGHT x the softmax of cosine(ConSE
    vector, v_t) / CONSE_TEMPERATURE; with neighbours' votes, (1 - NEIGHBOUR_WEIGHT) of the result plus
    NEIGHBOUR_WEIGHT x the votes. Each softmax is ``exp(score - log_norm)`` with the image's
    denominator from ``terms``, so a column costs N x d, not N x V.

    Args:
        terms: :func:`image_terms` of the N images; tag_ids: int[Q] distinct vocabulary tag ids.
    """
    tag_ids = np.asarray(tag_ids, dtype=np.int64)
    vectors = model.tag_vectors[tag_ids]
    probability = np.exp(terms.embeddings @ vectors.T + model.tag_bias[tag_ids] - terms.log_norm[:, None])
    if terms.conse is not None:
        prior = np.exp(terms.conse @ normalize_rows(vectors).T / CONSE_TEMPERATURE - terms.conse_log_norm[:, None])
        probability = (1 - CONSE_WEIGHT) * probability + CONSE_WEIGHT * prior
    if terms.votes is not None:
        # An image whose nearest training images all point away from it (cosine <= 0) gets no votes:
        # it keeps the rest of the mixture whole, so its probabilities still sum to 1.
        weight = NEIGHBOUR_WEIGHT * terms.votes.voted()[:, None]
        probability = (1 - weight) * probability + weight * terms.votes.column_block(tag_ids)
    return probability


def tag_probabilities(model: Model, embeddings: np.ndarray, features: np.ndarray | None = None,
                      neighbours: Neighbours | None = None) -> np.ndarray:
    """How likely each vocabulary tag is on each image: float64[N, V], rows summing to 1.

    :func:`probability_columns` of every tag: the softmax over the vocabulary of ``g(f)·v_t +
    tag_bias_t`` (the trainer's ranking), mixed with a ConSE prior when the images' CNN features are
    given (and the CNN has a classifier, :func:`conse_vectors`). The prior knows what the CNN's ImageNet
    classifier sees in the image (1.2M photos), where g learned from the run's tagged images only. With
    ``neighbours`` (:func:`load_neighbours`), NEIGHBOUR_WEIGHT of the result is the training images'
    votes (:func:`neighbour_votes`). N x V at once: for many images, :func:`top_tags` goes by blocks.
    """
    terms = image_terms(model, embeddings, features, neighbours)
    return probability_columns(model, terms, np.arange(len(model.tags)))


def top_tags(model: Model, terms: ImageTerms, k: int, tag_ids: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """The k likeliest tags of each image by :func:`tag_probabilities`, best first.

    Args:
        terms: :func:`image_terms` of the N images.
        tag_ids: int[Q] distinct vocabulary tag ids to rank among (another corpus's shared tags);
            None: every tag.

    Returns:
        ``(columns int32[N, min(k, Q)], probability float64[N, min(k, Q)])``: column c is ``tag_ids[c]``
        (the tag id itself without ``tag_ids``). Computed a block of images at a time (memory stays
        bounded for any V).
    """
    from model import metrics

    n = len(terms.embeddings)
    tag_ids = np.arange(len(model.tags)) if tag_ids is None else np.asarray(tag_ids, np.int64)
    rows = max(1, metrics.SCORE_BLOCK // max(len(model.tags), 1))
    top = np.zeros((n, min(k, len(tag_ids))), np.int32)
    scores = np.zeros(top.shape, np.float64)
    for start in range(0, n, rows):
        probability = probability_columns(model, terms.images(start, start + rows), tag_ids)
        top[start:start + rows] = metrics.top_k_of_scores(probability, k)
        scores[start:start + rows] = np.take_along_axis(probability, top[start:start + rows], 1)
    return top, scores


def rank_tags(model: Model, embeddings: np.ndarray, k: int = 5, any_word: bool = False,
              features: np.ndarray | None = None, neighbours: Neighbours | None = None
              ) -> list[list[tuple[str, float]]]:
    """The k best tags for each image, best first.

    Args:
        model: from :func:`load_model`.
        embeddings: float32[N, d], raw g(f) (:func:`embed`; not normalized: the scores are the trainer's).
        k: tags per image.
        any_word: rank the ANY_WORD_LIMIT most frequent words of words.kv too (zero-shot), not only the vocabulary.
        features: float32[N, D] the images' CNN features, for the ConSE prior and any_word's ConSE vectors
            (without them, g(f) stands in for the ConSE vector).
        neighbours: training images that vote tags (:func:`load_neighbours`), or None.

    Returns:
        N lists of k ``(tag, score)``. A vocabulary tag scores ``g(f)·v_t + tag_bias_t``, or with
        features or neighbours its probability from :func:`tag_probabilities` (the same ranking mixed
        with a ConSE prior and the neighbours' votes). With any_word
        every candidate scores a probability from a mixture: (1 - ANY_WORD_SHARE) x the softmax over
        the vocabulary of those tag scores, plus ANY_WORD_SHARE x a softmax over the other words of
        their cosine with the image's ConSE vector (:func:`conse_vectors`) / WORD_TEMPERATURE. g(f)
        never saw those words, and off the training images (a photo among clip art) its raw dot
        products with 30k-400k word vectors are ruled by vector norms ("shoh"'s is twice the typical)
        and chance; the ImageNet classifier has seen photos of dogs and coffee cups.
    """
    from model import metrics

    embeddings = np.asarray(embeddings, dtype=np.float32)
    if any_word:
        return _rank_any_word(model, embeddings, k, features, neighbours)
    if features is not None or neighbours is not None:
        top, scores = top_tags(model, image_terms(model, embeddings, features, neighbours), k)
        names = np.asarray(model.tags, dtype=object)[top]
        return [[(str(t), float(s)) for t, s in zip(row_names, row_scores)]
                for row_names, row_scores in zip(names, scores)]
    top = metrics.top_k_tags(embeddings, model.tag_vectors, k, model.tag_bias)
    scores = np.einsum("nd,nkd->nk", embeddings, model.tag_vectors[top]) + model.tag_bias[top]
    names = np.asarray(model.tags, dtype=object)[top]
    return [[(str(t), float(s)) for t, s in zip(row_names, row_scores)] for row_names, row_scores in zip(names, scores)]


def _rank_any_word(model: Model, embeddings: np.ndarray, k: int, features: np.ndarray | None,
                   neighbours: Neighbours | None = None) -> list[list[tuple[str, float]]]:
    """rank_tags with any_word: vocabulary tags and other words by one mixture probability (see there)."""
    from model import metrics

    if model.words is None:
        raise Im2vecError("this run has no word vectors (ROOT/wordvec/words.kv): --any-word needs a "
                          "pretrained word-vector file (wordvec_source: pretrained or both)")
    candidates = model.word_candidates()
    word_vectors = normalize_rows(model.words.vectors[candidates])
    keys = np.asarray(model.words.index_to_key, dtype=object)
    every_name = np.concatenate([np.asarray(model.tags, dtype=object), keys[candidates]])
    # Candidates scored at once per block of images: [rows, V + W'] float64 stays around 128 MiB.
    rows = max(1, metrics.SCORE_BLOCK // max(len(every_name), 1))
    ranked = []
    for start in range(0, len(embeddings), rows):
        block = embeddings[start:start + rows]
        block_features = features[start:start + rows] if features is not None else None
        queries = conse_vectors(model, block_features) if features is not None else None
        queries = normalize_rows(block) if queries is None else queries
        probability = np.concatenate([
            (1 - ANY_WORD_SHARE) * tag_probabilities(model, block, block_features, neighbours),
            ANY_WORD_SHARE * softmax(queries @ word_vectors.T / WORD_TEMPERATURE)], axis=1)
        top = metrics.top_k_of_scores(probability, k)
        ranked += [[(str(t), float(s)) for t, s in zip(row_names, row_scores)]
                   for row_names, row_scores in zip(every_name[top], np.take_along_axis(probability, top, 1))]
    return ranked


def normalize_text(text: str) -> str:
    """A query as tags are normalized (pipeline.tags.normalize): NFKC, lower case, single spaces."""
    from pipeline import tags

    return tags.normalize(pa.array([text], pa.string()))[0].as_py() or ""


def word_vector(model: Model, text: str) -> np.ndarray:
    """The query vector for a word or words: float32[d].

    The rule: the whole (normalized) text if it is a vocabulary tag (its trained row of the tag
    table), else if words.kv has it as one key (``new york`` as ``new_york`` too); otherwise the
    mean of its space-separated words' vectors, each looked up the same way (tag table first),
    the rule the wordvec stage uses for multi-word tags.

    Raises:
        Im2vecError: the text is empty, or names the words that have no vector.
    """
    text = normalize_text(text)
    if not text:
        raise Im2vecError("the query is empty: give a word or several")

    def lookup(phrase: str) -> np.ndarray | None:
        tag_id = model.tag_id(phrase)
        if tag_id is not None:
            return model.tag_vectors[tag_id]
        if model.words is not None:
            for key in (phrase, phrase.replace(" ", "_")):
                if key in model.words.key_to_index:
                    return np.asarray(model.words[key], dtype=np.float32)
        return None

    whole = lookup(text)
    if whole is not None:
        return np.asarray(whole, dtype=np.float32)
    words = [w for w in re.split(r"[\s,]+", text) if w]
    vectors = [lookup(w) for w in words]
    missing = [w for w, v in zip(words, vectors) if v is None]
    if missing:
        known = "the vocabulary" + (" or the word vectors" if model.words is not None else
                                    " (this run has no word vectors: ROOT/wordvec/words.kv)")
        raise Im2vecError(f"no vector for {', '.join(repr(w) for w in missing)}: not in {known}")
    return np.mean(np.stack(vectors), axis=0).astype(np.float32)


def search(model: Model, index: Index, text: str, k: int = 10) -> list[tuple[int, float]]:
    """The k images whose embeddings are closest to the query: ``(photo_id, cosine)``, best first.

    Args:
        model, index: from :func:`load_model` and :func:`load_index`.
        text: a word or words (:func:`word_vector`); k: how many images.

    Why cosine and not the tagger's p(tag | image), which the evaluate stage ranks test images by
    (it scores higher there: on the demo's test split, seed 13, mAP 0.164 vs 0.103): a column of
    :func:`probability_columns` costs N x d per query, like this scan, but only given each image's
    :class:`ImageTerms`, and index/ holds none of them (only g(f)/|g(f)|, as float16). Making them is
    the cost: the softmax denominators mean scoring every image against all V tags (N x V x d, as
    tagging the whole corpus), the ConSE vector a pass of the CNN's classifier over every feature
    row, and the neighbour votes a scan of the M training images for every image (N x M x d; 10M x
    8M x 50 ~ 4e15 multiply-adds without an approximate neighbour index). And a query is any words:
    one outside the vocabulary (or a mean of several words) has no tag_bias, no votes and no place
    in the softmax over the vocabulary, so it would be ranked by cosine anyway.
    """
    query = normalize_rows(word_vector(model, text)[None, :])[0]
    scores = index.embeddings @ query
    k = min(k, len(scores))
    best = np.argpartition(-scores, k - 1)[:k] if 0 < k < len(scores) else np.arange(k)
    best = best[np.argsort(-scores[best], kind="stable")]
    return [(int(index.photo_ids[i]), float(scores[i])) for i in best]


def photo_tags(root: str, photo_ids) -> dict[int, list[str]]:
    """The photos' own tags, from ROOT/clean/ (the user's tags, normalized): {photo_id: [tag, ...]}.

    Scans clean/ with a filter: fine for a page of results, not for millions of ids.
    """
    root = storage.to_uri(root)
    photo_ids = list(photo_ids)
    if not photo_ids or not storage.exists(clean.DATASET.uri(root)):
        return {}
    table = clean.photo_rows(root, photo_ids, ["photo_id", "tags"], finished=False)
    return {int(p): list(t or []) for p, t in zip(table.column("photo_id").to_pylist(), table.column("tags").to_pylist())}

