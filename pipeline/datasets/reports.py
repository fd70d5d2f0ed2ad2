"""ROOT/reports/: the evaluation (evaluation.json, .md, plots; written by jobs/evaluate.py) and the trainer's train.png.

The manifest is evaluate's; the trainer rewrites train.png while it runs, so after more
training the data guard asks for `im2vec evaluate` again, which the report then needs anyway.
"""
from __future__ import annotations

import json

from pipeline import storage
from pipeline.datasets.base import Dataset

# subfolders=False: reports/cross-NAME/ (evaluate --against, pipeline.datasets.cross) is its own dataset.
DATASET = Dataset("reports", "reports", "reports", "im2vec evaluate", subfolders=False)
EVALUATION = "evaluation.json"


def read_evaluation(root: str) -> dict | None:
    """reports/evaluation.json ({method: {p_at_5, r_at_5, f1, map, ...}, ...}), or None before evaluate has run."""
    if DATASET.manifest(root) is None:
        return None
    DATASET.require(root)
    return json.loads(storage.read_text(storage.join(DATASET.uri(root), EVALUATION)))
