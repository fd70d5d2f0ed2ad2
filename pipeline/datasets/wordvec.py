"""ROOT/wordvec/: one vector per vocabulary tag (written by jobs/wordvec.py).

    tags.kv        gensim KeyedVectors, key = tag, row i = tag_id i (float32[d])
    words.kv       every word of the pretrained file (zero-shot words), when one is used (+ words.kv.*.npy)
    vectors/       Parquet: tag_id int32, tag string, vector list<float32>[d], source string
"""
from __future__ import annotations

import os
import tempfile

import numpy as np
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from pipeline import Im2vecError, storage
from pipeline.datasets.base import Dataset

DATASET = Dataset("wordvec", "wordvec", "wordvec", "im2vec wordvec")


def read_tag_vectors(root: str, vocab_size: int) -> np.ndarray:
    """The tag vectors (ROOT/wordvec/vectors/) as float32[V, d], row = tag_id.

    Raises:
        Im2vecError: the data guard fails, or the vectors are not one per tag of a ``vocab_size`` vocabulary.
    """
    DATASET.require(root)
    fs, path = storage.filesystem(storage.join(DATASET.uri(root), "vectors"))
    table = ds.dataset(path, filesystem=fs, format="parquet").to_table(columns=["tag_id", "vector"]).sort_by("tag_id")
    if not np.array_equal(table.column("tag_id").to_numpy(), np.arange(vocab_size)):
        raise Im2vecError(f"{DATASET.uri(root)} has {table.num_rows:,} tag vectors for a vocabulary of "
                          f"{vocab_size:,} tags: run `im2vec wordvec` again after `im2vec vocab`")
    values = table.column("vector").combine_chunks().flatten().to_numpy()
    return values.reshape(vocab_size, -1).astype(np.float32)


def load_words(root: str):
    """ROOT/wordvec/words.kv (gensim KeyedVectors of every pretrained word), or None when the run has none.

    Memory-mapped from a local root; copied to a temporary folder first from HDFS or S3.
    """
    from gensim.models import KeyedVectors

    words_uri = storage.join(DATASET.uri(root), "words.kv")
    if not storage.exists(words_uri):
        return None
    DATASET.check_if_finished(root)
    if words_uri.startswith("file://"):
        return KeyedVectors.load(storage.filesystem(words_uri)[1], mmap="r")
    fs, path = storage.filesystem(DATASET.uri(root))
    with tempfile.TemporaryDirectory() as tmp:
        for info in fs.get_file_info(pafs.FileSelector(path)):
            if info.base_name.startswith("words.kv"):
                with open(os.path.join(tmp, info.base_name), "wb") as out:
                    out.write(storage.read_bytes(storage.join(DATASET.uri(root), info.base_name)))
        return KeyedVectors.load(os.path.join(tmp, "words.kv"))
