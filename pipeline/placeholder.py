"""Recognize the placeholder image a photo host serves for a removed photo, by its pixels.

Flickr answers the URL of a deleted or private photo with a small grey "This photo is no longer
available" image (500x374 at the default size, smaller at the small sizes) and HTTP 200, so a
fetch succeeds and, without this check, the placeholder would become a training image
thousands of times over. The features stage rejects such images with reason ``unavailable``.

A fingerprint is the image's size and its 8x8 grey thumbnail (area averages), written as
``"WIDTHxHEIGHT:HEX"`` (128 hex digits, row by row)::

    500x374:e5e5e5e5...

An image matches when its size is exactly the fingerprint's and no thumbnail cell differs by
more than ``TOLERANCE`` grey levels: re-encoding (PNG, GIF, JPEG at any usual quality) moves
cells by a few levels, while a photo of the same size whose every 8x8 cell matches a flat grey
card with a dark icon in the middle is not a photo anyone tagged. The check costs nothing for
images of other sizes (their header says so before any decoding).

The placeholders' fingerprints are configuration (``unavailable_fingerprints``), because the
images are the host's, not ours: fetch one placeholder per size you use (e.g. open a removed
photo's URL) and run ``python -m pipeline.placeholder FILE...`` to print the lines to add.
"""
from __future__ import annotations

import sys
from typing import Iterable

import numpy as np
from PIL import Image

GRID = 8            # thumbnail cells per side
TOLERANCE = 12      # grey levels (0..255) any one cell may differ by

class Fingerprints(dict):
    """(width, height) -> [uint8[GRID*GRID] thumbnails] of the known placeholders (:func:`parse`).

    ``(w, h) in fingerprints`` says whether an image of that size is worth a look, and
    :meth:`matches` looks; pipeline.images asks both without importing this module.
    """

    def matches(self, image: Image.Image) -> bool:
        """:func:`matches` of a decoded image (RGB) against these fingerprints."""
        return matches(image, self)


def thumbnail(image: Image.Image) -> np.ndarray:
    """uint8[GRID*GRID]: the image's grey thumbnail, area-averaged (an RGB or L PIL image in)."""
    grey = image.convert("L").resize((GRID, GRID), Image.BOX)
    return np.asarray(grey, dtype=np.uint8).reshape(-1)


def fingerprint(image: Image.Image) -> str:
    """The ``"WxH:HEX"`` fingerprint of a decoded image (RGB, transparency already flattened)."""
    width, height = image.size
    return f"{width}x{height}:{thumbnail(image).tobytes().hex()}"


def parse(texts: Iterable[str] | None) -> Fingerprints:
    """Fingerprint strings (the ``unavailable_fingerprints`` config value) -> {(w, h): [thumbnails]}.

    Raises:
        ValueError: a string is not ``"WIDTHxHEIGHT:HEX"`` with GRID*GRID bytes of hex.
    """
    parsed = Fingerprints()
    for text in texts or ():
        try:
            size, digits = str(text).strip().split(":")
            width, height = (int(v) for v in size.lower().split("x"))
            cells = np.frombuffer(bytes.fromhex(digits), dtype=np.uint8)
        except ValueError:
            cells = None
        if cells is None or len(cells) != GRID * GRID:
            raise ValueError(f"not an image fingerprint (WIDTHxHEIGHT:{2 * GRID * GRID} hex digits): {text!r}")
        parsed.setdefault((width, height), []).append(cells)
    return parsed


def matches(image: Image.Image, fingerprints: Fingerprints) -> bool:
    """Whether a decoded image (RGB) is one of the placeholders: same size, every cell within TOLERANCE."""
    known = fingerprints.get(image.size)
    if not known:
        return False
    cells = thumbnail(image).astype(np.int16)
    return any(int(np.abs(cells - k).max()) <= TOLERANCE for k in known)


def main(argv: list[str]) -> int:
    """Print the fingerprint of each image file given, for ``unavailable_fingerprints``."""
    from pipeline import images

    for path in argv:
        with open(path, "rb") as f:
            image = images.decoded_image(f.read())
        print(f"- \"{fingerprint(image)}\"   # {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
