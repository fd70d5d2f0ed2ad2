"""ROOT/epochs/epoch=EEEEE/: one pre-sampled epoch each (written by jobs/sample.py and jobs/schedule.py).

The epoch contract, schema version 1 (:data:`SCHEMA_VERSION`), for any trainer:

    photo_id  int64
    feature   binary: Petastorm's NdarrayCodec of float16[D] (``np.save`` bytes: a .npy header, then
              the D little-endian values); only when features/ exists
    pos_ids   list<int32>, P per row: positive tag ids, drawn from the image's tags by pos_weight
    neg_ids   list<int32>, K per row: negative tag ids, drawn by neg_weight, never one of its tags

Rows are in the epoch's shuffled order (files in name order, rows in file order). Each folder is a
Petastorm dataset: ``_common_metadata`` holds the Unischema (:func:`unischema`) and the row groups
of each file, so Petastorm's ``make_reader`` and ``get_schema_from_dataset_url`` give ``feature`` as
float16[D]. The epoch is complete once its ``_manifest.json`` exists; it holds ``schema_version``,
``feature_dim`` (D, null without features), ``positives`` (P), ``negatives`` (K), ``vocab_size``
(tag ids run 0..V-1, rows of ROOT/vocab/ and ROOT/wordvec/vectors/) and ``rows_out``. A reader
refuses a version it does not know (:func:`check`): a change to a column, its encoding or its
meaning is a new version.

ROOT/epochs/_manifest.json only sums up the last `im2vec sample` run and lists no files (the
scheduler deletes epochs every consumer is done with).
"""
from __future__ import annotations

import json
import pickle
import re

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline import Im2vecError, storage
from pipeline.datasets.base import Dataset

FOLDER = re.compile(r"epoch=(\d+)$")
SCHEMA_VERSION = 1


def dataset(epoch: int) -> Dataset:
    """Epoch ``epoch`` (from 1) as a :class:`Dataset`."""
    folder = f"epochs/epoch={epoch:05d}"
    return Dataset(folder, folder, folder, f"im2vec sample --epochs {epoch}-{epoch}")


def uri(root: str, epoch: int) -> str:
    """Where epoch ``epoch`` (from 1) lives: ``ROOT/epochs/epoch=00001``."""
    return storage.join(root, dataset(epoch).folder)


def parent_uri(root: str) -> str:
    """ROOT/epochs/: every epoch's folder, the sample stage's run summary, a killed run's ``_staging-*``."""
    return storage.join(root, "epochs")


def folders(root: str) -> dict[int, str]:
    """Epoch number -> folder URI of every ``epoch=NNNNN`` folder under ROOT/epochs/, complete or not."""
    fs, path = storage.filesystem(parent_uri(root))
    found = {}
    for info in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)):
        match = FOLDER.match(info.base_name)
        if match and info.type == pafs.FileType.Directory:
            found[int(match.group(1))] = uri(root, int(match.group(1)))
    return dict(sorted(found.items()))


def read(spark, root: str, epoch: int):
    """Epoch ``epoch`` as a Spark DataFrame, after the data guard."""
    return dataset(epoch).spark(spark, root)


def unischema(feature_dim: int | None, positives: int, negatives: int):
    """The Petastorm Unischema of an epoch: photo_id, [feature float16[D] (NdarrayCodec)], pos_ids, neg_ids.

    Only the feature has a codec: the other fields are plain Parquet, which Petastorm reads as
    they are, so unpickling the schema needs Petastorm and numpy only (not pyspark).
    """
    from petastorm.codecs import NdarrayCodec
    from petastorm.unischema import Unischema, UnischemaField

    fields = [UnischemaField("photo_id", np.int64, (), None, False)]
    if feature_dim:
        fields.append(UnischemaField("feature", np.float16, (int(feature_dim),), NdarrayCodec(), False))
    fields += [UnischemaField("pos_ids", np.int32, (int(positives),), None, False),
               UnischemaField("neg_ids", np.int32, (int(negatives),), None, False)]
    return Unischema("Epoch", fields)


def write_petastorm_metadata(folder_uri: str, schema: pa.Schema, row_groups: dict[str, int], *,
                             feature_dim: int | None, positives: int, negatives: int) -> None:
    """Write ``_common_metadata`` into an epoch folder, as Petastorm's ``materialize_dataset`` does.

    Args:
        folder_uri: the folder holding the epoch's Parquet files; schema: their Arrow schema.
        row_groups: {file name in the folder: its number of row groups}, for every data file.
        feature_dim, positives, negatives: D (None without features), P and K.
    """
    from petastorm.etl.dataset_metadata import ROW_GROUPS_PER_FILE_KEY, UNISCHEMA_KEY

    metadata = {UNISCHEMA_KEY: pickle.dumps(unischema(feature_dim, positives, negatives)),
                ROW_GROUPS_PER_FILE_KEY: json.dumps(row_groups)}
    fs, path = storage.filesystem(folder_uri)
    with fs.open_output_stream(f"{path}/_common_metadata") as out:
        pq.write_metadata(schema.with_metadata(metadata), out)


def check(manifest: dict, folder_uri: str) -> None:
    """Raise Im2vecError (one line) unless the epoch's manifest says :data:`SCHEMA_VERSION`."""
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        match = FOLDER.search(folder_uri.rstrip("/"))
        epoch = int(match.group(1)) if match else "E"
        found = "none (an older im2vec)" if version is None else version
        raise Im2vecError(f"{folder_uri} has epoch schema version {found}; this im2vec reads version {SCHEMA_VERSION}: "
                          f"sample it again (`im2vec sample --epochs {epoch}-{epoch}`) or read it with the im2vec "
                          "that wrote it")
