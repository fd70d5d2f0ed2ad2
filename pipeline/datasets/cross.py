"""ROOT/reports/cross-NAME/: the model of ROOT evaluated on another run root's test images (model/cross.py).

    evaluation.json   one object per method (im2vec, popularity, knn, zero_shot), as reports/evaluation.json
    evaluation.md     the same as a Markdown table
    _manifest.json    written last; lists the two files and names the other root (``against``)

NAME is the other root's last path component (``file:///data/openmoji`` -> ``cross-openmoji``).
The folder is its own dataset: reports/ (the in-corpus evaluation) does not count its subfolders.
"""
from __future__ import annotations

import json
import posixpath
import re
from urllib.parse import urlparse

import pyarrow.fs as pafs

from pipeline import Im2vecError, storage
from pipeline.datasets.base import Dataset

EVALUATION = "evaluation.json"
PREFIX = "cross-"


def name_of(other_root: str) -> str:
    """The folder name for evaluations against ``other_root``: ``cross-`` + its last path component."""
    last = posixpath.basename(urlparse(storage.to_uri(other_root)).path.rstrip("/"))
    if not last:
        raise Im2vecError(f"{other_root}: a run root for --against needs a folder name")
    return PREFIX + re.sub(r"[^A-Za-z0-9._-]", "_", last)


def dataset(other_root: str) -> Dataset:
    """The Dataset of ROOT/reports/cross-NAME/ for evaluations against ``other_root``."""
    folder = posixpath.join("reports", name_of(other_root))
    return Dataset(folder, folder, folder, f"im2vec evaluate --against {other_root}")


def found(root: str) -> list[Dataset]:
    """The Dataset of every reports/cross-NAME/ folder under ``root``, by name, finished or not.

    The command that remakes one names the other root its manifest records (``against``).
    """
    fs, path = storage.filesystem(storage.join(root, "reports"))
    datasets = []
    for info in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)):
        if info.type == pafs.FileType.Directory and info.base_name.startswith(PREFIX):
            folder = posixpath.join("reports", info.base_name)
            against = (storage.read_manifest(storage.join(root, folder)) or {}).get("against", "OTHER_ROOT")
            datasets.append(Dataset(folder, folder, folder, f"im2vec evaluate --against {against}"))
    return sorted(datasets, key=lambda d: d.name)


def read_evaluation(root: str, other_root: str) -> dict | None:
    """reports/cross-NAME/evaluation.json, or None before ``im2vec evaluate --against other_root`` has run."""
    data = dataset(other_root)
    if data.manifest(root) is None:
        return None
    data.require(root)
    return json.loads(storage.read_text(storage.join(data.uri(root), EVALUATION)))
