"""ROOT/comparisons/sampling/ and ROOT/reports/sampling/: what `im2vec compare-sampling` writes (pipeline/compare.py).

    comparisons/sampling/VARIANT/seed-S/   one run root per (variant, seed):
        clean/ tagged/ zero_shot/ wordvec/ features/   links to ROOT's (SHARED): the same split, vocabulary,
                        word vectors and features for every run
        vocab/          ROOT's vocabulary with the variant's sampling weights (neg_power, pos_power)
        model/ index/ reports/   as `im2vec train`, `index` and `evaluate` write them; epochs/ and
                        model/checkpoints/ are deleted once the model is trained (unless --keep-epochs)
        result.json     last: the run's record (model/sampling_report.py); a run that has one is done
    reports/sampling/   sampling.json, sampling.md, sampling.png, and _manifest.json last. A folder of its own:
                        reports/ is evaluate's dataset and its manifest does not count subfolders.
"""
from __future__ import annotations

import json
import re

from pipeline import Im2vecError, storage
from pipeline.datasets import clean, features, tagged, wordvec, zero_shot
from pipeline.datasets.base import Dataset

SHARED = (clean.DATASET, tagged.DATASET, zero_shot.DATASET, wordvec.DATASET, features.DATASET)
REPORT = Dataset("reports/sampling", "reports/sampling", "reports/sampling", "im2vec compare-sampling")
REPORT_JSON, REPORT_MD, REPORT_PNG = "sampling.json", "sampling.md", "sampling.png"
RESULT = "result.json"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def parent_uri(root: str) -> str:
    """ROOT/comparisons/sampling/, the folder of every (variant, seed) run."""
    return storage.join(root, "comparisons", "sampling")


def check_name(variant: str) -> None:
    """Raise Im2vecError unless ``variant`` can name a folder (letters, digits, ``_ . -``)."""
    if not _NAME.fullmatch(variant):
        raise Im2vecError(f"sampling variant {variant!r}: a name is letters, digits, '_', '.' and '-' "
                          "(it names a folder)")


def run_uri(root: str, variant: str, seed: int) -> str:
    """The run root of one (variant, seed): ROOT/comparisons/sampling/VARIANT/seed-S (:func:`check_name`)."""
    check_name(variant)
    return storage.join(parent_uri(root), variant, f"seed-{int(seed)}")


def read_result(run_root: str) -> dict | None:
    """A run's record (result.json), or None while the run has not finished."""
    try:
        return json.loads(storage.read_text(storage.join(run_root, RESULT)))
    except (FileNotFoundError, OSError, ValueError):
        return None


def write_result(run_root: str, record: dict) -> None:
    """Write a run's record as its result.json, last: it marks the run as done."""
    storage.write_text(storage.join(run_root, RESULT), json.dumps(record, indent=2) + "\n")
