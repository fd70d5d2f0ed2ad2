"""Decode image bytes and preprocess them exactly as torchvision's ImageNet models were trained.

The pipeline is torchvision's evaluation transform on PIL images::

    Resize(256)              short side to 256 px, PIL bilinear (antialiased), long side truncated
    CenterCrop(224)          offsets rounded as torchvision rounds them
    ToTensor()               [0, 255] -> [0, 1]
    Normalize(mean, std)     ImageNet channel mean / std

and returns channels-last float32 arrays, the layout ``pipeline.cnn`` models take. For other
input sizes the short side goes to ``round(size * 256 / 224)`` (the same 0.875 crop ratio).

What torchvision leaves to the caller is decided here for photos and clip art:

* palette, grey, 16-bit grey and CMYK images become RGB; an animated GIF gives its first frame;
* an alpha channel (or a palette's transparent colour) is composited on WHITE: clip art and
  cut-outs are mostly transparent, and what lies under the transparent pixels is arbitrary;
* the EXIF orientation is applied, so a phone photo is seen upright as its owner sees it;
* a JPEG at least 4x the resized size (short side >= 1024 px for a 224 crop) is decoded at a
  reduced scale (PIL's draft mode: libjpeg scales by 1/2, 1/4 or 1/8 while decoding) that
  keeps at least DRAFT_FACTOR = 2 times the resized size, so the antialiased resize still
  reduces 2x or more. Measured on darknet's photos: a 2704x1800 JPEG takes 17 ms instead of
  53, and the MobileNetV2 features of a 1536x1024 mosaic stay at cosine 0.9992 of the full
  decode, as close as re-encoding at JPEG quality 90 leaves them (0.998-0.9995). Drafting
  closer to the resized size is not worth it: eagle.jpg (773x512) drafted to 387x256 falls
  to cosine 0.986. ``draft=False`` decodes at full size (torchvision's exact pixels).

A bad image raises :class:`ImageError` with a reason code, so a stage can reject the row.
"""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError


IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
MIN_SIDE = 32             # px; a smaller image is an icon or a tracking pixel, not a photo
RESIZE_RATIO = 256 / 224  # torchvision's Resize(256) before CenterCrop(224)
DRAFT_FACTOR = 2          # a JPEG decoded at reduced scale keeps >= this many times the resized size

# (x / 255 - mean) / std as one multiply-add over uint8 pixels.
_SCALE = (1.0 / (255.0 * IMAGENET_STD)).astype(np.float32)
_SHIFT = (-IMAGENET_MEAN / IMAGENET_STD).astype(np.float32)


class ImageError(Exception):
    """An image that cannot be used; ``reason`` says why, as a stable code for a rejects table.

    Reasons: ``empty`` (no bytes), ``not_an_image`` (no decoder recognises the bytes),
    ``truncated`` (the data ends early), ``corrupt`` (the data stream is broken),
    ``too_small`` (short side below ``min_side``), ``too_large`` (more pixels than PIL's
    ``Image.MAX_IMAGE_PIXELS`` decompression-bomb guard allows), ``unavailable`` (the host's
    placeholder for a removed photo, :mod:`pipeline.placeholder`).
    """

    REASONS = ("empty", "not_an_image", "truncated", "corrupt", "too_small", "too_large", "unavailable")

    def __init__(self, reason: str, detail: str = ""):
        assert reason in self.REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def resize_side(size: int) -> int:
    """The short side (px) an image is resized to before the center crop of ``size`` px."""
    return round(size * RESIZE_RATIO)


def decode(data: bytes, size: int = 224, min_side: int = MIN_SIDE, draft: bool = True,
           unavailable=None) -> np.ndarray:
    """Decode one encoded image (JPEG, PNG, GIF, WebP, BMP, TIFF, ...) to a center crop.

    Args:
        data: the encoded file's bytes.
        size: side of the square crop, px.
        min_side: an image whose short side is below this many px is rejected (``too_small``).
        draft: let libjpeg decode a large JPEG at a reduced scale (see the module docstring).
        unavailable: placeholder fingerprints (:func:`pipeline.placeholder.parse`); an image of
            one of their sizes is decoded whole and compared.

    Returns:
        uint8 array (size, size, 3), RGB, not yet normalized.

    Raises:
        ImageError: the image cannot be used; ``.reason`` is one of ``ImageError.REASONS``.
    """
    if not data:
        raise ImageError("empty")
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
        width, height = image.size
        if min(width, height) < min_side:
            raise ImageError("too_small", f"{width}x{height} px, the short side must be >= {min_side}")
        if unavailable and (width, height) in unavailable and unavailable.matches(_rgb(_loaded(image))):
            raise ImageError("unavailable", f"{width}x{height} px: the host's placeholder for a removed photo")
        short = resize_side(size)
        resized_width, resized_height = _resized_size(width, height, short)
        # PIL only warns between MAX_IMAGE_PIXELS and twice that: here the limit is the limit,
        # and it holds for the resize too (a thin panorama is small, its 256 px tall resize not).
        if Image.MAX_IMAGE_PIXELS and max(width * height, resized_width * resized_height) > Image.MAX_IMAGE_PIXELS:
            raise ImageError("too_large", f"{width}x{height} px resize to {resized_width}x{resized_height}, "
                                          f"PIL's MAX_IMAGE_PIXELS is {Image.MAX_IMAGE_PIXELS}")
        if draft and min(width, height) >= 2 * DRAFT_FACTOR * short:
            image.draft(None, (DRAFT_FACTOR * resized_width, DRAFT_FACTOR * resized_height))
        image.load()
        image = _rgb(_upright(image))
        crop = _center_crop(image.resize(_resized_size(*image.size, short), Image.BILINEAR), size)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:  # the latter under -W error
        raise ImageError("too_large", str(err)) from None
    except UnidentifiedImageError:
        raise ImageError("not_an_image", f"{len(data)} bytes of no known image format") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as err:
        reason = "truncated" if "truncated" in str(err).lower() or isinstance(err, EOFError) else "corrupt"
        raise ImageError(reason, str(err)) from None
    return crop


def _loaded(image: Image.Image) -> Image.Image:
    image.load()
    return image


def decoded_image(data: bytes) -> Image.Image:
    """One encoded image, whole and upright, RGB with transparency on white (what fingerprints are made of)."""
    return _rgb(_upright(_loaded(Image.open(io.BytesIO(data)))))


def normalize(pixels: np.ndarray) -> np.ndarray:
    """ImageNet normalization: uint8 RGB (..., 3) -> float32 (..., 3), (x/255 - mean) / std."""
    return pixels.astype(np.float32) * _SCALE + _SHIFT


def decode_and_preprocess(data: bytes, size: int = 224, min_side: int = MIN_SIDE) -> np.ndarray:
    """One encoded image -> the CNN's input: float32 (size, size, 3), normalized. Raises ImageError."""
    return normalize(decode(data, size, min_side))


def preprocess_batch(blobs: Sequence[bytes | None], size: int = 224, min_side: int = MIN_SIDE,
                     unavailable=None) -> tuple[np.ndarray, list[str | None]]:
    """Decode a batch of encoded images; normalization runs once over the whole batch.

    Args:
        blobs: encoded images; None (nothing fetched) counts as ``empty``.
        size, min_side, unavailable: as for :func:`decode`.

    Returns:
        ``(images, reasons)``: images is float32 (K, size, size, 3) holding the K usable images
        in input order; reasons has one entry per blob, None for a usable image, else the
        ``ImageError`` reason code. K == ``reasons.count(None)``.
    """
    crops = np.empty((len(blobs), size, size, 3), dtype=np.uint8)
    reasons: list[str | None] = []
    kept = 0
    for data in blobs:
        try:
            crops[kept] = decode(data or b"", size, min_side, unavailable=unavailable)
        except ImageError as err:
            reasons.append(err.reason)
            continue
        reasons.append(None)
        kept += 1
    return normalize(crops[:kept]), reasons


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag, if any (a copy is made only when pixels must move)."""
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    return ImageOps.exif_transpose(image) if orientation in range(2, 9) else image


def _rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB, transparency composited on white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        # 16-bit grey: PIL's own conversion clips at 255 instead of scaling.
        grey = np.asarray(image, dtype=np.float32) / 257.0
        image = Image.fromarray(np.clip(grey + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        white.alpha_composite(rgba)
        return white.convert("RGB")
    return image.convert("RGB")


def _resized_size(width: int, height: int, short: int) -> tuple[int, int]:
    """torchvision's Resize(short) output size: short side -> short, long side int(short * long / short_side).

    torchvision then calls ``image.resize(size, BILINEAR)`` without reducing_gap: one
    antialiased bilinear pass over the full image (a reducing_gap pre-reduction would change it).
    """
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def _center_crop(image: Image.Image, size: int) -> np.ndarray:
    """torchvision's CenterCrop(size): offsets int(round((side - size) / 2)); uint8 (size, size, 3)."""
    width, height = image.size
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return np.asarray(image.crop((left, top, left + size, top + size)))
