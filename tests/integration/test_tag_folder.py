"""`im2vec tag` on a folder of 200 photos, one of them an icon under min_side, and on a mix of
unusable inputs, against the shared trained openclipart run of conftest.py."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import cli, images, query, tagging
from tests.integration.conftest import needs_openclipart

pytestmark = [pytest.mark.slow, needs_openclipart]
DARKNET = sorted(Path("/usr/share/darknet/data").glob("*.jpg"))[:2]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """199 photos (crops of scikit-image's photos, 256 px and up) and one 20 px icon, as JPEG and PNG."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    sources = [data.chelsea(), data.astronaut(), data.coffee(), data.rocket(), np.asarray(data.camera()),
               data.immunohistochemistry()]
    rng = np.random.default_rng(11)
    for i in range(199):
        photo = sources[i % len(sources)]
        side = int(rng.integers(256, min(photo.shape[:2]) + 1))
        top, left = (int(rng.integers(0, photo.shape[axis] - side + 1)) for axis in (0, 1))
        crop = Image.fromarray(photo[top:top + side, left:left + side])
        crop.save(folder / f"photo{i:03d}.{'png' if i % 3 == 0 else 'jpg'}", **({} if i % 3 == 0 else {"quality": 90}))
    Image.new("RGB", (20, 20), "white").save(folder / "photo100x.png")
    return folder


def test_one_small_image_among_200_costs_one_answer(trained, folder, capsys):
    root = trained["root"]
    assert cli.main(["tag", "--root", root, "--k", "5", "--json", str(folder)]) == 1
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert list(out) == sorted(str(p) for p in folder.iterdir()) and len(out) == 200
    icon = str(folder / "photo100x.png")
    assert out.pop(icon) == {"error": "too_small",
                             "detail": f"20x20 px, the short side must be >= {images.MIN_SIDE}"}
    model = query.load_model(root)
    for ranked in out.values():
        assert len(ranked) == 5 and {r["tag"] for r in ranked} <= set(model.tags)
        scores = [r["score"] for r in ranked]
        assert scores == sorted(scores, reverse=True)
    assert len({tuple(r["tag"] for r in ranked) for ranked in out.values()}) > 10, "different photos, different tags"
    assert "1 of 200 inputs could not be tagged" in captured.err
    # Across batches of the CNN (TAG_BATCH), an image is tagged as it is alone.
    for name in [sorted(out)[i] for i in (0, tagging.TAG_BATCH, 150)]:
        alone = tagging.tag_inputs(root, [name], k=5)[name]
        assert [r["tag"] for r in out[name]] == [t for t, _ in alone]
        assert np.allclose([r["score"] for r in out[name]], [s for _, s in alone], atol=1e-3)


def test_files_folders_and_photo_ids_that_cannot_be_tagged(trained, tmp_path, capsys):
    root = trained["root"]
    photo_id = str(query.load_index(root).photo_ids[0])
    (tmp_path / "notes.jpg").write_text("a text file with an image's name\n")
    (tmp_path / "empty").mkdir()
    for photo in DARKNET:
        shutil.copy(photo, tmp_path / photo.name)
    unknown_id = "1"   # photo ids are 62-bit hashes of paths: 1 is not one of them
    inputs = [str(tmp_path / "notes.jpg"), str(tmp_path / "missing.png"), str(tmp_path / "empty"), unknown_id,
              photo_id, *(str(tmp_path / p.name) for p in DARKNET)]
    assert cli.main(["tag", "--root", root, "--json", *inputs]) == 1
    out = json.loads(capsys.readouterr().out)
    assert list(out) == inputs
    assert [out[name]["error"] for name in inputs[:4]] == ["not_an_image", "not_found", "no_images", "no_features"]
    assert all(len(out[name]) == 5 for name in inputs[4:])
    assert cli.main(["tag", "--root", root, "--json", photo_id]) == 0
    assert json.loads(capsys.readouterr().out)[photo_id] == out[photo_id]
    assert cli.main(["tag", "--root", root, *inputs[:4]]) == 2
    text = capsys.readouterr().out
    assert text.count("  error: ") == 4 and "  error: no_features: photo id not in " in text
