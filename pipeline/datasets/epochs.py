"""ROOT/epochs/epoch=EEEEE/: one pre-sampled epoch each (written by jobs/sample.py and jobs/schedule.py).

The epoch contract, schema version 2 (:data:`SCHEMA_VERSION`), for any trainer:

    photo_id  int64
    feature   binary: Petastorm's NdarrayCodec of float16[D] (``np.save`` bytes: a .npy header, then
              the D little-endian values); only when features/ exists
    pos_ids   list<int32>, P per row: positive tag ids, drawn from the image's tags by pos_weight
    neg_ids   list<int32>, K per row: negative tag ids, drawn by neg_weight, never one of its tags
              unless the manifest's ``exclude_own_tags`` is false; K may be 0 (a positives-only
              epoch: the sampling method draws its negatives in the trainer, or ``negatives: 0``)
    own_ids   list<int32>, M per row: the image's own tag ids, ascending, padded with -1; only in
              epochs for the sampling methods that keep an image's tags out of the negatives they
              draw from a batch (pipeline.sampling.METHODS, ``own_ids``)

Rows are in the epoch's shuffled order (files in name order, rows in file order). Each folder is a
Petastorm dataset: ``_common_metadata`` holds the Unischema (:func:`unischema`) and the row groups
of each file, so Petastorm's ``make_reader`` and ``get_schema_from_dataset_url`` give ``feature`` as
float16[D]. The epoch is complete once its ``_manifest.json`` exists; it holds ``schema_version``,
``feature_dim`` (D, null without features), ``positives`` (P), ``negatives`` (K), ``own_tags`` (M,
0 without own_ids), ``sampling`` (the method it was sampled for), ``exclude_own_tags``,
``vocab_size`` (tag ids run 0..V-1, rows of ROOT/vocab/ and ROOT/wordvec/vectors/) and
``rows_out``. A reader refuses a version it does not know (:func:`check`): a change to a column,
its encoding or its meaning is a new version. Version 1 (before own_ids, K = 0 and
exclude_own_tags) is version 2 sampled ``presampled`` with own tags excluded, so it is read too.

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
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)


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


def unischema(feature_dim: int | None, positives: int, negatives: int, own_tags: int = 0):
    """The Petastorm Unischema of an epoch: photo_id, [feature float16[D] (NdarrayCodec)], pos_ids, neg_ids
    [, own_ids int32[M] with ``own_tags`` M > 0].

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
    if own_tags:
        fields.append(UnischemaField("own_ids", np.int32, (int(own_tags),), None, False))
    return Unischema("Epoch", fields)


def write_petastorm_metadata(folder_uri: str, schema: pa.Schema, row_groups: dict[str, int], *,
                             feature_dim: int | None, positives: int, negatives: int, own_tags: int = 0) -> None:
    """Write ``_common_metadata`` into an epoch folder, as Petastorm's ``materialize_dataset`` does.

    Args:
        folder_uri: the folder holding the epoch's Parquet files; schema: their Arrow schema.
        row_groups: {file name in the folder: its number of row groups}, for every data file.
        feature_dim, positives, negatives, own_tags: D (None without features), P, K and M (0 = no own_ids).
    """
    from petastorm.etl.dataset_metadata import ROW_GROUPS_PER_FILE_KEY, UNISCHEMA_KEY

    metadata = {UNISCHEMA_KEY: pickle.dumps(unischema(feature_dim, positives, negatives, own_tags)),
                ROW_GROUPS_PER_FILE_KEY: json.dumps(row_groups)}
    fs, path = storage.filesystem(folder_uri)
    with fs.open_output_stream(f"{path}/_common_metadata") as out:
        pq.write_metadata(schema.with_metadata(metadata), out)


def check(manifest: dict, folder_uri: str) -> None:
    """Raise Im2vecError (one line) unless the epoch's manifest says one of :data:`READABLE_VERSIONS`."""
    version = manifest.get("schema_version")
    if version not in READABLE_VERSIONS:
        match = FOLDER.search(folder_uri.rstrip("/"))
        epoch = int(match.group(1)) if match else "E"
        found = "none (an older im2vec)" if version is None else version
        readable = " and ".join(str(v) for v in READABLE_VERSIONS)
        raise Im2vecError(f"{folder_uri} has epoch schema version {found}; this im2vec reads versions {readable}: "
                          f"sample it again (`im2vec sample --epochs {epoch}-{epoch}`) or read it with the im2vec "
                          "that wrote it")
