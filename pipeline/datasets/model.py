"""ROOT/model/: the trained model (written by model/train.py).

    projection.keras   g: float32[N, D] features -> float32[N, d] (Keras)
    tag_vectors.npy    float32[V, d], row = tag_id (the trained tag table)
    tag_bias.npy       float32[V], added to g(f)·v_t when ranking tags
    progress.json      {"epoch": last finished, "step", "val_loss", "val_p_at_5", ..., "history": [...]}

The manifest is written when training finishes and deleted when it resumes, so readers that
work while training runs (tag, search, index) check the files only when there is one.
checkpoints/ and logs/ are the trainer's own working state, not part of the dataset.
A finished model's file that is missing or truncated is written again by `im2vec train` (the remedy
the data guard names), even with every epoch trained: from the best epoch's checkpoint
(checkpoints/best/) and the history, which the manifest keeps a copy of (model/train.py).
"""
from __future__ import annotations

import io
import json
import os
import tempfile

import numpy as np

from pipeline import Im2vecError, storage
from pipeline.datasets.base import Dataset

DATASET = Dataset("model", "model", "model", "im2vec train", subfolders=False)
PROJECTION, TAG_VECTORS, TAG_BIAS, PROGRESS = "projection.keras", "tag_vectors.npy", "tag_bias.npy", "progress.json"
EMBED_BATCH = 4096   # images per forward pass of g


def check(root: str) -> None:
    """Raise Im2vecError unless there is a trained model to read (and, once finished, it passes the data guard)."""
    if DATASET.check_if_finished(root) is None and not storage.exists(storage.join(DATASET.uri(root), PROJECTION)):
        raise Im2vecError(f"no trained model under {DATASET.uri(root)}: run `im2vec train --root {root}` first")


def read_projection_bytes(root: str) -> bytes:
    """The bytes of ROOT/model/projection.keras, checked (:func:`check`)."""
    check(root)
    return storage.read_bytes(storage.join(DATASET.uri(root), PROJECTION))


def load_projection(data: bytes):
    """A Keras projection from the bytes of a ``.keras`` file (Keras loads only from a path)."""
    import keras

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, PROJECTION)
        with open(path, "wb") as out:
            out.write(data)
        return keras.models.load_model(path, compile=False)


def write_projection(root: str, projection) -> None:
    """Save a Keras projection as ROOT/model/projection.keras, whole (a reader sees the old or the new file)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, PROJECTION)
        projection.save(path)
        with open(path, "rb") as saved:
            storage.write_bytes(storage.join(DATASET.uri(root), PROJECTION), saved.read())


def read_array(root: str, name: str) -> np.ndarray:
    """``tag_vectors`` or ``tag_bias`` from ROOT/model/NAME.npy as float32."""
    return np.load(io.BytesIO(storage.read_bytes(storage.join(DATASET.uri(root), f"{name}.npy")))).astype(np.float32)


def write_array(root: str, name: str, values: np.ndarray) -> None:
    """Write ROOT/model/NAME.npy whole (a reader sees the old or the new file)."""
    buffer = io.BytesIO()
    np.save(buffer, values)
    storage.write_bytes(storage.join(DATASET.uri(root), f"{name}.npy"), buffer.getvalue())


def load_progress(root: str) -> dict:
    """ROOT/model/progress.json as written.

    Raises:
        FileNotFoundError: there is none yet. ValueError: it is not JSON.
    """
    return json.loads(storage.read_text(storage.join(DATASET.uri(root), PROGRESS)))


def read_progress(root: str) -> dict:
    """ROOT/model/progress.json, or {} when there is none (or it cannot be read)."""
    try:
        return load_progress(root)
    except (FileNotFoundError, OSError, ValueError):
        return {}


def write_progress(root: str, progress: dict) -> None:
    """Write ROOT/model/progress.json whole (the scheduler polls it)."""
    storage.write_text(storage.join(DATASET.uri(root), PROGRESS), json.dumps(progress, indent=2) + "\n")


def embed(projection, features: np.ndarray) -> np.ndarray:
    """g(f): float16/float32[N, D] features -> float32[N, d], raw (not normalized), EMBED_BATCH rows a pass."""
    features = np.asarray(features)
    out = [np.asarray(projection(features[i:i + EMBED_BATCH].astype(np.float32), training=False))
           for i in range(0, len(features), EMBED_BATCH)]
    return np.concatenate(out) if out else np.zeros((0, int(projection.output_shape[-1])), np.float32)
