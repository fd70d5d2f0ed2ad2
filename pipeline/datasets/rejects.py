"""ROOT/rejects/clean/, rejects/hashes/ and rejects/features/: the rows a stage could not use, each with its reason.

rejects/clean/ (source_file, line_number, reason, raw; jobs.clean.REJECTS) and rejects/hashes/ (the
hash file's unusable rows, when clean is given --hashes) are vouched for by clean/'s manifest;
rejects/features/ (photo_id, uri, reason, detail) by features/'s.
"""
from __future__ import annotations

from pipeline.datasets.base import Dataset

CLEAN = Dataset("rejects/clean", "rejects/clean", "clean", "im2vec clean")
HASHES = Dataset("rejects/hashes", "rejects/hashes", "clean", "im2vec clean")
FEATURES = Dataset("rejects/features", "rejects/features", "features", "im2vec features")


def read(root: str, stage: str):
    """The rejects of ``stage`` ("clean", "hashes" or "features") as a pyarrow Table, after the data guard."""
    return {"clean": CLEAN, "hashes": HASHES, "features": FEATURES}[stage].arrow(root).to_table()
