"""ROOT/epochs/epoch=EEEEE/: one pre-sampled epoch each (written by jobs/sample.py and jobs/schedule.py).

    photo_id int64, feature binary = raw little-endian float16[D] (only when features/ exists),
    pos_ids list<int32>[P], neg_ids list<int32>[K]; rows in the epoch's shuffled order

Each epoch folder has its own manifest; ROOT/epochs/_manifest.json only sums up the last
`im2vec sample` run and lists no files (the scheduler deletes epochs the trainer is done with).
"""
from __future__ import annotations

import re

import pyarrow.fs as pafs

from pipeline import storage
from pipeline.datasets.base import Dataset

FOLDER = re.compile(r"epoch=(\d+)$")


def dataset(epoch: int) -> Dataset:
    """Epoch ``epoch`` (from 1) as a :class:`Dataset`."""
    folder = storage.epoch_uri("", epoch).lstrip("/")
    return Dataset(folder, folder, folder, f"im2vec sample --epochs {epoch}-{epoch}")


def uri(root: str, epoch: int) -> str:
    """Where epoch ``epoch`` (from 1) lives: ``ROOT/epochs/epoch=00001``."""
    return storage.epoch_uri(root, epoch)


def folders(root: str) -> dict[int, str]:
    """Epoch number -> folder URI of every ``epoch=NNNNN`` folder under ROOT/epochs/, complete or not."""
    fs, path = storage.filesystem(storage.join(root, "epochs"))
    found = {}
    for info in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)):
        match = FOLDER.match(info.base_name)
        if match and info.type == pafs.FileType.Directory:
            found[int(match.group(1))] = uri(root, int(match.group(1)))
    return dict(sorted(found.items()))


def read(spark, root: str, epoch: int):
    """Epoch ``epoch`` as a Spark DataFrame, after the data guard."""
    return dataset(epoch).spark(spark, root)
