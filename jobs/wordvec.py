"""The wordvec stage: one vector per vocabulary tag, from word2vec on tag lists and/or a pretrained file.

Reads ROOT/vocab/ and ROOT/tagged/ (train split); writes ROOT/wordvec/:

    tags.kv        gensim KeyedVectors, key = tag, row i = tag_id i (float32[d])
    words.kv       every word of the pretrained file (zero-shot words), when one is used
    vectors/       Parquet: tag_id int32, tag string, vector list<float32>[d], source string
    _manifest.json last: rows_in = vocab size = rows_out (every tag gets a vector), rows_rejected = 0,
                   counts per source (pretrained, multiword, learned, random), dim, training stats

gensim runs on the driver; Spark is not used. Run with `im2vec wordvec --root ROOT`.
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
import time

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline import storage, wordvec
from pipeline.datasets import tagged, vocab, wordvec as wordvec_data
from pipeline.config import redacted

KEYS = ("wordvec_source", "pretrained_vectors", "pretrained_format", "vector_size", "wordvec_epochs",
        "wordvec_negative", "wordvec_min_count", "wordvec_sample", "wordvec_workers", "seed")


def run(spark, config: dict, root: str) -> dict:
    """Build ROOT/wordvec/ from ROOT/vocab/ and ROOT/tagged/; returns the manifest. ``spark`` is unused."""
    started = time.time()
    _log_progress()
    source = config["wordvec_source"]
    if source not in ("learned", "pretrained", "both"):
        raise wordvec.WordvecError(f"wordvec_source must be learned, pretrained or both, got {source!r}")
    vocab_uri, tagged_uri, out_uri = vocab.DATASET.uri(root), tagged.DATASET.uri(root), wordvec_data.DATASET.uri(root)
    tags = vocab.tags(root)
    tagged.DATASET.require(root)
    stats: dict = {}

    words = None
    if source in ("pretrained", "both"):
        loading = time.time()
        words = wordvec.load_pretrained(str(config["pretrained_vectors"]), str(config["pretrained_format"]))
        stats.update(pretrained_words=len(words), pretrained_load_seconds=round(time.time() - loading, 3))
    learned = None
    if source in ("learned", "both"):
        corpus = wordvec.TagLists(tagged_uri, tags, split="train")
        learned, train_stats = wordvec.train_word2vec(
            corpus, vector_size=words.vector_size if words is not None else int(config["vector_size"]),
            epochs=int(config["wordvec_epochs"]), negative=int(config["wordvec_negative"]),
            min_count=int(config["wordvec_min_count"]), sample=float(config["wordvec_sample"]),
            workers=int(config["wordvec_workers"]), seed=int(config["seed"]))
        stats.update(train_stats)
    vectors, sources, vector_stats = wordvec.tag_vectors(tags, words=words, learned=learned, seed=int(config["seed"]))

    staged = storage.staging_uri(out_uri)
    fs, staged_path = storage.filesystem(staged)
    # gensim saves to local files only: build locally, upload when the root is elsewhere.
    with tempfile.TemporaryDirectory() as tmp:
        local = staged_path if isinstance(fs, pafs.LocalFileSystem) else tmp
        os.makedirs(os.path.join(local, "vectors"), exist_ok=True)
        wordvec.keyed_vectors(tags, vectors).save(os.path.join(local, "tags.kv"))
        if words is not None:
            words.save(os.path.join(local, "words.kv"))
        table = wordvec.vectors_table(tags, vectors, sources)
        pq.write_table(table, os.path.join(local, "vectors", "part-00000.parquet"))
        if local == tmp:
            pafs.copy_files(tmp, staged_path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    storage.replace(staged, out_uri)
    return storage.write_manifest(
        out_uri, "wordvec", rows_in=len(tags), rows_out=len(tags), rows_rejected=0,
        parameters={key: value for key, value in redacted(config).items() if key in KEYS},
        inputs=[vocab_uri, tagged_uri], started=started, **vector_stats, **stats)


def _log_progress() -> None:
    # gensim reports each epoch's progress at INFO, which a person watching wants on stderr.
    if not logging.getLogger().handlers:
        logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    for name in ("gensim.models.word2vec", "pipeline.wordvec"):
        logging.getLogger(name).setLevel(logging.INFO)

