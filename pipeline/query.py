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
weighting so tags rank by how likely each is on the image. Any other word w scores
``g(f)·v_w`` with its pretrained vector from words.kv. The two are comparable because (1) the
tag table starts in (and, frozen, stays in) the words.kv space, so g maps images into the
space of every word; and (2) tag_bias is centred on 0 over the vocabulary, so a word outside it
gets the offset of a typical tag. Searching ranks images for one query by cosine
``g(f)/|g(f)| · q/|q|``; ranking images for one word needs no offset.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from pipeline import Im2vecError, storage
from pipeline.datasets import clean, features as features_data, index as index_data, model as model_data, vocab, \
    wordvec

# Words of words.kv that may tag an image with any_word=True: letters, inner - or ' allowed.
# GloVe's keys include punctuation and numbers ("," ".", "1998"), which are not tags.
WORD_PATTERN = re.compile(r"^[^\W\d_]+(?:[-'][^\W\d_]+)*$")
# ... and only the most frequent ones (pretrained files list words by frequency): the rarer are mostly
# names and misspellings whose vectors are noisy and, on the openclipart demo, outscore every real word.
ANY_WORD_LIMIT = 100_000


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
    """
    projection: object
    tag_vectors: np.ndarray
    tag_bias: np.ndarray
    tags: list[str]
    words: object | None = None
    model_sha256: str = ""
    _tag_ids: dict = field(default_factory=dict, repr=False)
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


@dataclass
class Index:
    """The index stage's output: photo_id int64[N] and float32[N, d] L2-normalized g(f), same order."""
    photo_ids: np.ndarray
    embeddings: np.ndarray
    model_sha256: str = ""   # of the projection.keras it was made with ("" if unknown)


# --- loading ---------------------------------------------------------------------------------------

# The features/ readers, under the names model/evaluate.py still calls them by.
read_features = features_data.read_rows
decode_features = features_data.decode


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
                 words=words, model_sha256=hashlib.sha256(data).hexdigest())


def load_index(root: str) -> Index:
    """ROOT/index/ (jobs/index.py) in memory: all N x d as float32 (10M images x 50 dims = 2 GB).

    Raises:
        Im2vecError: there is no complete index (run ``im2vec index``), or it fails the data guard.
    """
    photo_ids, embeddings, manifest = index_data.read(storage.to_uri(root))
    return Index(photo_ids=photo_ids, embeddings=embeddings, model_sha256=str(manifest.get("model_sha256", "")))


# --- scoring ---------------------------------------------------------------------------------------

def embed(model: Model, features: np.ndarray) -> np.ndarray:
    """g(f): float16/float32[N, D] features -> float32[N, d], raw (not normalized) (pipeline.datasets.model.embed)."""
    return model_data.embed(model.projection, features)


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """float[N, d] -> float32[N, d] rows of unit L2 norm (a zero row stays zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def rank_tags(model: Model, embeddings: np.ndarray, k: int = 5, any_word: bool = False
              ) -> list[list[tuple[str, float]]]:
    """The k best tags for each image, best first.

    Args:
        model: from :func:`load_model`.
        embeddings: float32[N, d], raw g(f) (:func:`embed`; not normalized: the scores are the trainer's).
        k: tags per image.
        any_word: rank every word of words.kv too (zero-shot), not only the vocabulary.

    Returns:
        N lists of k ``(tag, score)``. A vocabulary tag scores ``g(f)·v_t + tag_bias_t``; with
        any_word another word w scores ``g(f)·v_w`` (see the module docstring for why the two compare).
    """
    from model import metrics

    embeddings = np.asarray(embeddings, dtype=np.float32)
    top = metrics.top_k_tags(embeddings, model.tag_vectors, k, model.tag_bias)
    scores = np.einsum("nd,nkd->nk", embeddings, model.tag_vectors[top]) + model.tag_bias[top]
    names = np.asarray(model.tags, dtype=object)[top]
    if any_word:
        if model.words is None:
            raise Im2vecError("this run has no word vectors (ROOT/wordvec/words.kv): --any-word needs a "
                              "pretrained word-vector file (wordvec_source: pretrained or both)")
        candidates = model.word_candidates()
        word_vectors = np.asarray(model.words.vectors[candidates], dtype=np.float32)
        word_top = metrics.top_k_tags(embeddings, word_vectors, k)
        word_scores = np.einsum("nd,nkd->nk", embeddings, word_vectors[word_top])
        keys = np.asarray(model.words.index_to_key, dtype=object)
        scores = np.concatenate([scores, word_scores], axis=1)
        names = np.concatenate([names, keys[candidates[word_top]]], axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        scores, names = np.take_along_axis(scores, order, 1), np.take_along_axis(names, order, 1)
    return [[(str(t), float(s)) for t, s in zip(row_names, row_scores)] for row_names, row_scores in zip(names, scores)]


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

