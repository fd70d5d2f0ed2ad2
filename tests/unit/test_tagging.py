"""`im2vec tag` over a folder of real images with unusable ones among them: every usable image is
tagged as if it were alone, every other input answers why. The run root holds a real model file
(a Keras projection of MobileNetV2's 1280-d features, not trained), its vocabulary and words.kv;
the images go through the real CNN."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline import cli, images, query, storage, tagging

TAGS = ["cat", "dog", "cup", "rocket", "person", "coffee"]
D, d = 1280, 8


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A run root with vocab/, model/ and wordvec/words.kv (no features/: photo ids have none)."""
    import keras
    from gensim.models import KeyedVectors

    base = tmp_path_factory.mktemp("tag")
    root = "file://" + str(base)
    rng = np.random.default_rng(7)
    (base / "vocab").mkdir()
    pq.write_table(pa.table({"tag_id": pa.array(range(len(TAGS)), pa.int32()), "tag": TAGS}),
                   base / "vocab" / "part-0.parquet")
    storage.write_text(storage.join(root, "vocab", "_manifest.json"), "{}")
    (base / "model").mkdir()
    np.save(base / "model" / "tag_vectors.npy", rng.normal(size=(len(TAGS), d)).astype(np.float32))
    np.save(base / "model" / "tag_bias.npy", np.zeros(len(TAGS), np.float32))
    keras.Sequential([keras.Input((D,)), keras.layers.Dense(d)]).save(str(base / "model" / "projection.keras"))
    words = KeyedVectors(d)
    words.add_vectors(["kitten", "mug"], rng.normal(size=(2, d)).astype(np.float32))
    (base / "wordvec").mkdir()
    words.save(str(base / "wordvec" / "words.kv"))
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder of scikit-image's photos, an icon under min_side, a text file named .jpg, a text
    file and a subfolder (both not images: left out)."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(data.chelsea()).save(folder / "chelsea.png")
    Image.fromarray(data.astronaut()).save(folder / "astronaut.JPG", quality=90)
    Image.fromarray(data.coffee()).save(folder / "coffee.jpg", quality=90)
    Image.new("RGB", (16, 16), "red").save(folder / "icon.png")
    (folder / "notes.jpg").write_text("not a picture\n")
    (folder / "README.txt").write_text("photos for the test\n")
    (folder / "sub").mkdir()
    Image.fromarray(data.chelsea()).save(folder / "sub" / "nested.png")
    return folder


def test_expand_inputs_lists_a_folders_image_files_sorted(photos, tmp_path):
    (tmp_path / "empty").mkdir()
    names = tagging.expand_inputs([str(photos / "coffee.jpg"), str(photos), "123", str(tmp_path / "empty")])
    assert names == [str(photos / n) for n in ("coffee.jpg", "astronaut.JPG", "chelsea.png", "icon.png", "notes.jpg")] \
        + ["123", str(tmp_path / "empty")]


def test_a_folder_with_unusable_inputs_still_tags_the_rest(root, photos, tmp_path, capsys):
    missing = str(tmp_path / "gone.jpg")
    assert cli.main(["tag", "--root", root, "--k", "3", "--json", str(photos), missing, "4242"]) == 1
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert list(out) == [str(photos / n) for n in ("astronaut.JPG", "chelsea.png", "coffee.jpg", "icon.png",
                                                   "notes.jpg")] + [missing, "4242"]
    assert {name: entry["error"] for name, entry in out.items() if isinstance(entry, dict)} == {
        str(photos / "icon.png"): "too_small", str(photos / "notes.jpg"): "not_an_image",
        missing: "not_found", "4242": "no_features"}
    assert out[str(photos / "icon.png")]["detail"] == f"16x16 px, the short side must be >= {images.MIN_SIDE}"
    assert "features" in out["4242"]["detail"]
    assert "4 of 7 inputs could not be tagged" in captured.err
    # Each usable image gets the tags and scores it gets when tagged alone.
    for name in ("astronaut.JPG", "chelsea.png", "coffee.jpg"):
        ranked = out[str(photos / name)]
        assert len(ranked) == 3 and {r["tag"] for r in ranked} <= set(TAGS)
        alone = tagging.tag_inputs(root, [str(photos / name)], k=3)[str(photos / name)]
        assert [r["tag"] for r in ranked] == [t for t, _ in alone]
        assert np.allclose([r["score"] for r in ranked], [s for _, s in alone], atol=1e-3)
    assert out[str(photos / "chelsea.png")] != out[str(photos / "coffee.jpg")]


def test_features_match_the_batch_the_features_stage_would_make(root, photos):
    from pipeline import cnn

    paths = [str(photos / n) for n in ("chelsea.png", "icon.png", "coffee.jpg")]
    features, errors = tagging.image_features(root, paths)
    assert list(features) == [paths[0], paths[2]] and list(errors) == [paths[1]]
    network, size, dim = cnn.feature_model({"cnn": "mobilenet_v2"})
    pixels, reasons = images.preprocess_batch([open(p, "rb").read() for p in paths], size)
    assert reasons == [None, "too_small", None]
    expected = np.asarray(network.predict_on_batch(pixels)).astype(np.float16).astype(np.float32)
    assert features[paths[0]].shape == (dim,)
    assert np.allclose(np.stack([features[paths[0]], features[paths[2]]]), expected, atol=2e-3)


def test_text_output_says_why_and_exit_2_when_nothing_can_be_tagged(root, photos, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    inputs = [str(photos / "icon.png"), str(tmp_path / "empty"), "not-a-file"]
    assert cli.main(["tag", "--root", root, *inputs]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert lines == [inputs[0], f"  error: too_small: 16x16 px, the short side must be >= {images.MIN_SIDE}",
                     inputs[1], f"  error: no_images: no file ending in {', '.join(tagging.IMAGE_SUFFIXES)} in the folder",
                     inputs[2], "  error: not_found: no such file or folder, and not a photo id"]
    assert cli.main(["tag", "--root", root, "--k", "2", str(photos / "coffee.jpg")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(photos / "coffee.jpg") and len(lines) == 3 and lines[1].split()[0] == "1"


def test_any_word_and_a_missing_model_are_still_whole_call_errors(root, photos, tmp_path, capsys):
    ranked = tagging.tag_inputs(root, [str(photos / "coffee.jpg"), str(photos / "notes.jpg")], k=len(TAGS) + 2,
                                any_word=True)
    tags = [t for t, _ in ranked[str(photos / "coffee.jpg")]]
    assert {"kitten", "mug"} <= set(tags) and isinstance(ranked[str(photos / "notes.jpg")], tagging.InputError)
    assert cli.main(["tag", "--root", "file://" + str(tmp_path), str(photos / "coffee.jpg")]) == 2
    assert "im2vec train" in capsys.readouterr().err
    model = query.load_model(root)
    assert tagging.rank_tags_of(model, [], 3, False) == []
