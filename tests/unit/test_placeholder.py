import glob
import io
import os

import numpy as np
import pytest
from PIL import Image

from pipeline import images, placeholder
from tests.placeholder_image import SIZE, encoded, placeholder as lookalike

DARKNET = "/usr/share/darknet/data"


@pytest.fixture(scope="module")
def known():
    """The look-alike's fingerprint, as a user would put it into unavailable_fingerprints."""
    text = placeholder.fingerprint(images.decoded_image(encoded(lookalike())))
    assert text.startswith("500x374:") and len(text) == len("500x374:") + 128
    return placeholder.parse([text])


@pytest.mark.parametrize("fmt, options", [("PNG", {}), ("GIF", {}), ("JPEG", {"quality": 90}),
                                          ("JPEG", {"quality": 60}), ("WEBP", {"quality": 75})])
def test_the_placeholder_is_recognized_however_it_was_encoded(known, fmt, options):
    with pytest.raises(images.ImageError) as err:
        images.decode(encoded(lookalike(), fmt, **options), unavailable=known)
    assert err.value.reason == "unavailable"


def test_other_images_of_that_size_pass(known):
    grey = Image.new("RGB", SIZE, (225, 225, 225))     # the card without its icon and text
    shifted = Image.new("RGB", SIZE, (225, 225, 225))
    shifted.paste(lookalike().crop((0, 0, 400, 374)), (100, 0))   # the icon moved aside
    candidates = [grey, shifted, lookalike().transpose(Image.FLIP_TOP_BOTTOM)]
    for path in sorted(glob.glob(f"{DARKNET}/*.jpg"))[:4]:   # real photos, brought to the same size
        candidates.append(Image.open(path).convert("RGB").resize(SIZE))
    for image in candidates:
        assert images.decode(encoded(image), unavailable=known).shape == (224, 224, 3)


def test_size_must_match_exactly(known):
    assert images.decode(encoded(lookalike((499, 374))), unavailable=known).shape == (224, 224, 3)
    assert images.decode(encoded(lookalike()), unavailable={}).shape == (224, 224, 3)   # none configured


def test_preprocess_batch_reports_unavailable(known):
    with open(sorted(glob.glob(f"{DARKNET}/*.jpg"))[0], "rb") as f:
        photo = f.read()
    pixels, reasons = images.preprocess_batch([photo, encoded(lookalike(), "JPEG"), photo], unavailable=known)
    assert reasons == [None, "unavailable", None] and pixels.shape[0] == 2


@pytest.mark.parametrize("text", ["500x374", "500x374:abc", "big:" + "00" * 64, "500x374:" + "zz" * 64])
def test_malformed_fingerprints_are_errors(text):
    with pytest.raises(ValueError, match="fingerprint"):
        placeholder.parse([text])


def test_command_prints_a_config_line(tmp_path, capsys):
    path = tmp_path / "gone.png"
    path.write_bytes(encoded(lookalike()))
    assert placeholder.main([str(path)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith('- "500x374:') and placeholder.parse([line.split('"')[1]])
