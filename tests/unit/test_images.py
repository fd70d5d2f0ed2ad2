"""pipeline.images: decoding, colour handling, torchvision's resize/crop geometry, rejects."""
import io
import os

import numpy as np
import pytest
from PIL import Image, features

from pipeline import images
from pipeline.images import IMAGENET_MEAN, IMAGENET_STD, ImageError

DARKNET = "/usr/share/darknet/data"
needs_darknet = pytest.mark.skipif(not os.path.isdir(DARKNET), reason="Debian's darknet data is not installed")


def encode(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def pixels_of(normalized: np.ndarray) -> np.ndarray:
    """Undo the ImageNet normalization: float (..., 3) -> RGB 0..255 floats."""
    return (normalized * IMAGENET_STD + IMAGENET_MEAN) * 255.0


def noise(height: int, width: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@needs_darknet
@pytest.mark.parametrize("name", ["dog", "eagle", "person"])
def test_real_jpeg_gives_normalized_float32_crop(name):
    with open(f"{DARKNET}/{name}.jpg", "rb") as fh:
        out = images.decode_and_preprocess(fh.read())
    assert out.shape == (224, 224, 3) and out.dtype == np.float32
    rgb = pixels_of(out)
    assert rgb.min() > -0.01 and rgb.max() < 255.01
    assert 20 < rgb.mean() < 235 and rgb.std() > 10  # a photo, not a flat or blown-out frame


def test_size_parameter_sets_crop_and_resize_ratio():
    assert images.resize_side(224) == 256 and images.resize_side(299) == 342
    assert images.decode_and_preprocess(encode(noise(300, 500)), size=160).shape == (160, 160, 3)


def test_normalize_matches_torchvision_formula():
    pixels = np.random.default_rng(1).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    expected = (pixels.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(images.normalize(pixels), expected, atol=1e-5)
    assert images.normalize(pixels).dtype == np.float32


def test_fully_transparent_png_becomes_pure_white():
    rgba = np.zeros((100, 120, 4), dtype=np.uint8)
    rgba[..., :3] = np.random.default_rng(2).integers(0, 256, (100, 120, 3))  # colour under alpha 0
    out = images.decode_and_preprocess(encode(Image.fromarray(rgba, "RGBA")))
    white = (1.0 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(out, np.broadcast_to(white, out.shape), atol=1e-5)


def test_half_transparent_black_is_composited_on_white():
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[..., 3] = 128
    crop = images.decode(encode(Image.fromarray(rgba, "RGBA")))
    assert np.all(np.abs(crop.astype(int) - 127) <= 1)  # 255 * (1 - 128/255)


def test_transparent_palette_gif_and_grey_alpha_composite_on_white():
    palette = Image.new("P", (50, 50), 0)
    palette.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    palette.paste(1, (0, 0, 25, 50))  # left half red, right half palette index 0, transparent
    crop = images.decode(encode(palette, "GIF", transparency=0))
    assert np.all(crop[:, :90] == [200, 0, 0]) and np.all(crop[:, -90:] == 255)
    grey_alpha = Image.new("LA", (40, 40), (0, 0))
    assert np.all(images.decode(encode(grey_alpha)) == 255)


def test_grey_image_becomes_rgb():
    grey = Image.fromarray(np.tile(np.arange(0, 250, 5, dtype=np.uint8), (50, 1)), "L")
    crop = images.decode(encode(grey))
    assert crop.shape == (224, 224, 3)
    assert np.array_equal(crop[..., 0], crop[..., 1]) and np.array_equal(crop[..., 1], crop[..., 2])
    assert crop[..., 0].max() - crop[..., 0].min() > 100  # the gradient survived


def test_sixteen_bit_grey_is_scaled_not_clipped():
    grey16 = Image.fromarray(np.full((40, 40), 32896, dtype=np.uint16))  # 128 * 257
    assert grey16.mode.startswith("I")
    assert np.all(images.decode(encode(grey16)) == 128)


def test_palette_image_takes_palette_colours():
    palette = Image.new("P", (60, 40), 0)
    palette.putpalette([10, 200, 30] + [0] * 765)
    assert np.all(images.decode(encode(palette)) == [10, 200, 30])


def test_cmyk_jpeg_becomes_rgb():
    rgb = Image.new("RGB", (64, 64), (200, 40, 40))
    crop = images.decode(encode(rgb.convert("CMYK"), "JPEG", quality=95))
    assert np.all(np.abs(crop.astype(int) - [200, 40, 40]) <= 6)


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (64, 48), colour) for colour in [(255, 0, 0), (0, 0, 255)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    crop = images.decode(data)
    assert np.all(crop[..., 0] > 240) and np.all(crop[..., 2] < 15)


@pytest.mark.skipif(not features.check("webp"), reason="this PIL has no WebP")
def test_webp_decodes():
    crop = images.decode(encode(Image.new("RGB", (80, 60), (0, 128, 255)), "WEBP", lossless=True))
    assert np.all(crop == [0, 128, 255])


def test_wide_and_tall_images_follow_torchvision_resize_and_center_crop():
    # 400x200: short side -> 256, long side int(256 * 400 / 200) = 512; crop offsets
    # round((512 - 224) / 2) = 144 and round((256 - 224) / 2) = 16.
    wide = noise(200, 400, seed=3)
    expected = np.asarray(wide.resize((512, 256), Image.BILINEAR).crop((144, 16, 368, 240)))
    assert np.array_equal(images.decode(encode(wide)), expected)
    # 333x500 (w x h): long side int(256 * 500 / 333) = 384; offsets 16 and round(80.0) = 80.
    tall = noise(500, 333, seed=4)
    expected = np.asarray(tall.resize((256, 384), Image.BILINEAR).crop((16, 80, 240, 304)))
    assert np.array_equal(images.decode(encode(tall)), expected)


def test_center_crop_drops_the_sides_of_a_wide_image():
    # Red bands on the outer quarter of each side fall outside the centre crop (x 112..288).
    wide = np.zeros((200, 400, 3), dtype=np.uint8)
    wide[:, :, 1] = 255
    wide[:, :100] = wide[:, 300:] = [255, 0, 0]
    crop = images.decode(encode(Image.fromarray(wide)))
    assert np.all(crop == [0, 255, 0])


def test_exif_orientation_is_applied():
    # Stored sideways: left half red, right half blue; orientation 6 = rotate 90 deg clockwise
    # to display, so the viewer sees red on top.
    stored = np.zeros((200, 300, 3), dtype=np.uint8)
    stored[:, :150] = [255, 0, 0]
    stored[:, 150:] = [0, 0, 255]
    exif = Image.Exif()
    exif[0x0112] = 6
    crop = images.decode(encode(Image.fromarray(stored), "JPEG", quality=95, exif=exif))
    assert crop[:100, :, 0].mean() > 240 and crop[:100, :, 2].mean() < 15
    assert crop[-100:, :, 2].mean() > 240 and crop[-100:, :, 0].mean() < 15


def test_large_jpeg_draft_decode_stays_close_to_full_decode():
    # Smooth content at 2048x1536: drafted at 1/2 scale (1024x768 >= 2 x the 341x256 resize).
    y, x = np.mgrid[0:1536, 0:2048]
    smooth = np.stack([128 + 100 * np.sin(x / 90.0), 128 + 100 * np.cos(y / 70.0),
                       128 + 60 * np.sin((x + y) / 50.0)], axis=-1).astype(np.uint8)
    data = encode(Image.fromarray(smooth), "JPEG", quality=90)
    drafted = images.decode(data).astype(int)
    full = images.decode(data, draft=False).astype(int)
    difference = np.abs(drafted - full)
    assert 0 < difference.mean() < 1.0 and difference.max() <= 8


def test_empty_bytes_are_rejected_as_empty():
    with pytest.raises(ImageError) as err:
        images.decode(b"")
    assert err.value.reason == "empty"


def test_random_bytes_are_not_an_image():
    with pytest.raises(ImageError) as err:
        images.decode(np.random.default_rng(5).bytes(5000))
    assert err.value.reason == "not_an_image"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF"])
def test_cut_file_is_truncated(fmt):
    data = encode(noise(200, 300, seed=6), fmt)
    with pytest.raises(ImageError) as err:
        images.decode(data[: len(data) // 2])
    assert err.value.reason == "truncated"


def test_broken_png_data_is_corrupt():
    data = bytearray(encode(noise(200, 300, seed=7), "PNG"))
    middle = len(data) // 2
    data[middle:middle + 64] = np.random.default_rng(8).bytes(64)
    with pytest.raises(ImageError) as err:
        images.decode(bytes(data))
    assert err.value.reason == "corrupt"


def test_tiny_image_is_too_small_unless_min_side_allows_it():
    data = encode(noise(20, 200))
    with pytest.raises(ImageError) as err:
        images.decode(data)
    assert err.value.reason == "too_small"
    assert images.decode(data, min_side=16).shape == (224, 224, 3)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_more_pixels_than_pil_allows_is_too_large(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)
    data = encode(noise(120, 120))
    with pytest.raises(ImageError) as err:
        images.decode(data)
    assert err.value.reason == "too_large"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300 * 300)  # the 256x256 resize fits too
    assert images.decode(data).shape == (224, 224, 3)
    # A thin panorama within the limit whose resize (2560x256 px) is not.
    with pytest.raises(ImageError) as err:
        images.decode(encode(noise(40, 400)))
    assert err.value.reason == "too_large"


def test_preprocess_batch_keeps_order_and_reports_reasons():
    good = [encode(noise(100, 150, seed=s)) for s in (9, 10)]
    batch, reasons = images.preprocess_batch([good[0], b"", None, b"GIF89a nonsense", good[1]])
    assert reasons == [None, "empty", "empty", "not_an_image", None]
    assert batch.shape == (2, 224, 224, 3) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[0], images.decode_and_preprocess(good[0]))
    np.testing.assert_array_equal(batch[1], images.decode_and_preprocess(good[1]))
    empty, reasons = images.preprocess_batch([b"\x00"])
    assert empty.shape == (0, 224, 224, 3) and reasons == ["not_an_image"]
