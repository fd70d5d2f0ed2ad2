"""ROOT/reports/cross-NAME/: the model of ROOT evaluated on another run root's test images (model/cross.py).

    evaluation.json   one object per method (im2vec, popularity, knn, zero_shot), as reports/evaluation.json
    evaluation.md     the same as a Markdown table
    _manifest.json    written last; lists the two files

NAME is the other root's last path component (``file:///data/openmoji`` -> ``cross-openmoji``).
The folder is its own dataset: reports/ (the in-corpus evaluation) does not count its subfolders.
"""
from __future__ import annotations

import json
import posixpath
import re
from urllib.parse import urlparse

from pipeline import Im2vecError, storage
from pipeline.datasets.base import Dataset

EVALUATION = "evaluation.json"


def name_of(other_root: str) -> str:
    """The folder name for evaluations against ``other_root``: ``cross-`` + its last path component."""
    last = posixpath.basename(urlparse(storage.to_uri(other_root)).path.rstrip("/"))
    if not last:
        raise Im2vecError(f"{other_root}: a run root for --against needs a folder name")
    return "cross-" + re.sub(r"[^A-Za-z0-9._-]", "_", last)


def dataset(other_root: str) -> Dataset:
    """The Dataset of ROOT/reports/cross-NAME/ for evaluations against ``other_root``."""
    folder = posixpath.join("reports", name_of(other_root))
    return Dataset(folder, folder, folder, f"im2vec evaluate --against {other_root}")


def read_evaluation(root: str, other_root: str) -> dict | None:
    """reports/cross-NAME/evaluation.json, or None before ``im2vec evaluate --against other_root`` has run."""
    data = dataset(other_root)
    if data.manifest(root) is None:
        return None
    data.require(root)
    return json.loads(storage.read_text(storage.join(data.uri(root), EVALUATION)))
