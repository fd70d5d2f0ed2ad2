"""``im2vec tag``: tags for image files, folders of them and photo ids, one answer per input.

An input that cannot be tagged (a missing file, a text file named ``.jpg``, an icon under
``min_side``, a photo id without features) gets an :class:`InputError` in place of its tags, and
every other input is still tagged: one bad file among 200 costs one answer, not the call.

Inputs, each as given on the command line:

* an image file (any path that exists): decoded, preprocessed and run through the CNN as the
  features stage does, with the settings recorded in ``ROOT/features/_manifest.json``;
* a folder: every file directly in it whose name ends in :data:`IMAGE_SUFFIXES` (any case),
  sorted by name, each answered under its path (``folder/name.jpg``); other files and
  subfolders are left out;
* a photo id (digits, not an existing path): its row of ``ROOT/features/``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from pipeline import Im2vecError, query, storage
from pipeline.datasets import features as features_data

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")
TAG_BATCH = 64   # image files decoded and run through the CNN at once: 64 x 224 x 224 x 3 float32 = 38 MB
# Why an input has no tags: the image reasons of pipeline.images.ImageError, and these.
REASONS = ("not_found", "no_images", "unreadable", "no_features",
           "empty", "not_an_image", "truncated", "corrupt", "too_small", "too_large")


@dataclass(frozen=True)
class InputError:
    """Why one input could not be tagged: ``reason`` (one of :data:`REASONS`) and a human ``detail``."""
    reason: str
    detail: str = ""


def expand_inputs(inputs: list[str]) -> list[str]:
    """The inputs with each folder replaced by its image files (module docstring), in order, each once.

    A folder holding no image file stays as itself (it is answered with ``no_images``).
    """
    names = []
    for text in inputs:
        if os.path.isdir(text):
            files = sorted(name for name in os.listdir(text)
                           if name.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.join(text, name)))
            names += [os.path.join(text, name) for name in files] or [text]
        else:
            names.append(text)
    return list(dict.fromkeys(names))


def image_features(root: str, paths: list[str]) -> tuple[dict[str, np.ndarray], dict[str, InputError]]:
    """CNN features of image files never seen before, made exactly as the features stage makes them.

    The CNN and preprocessing settings (cnn, cnn_weights, cnn_input_size, min_side) are the ones
    recorded in ROOT/features/_manifest.json, and the features are rounded to float16 as features/
    stores them. Files are read and run through the CNN :data:`TAG_BATCH` at a time.

    Returns:
        ``(features, errors)``: {path: float32[D]} for the usable files, {path: InputError} for the
        others (``unreadable`` or an image reason); every path is in exactly one of the two.
    """
    from pipeline import cnn, images

    params = {"cnn": "mobilenet_v2", "cnn_weights": "", "cnn_input_size": 0, "min_side": images.MIN_SIDE,
              **{k: v for k, v in features_data.made_with(storage.to_uri(root)).items()
                 if k in (*features_data.MODEL_KEYS, "min_side")}}
    network, size, _ = cnn.feature_model(params)
    features, errors = {}, {}
    for start in range(0, len(paths), TAG_BATCH):
        crops, decoded = [], []
        for path in paths[start:start + TAG_BATCH]:
            try:
                with open(path, "rb") as src:
                    crops.append(images.decode(src.read(), size, int(params["min_side"])))
                decoded.append(path)
            except OSError as err:
                errors[path] = InputError("unreadable", err.strerror or str(err))
            except images.ImageError as err:
                errors[path] = InputError(err.reason, err.detail)
        if crops:
            batch = np.asarray(network.predict_on_batch(images.normalize(np.stack(crops))))
            features.update(zip(decoded, batch.astype(np.float16).astype(np.float32)))
    return features, errors


def _photo_features(root: str, ids: list[str]) -> tuple[dict[str, np.ndarray], dict[str, InputError]]:
    """features/ rows of photo ids (digit strings): ({id: float32[D]}, {id: InputError}), each id in one."""
    uri = features_data.DATASET.uri(root)
    try:
        found, rows = features_data.read_rows(root, [int(text) for text in ids])
    except Im2vecError as err:   # no features/ at all: every id is answered with why
        return {}, {text: InputError("no_features", str(err)) for text in ids}
    by_id = dict(zip(found.tolist(), rows))
    features = {text: by_id[int(text)] for text in ids if int(text) in by_id}
    return features, {text: InputError("no_features", f"photo id not in {uri}") for text in ids
                      if text not in features}


def tag_inputs(root: str, inputs: list[str], k: int = 5, any_word: bool = False
               ) -> dict[str, list[tuple[str, float]] | InputError]:
    """Rank tags for each input (module docstring: files, folders, photo ids).

    Returns:
        {input: [(tag, score), ...] k long, best first (:func:`pipeline.query.rank_tags`), or an
        InputError}, in :func:`expand_inputs` order.

    Raises:
        Im2vecError: no trained model under ``root`` (nothing can be tagged).
    """
    root = storage.to_uri(root)
    names = expand_inputs(inputs)
    model = query.load_model(root)
    files = [name for name in names if os.path.isfile(name)]
    ids = [name for name in names if name not in files and name.isdigit() and not os.path.exists(name)]
    errors = {name: InputError("no_images", f"no file ending in {', '.join(IMAGE_SUFFIXES)} in the folder")
              if os.path.isdir(name) else InputError("not_found", "no such file or folder, and not a photo id")
              for name in names if name not in files and name not in ids}
    features = {}
    for found, failed in (image_features(root, files) if files else ({}, {}),
                          _photo_features(root, ids) if ids else ({}, {})):
        features.update(found)
        errors.update(failed)
    usable = [name for name in names if name in features]
    neighbours = query.load_neighbours(root, model) if usable else None
    ranked = dict(zip(usable, rank_tags_of(model, [features[name] for name in usable], k, any_word, neighbours)))
    return {name: ranked[name] if name in ranked else errors[name] for name in names}


def rank_tags_of(model: query.Model, features: list[np.ndarray], k: int, any_word: bool,
                 neighbours: query.Neighbours | None = None) -> list[list[tuple[str, float]]]:
    """:func:`pipeline.query.rank_tags` of float32[D] CNN features (none: an empty list), with the
    training images' votes when ``neighbours`` are given (:func:`pipeline.query.load_neighbours`)."""
    if not features:
        return []
    stacked = np.stack(features)
    return query.rank_tags(model, query.embed(model, stacked), k, any_word, features=stacked, neighbours=neighbours)
