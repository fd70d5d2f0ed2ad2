"""ROOT/zero_shot/: the tags the vocab stage held out of the vocabulary (tag, images, users), for evaluation."""
from __future__ import annotations

from pipeline.datasets.base import Dataset

DATASET = Dataset("zero_shot", "zero_shot", "vocab", "im2vec vocab")


def held_out_tags(root: str) -> list[str] | None:
    """The held-out tags, most images first (ties by tag); None when the run has no zero_shot/."""
    from pipeline import storage

    if not storage.exists(DATASET.uri(root)):
        return None
    table = DATASET.arrow(root).to_table(columns=["tag", "images"])
    return [t for _, t in sorted(zip((-table.column("images").to_numpy()).tolist(), table.column("tag").to_pylist()))]
