"""pipeline.cnn: torchvision's MobileNetV2 checkpoint read without torch, rebuilt in Keras.

The reference results are ImageNet classifications of real photos shipped by packages (Debian's
darknet data, scikit-image); class names come from darknet's ImageNet lists, not from memory.
"""
import io
import os
import pickle
import shutil

import numpy as np
import pytest
import tensorflow as tf

# One TF thread each way: the machine's two cores are shared.
try:
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
except RuntimeError:  # TF already initialized by another test module in this process
    pass

import keras  # noqa: E402
from PIL import Image  # noqa: E402

from pipeline import Im2vecError, cnn, images  # noqa: E402

DARKNET = "/usr/share/darknet/data"
needs_darknet = pytest.mark.skipif(not os.path.isdir(DARKNET), reason="Debian's darknet data is not installed")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private weights cache for this module, so the first load really converts."""
    folder = tmp_path_factory.mktemp("xdg-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(folder))
        yield folder / "im2vec"


@pytest.fixture(scope="module")
def model(cache):
    return cnn.load_mobilenet_v2(include_logits=True)


@pytest.fixture(scope="module")
def state():
    return cnn.read_torch_checkpoint(cnn.default_checkpoint())


def imagenet_classes(*names: str) -> set[int]:
    """ImageNet-1k class indices by name: darknet lists the 1000 synsets first; sorted = torch order."""
    with open(f"{DARKNET}/imagenet.labels.list") as fh:
        synsets = fh.read().split()[:1000]
    with open(f"{DARKNET}/imagenet.shortnames.list") as fh:
        name_of = dict(zip(synsets, fh.read().splitlines()[:1000]))
    index = {name_of[synset]: i for i, synset in enumerate(sorted(synsets))}
    return {index[name] for name in names}


def probabilities(model, blobs: list[bytes]) -> np.ndarray:
    batch, reasons = images.preprocess_batch(blobs)
    assert reasons == [None] * len(blobs)
    features, logits = model.predict_on_batch(batch)
    assert features.shape == (len(blobs), cnn.FEATURE_DIM) and features.dtype == np.float32
    return tf.nn.softmax(logits).numpy()


def read(name: str) -> bytes:
    with open(f"{DARKNET}/{name}", "rb") as fh:
        return fh.read()


def chelsea_png() -> bytes:
    from skimage import data
    buffer = io.BytesIO()
    Image.fromarray(data.chelsea()).save(buffer, "PNG")
    return buffer.getvalue()


def test_checkpoint_reads_without_torch(state):
    assert len(state) == 314
    assert state["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert state["features.1.conv.0.0.weight"].shape == (32, 1, 3, 3)  # depthwise
    assert state["classifier.1.weight"].shape == (1000, 1280)
    assert state["features.0.1.running_var"].dtype == np.float32
    assert state["features.0.1.num_batches_tracked"].dtype == np.int64
    assert np.all(state["features.0.1.running_var"] > 0)
    assert 0.001 < np.abs(state["features.0.0.weight"]).mean() < 10  # trained, not zeros or garbage


@needs_darknet
def test_imagenet_class_names_agree_with_well_known_indices():
    assert imagenet_classes("bald eagle") == {22}
    assert imagenet_classes("Eskimo dog", "malamute", "Siberian husky") == {248, 249, 250}
    assert imagenet_classes("tabby", "tiger cat", "Egyptian cat") == {281, 282, 285}


def test_the_default_backbones_classifier_is_the_checkpoints_with_the_class_names(state):
    weight, bias, names = cnn.classifier("mobilenet_v2")
    np.testing.assert_array_equal(weight, state["classifier.1.weight"])
    np.testing.assert_array_equal(bias, state["classifier.1.bias"])
    assert weight.shape == (cnn.NUM_CLASSES, cnn.FEATURE_DIM) and len(names) == cnn.NUM_CLASSES
    assert (names[22], names[281]) == ("bald eagle", "tabby")
    assert cnn.classifier("keras:ResNet50") is None and cnn.classifier("savedmodel:/x") is None


@needs_darknet
def test_the_class_names_file_is_darknets_in_torch_order():
    _, _, names = cnn.classifier("mobilenet_v2")
    for name in ("bald eagle", "malamute", "tiger cat", "espresso"):
        assert imagenet_classes(name) == {names.index(name)}


@needs_darknet
def test_imagenet_results_on_real_photos(model):
    p = probabilities(model, [read("dog.jpg"), read("eagle.jpg"), chelsea_png()])
    dog, eagle, cat = (np.argsort(-row)[:5] for row in p)
    # dog.jpg also shows a bicycle and a truck; the dog is a husky-type sled dog.
    sled_dogs = imagenet_classes("Eskimo dog", "malamute", "Siberian husky")
    assert dog[0] in sled_dogs and len(sled_dogs & set(dog)) >= 2
    assert eagle[0] in imagenet_classes("bald eagle") and p[1, eagle[0]] > 0.5
    assert cat[0] in imagenet_classes("tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat")
    assert np.allclose(p.sum(axis=1), 1.0, atol=1e-4)


def conv2d_reference(x, weight, stride, depthwise=False):
    """Direct numpy convolution, torch semantics: zero padding 1 on every side, OIHW weights."""
    x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    kh, kw = weight.shape[2:]
    out_h = (x.shape[1] - kh) // stride + 1
    out_w = (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], out_h, out_w, weight.shape[0]), dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i:i + stride * out_h:stride, j:j + stride * out_w:stride, :]
            if depthwise:
                out += patch * weight[:, 0, i, j]
            else:
                out += patch @ weight[:, :, i, j].T
    return out


def batch_norm_reference(x, state, prefix):
    scale = state[f"{prefix}.weight"] / np.sqrt(state[f"{prefix}.running_var"] + 1e-5)
    return (x - state[f"{prefix}.running_mean"]) * scale + state[f"{prefix}.bias"]


def test_stem_and_first_depthwise_conv_match_numpy_reference(model, state):
    x = np.random.default_rng(0).standard_normal((2, 224, 224, 3)).astype(np.float32)
    # The Keras convs carry their BatchNorm folded in: compare with conv + BN from the .pth.
    probe = keras.Model(model.inputs, [model.get_layer("features.0.0").output,
                                       model.get_layer("features.1.conv.0.0").output])
    stem, depthwise = probe.predict_on_batch(x)
    expected_stem = batch_norm_reference(conv2d_reference(x, state["features.0.0.weight"], 2), state, "features.0.1")
    assert stem.shape == (2, 112, 112, 32)
    np.testing.assert_allclose(stem, expected_stem, atol=1e-3, rtol=1e-4)
    relu6 = np.clip(expected_stem, 0, 6)
    expected_depthwise = batch_norm_reference(
        conv2d_reference(relu6, state["features.1.conv.0.0.weight"], 1, depthwise=True), state, "features.1.conv.0.1")
    np.testing.assert_allclose(depthwise, expected_depthwise, atol=1e-3, rtol=1e-4)
    # Keras' 'same' padding on the stride-2 stem pads bottom/right only: it would not match.
    same = conv2d_reference(np.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))[:, 1:, 1:], state["features.0.0.weight"], 2)
    assert np.abs(batch_norm_reference(same, state, "features.0.1") - expected_stem).max() > 0.1


def test_classifier_logits_are_the_linear_layer_on_features(model, state):
    x = np.random.default_rng(1).standard_normal((2, 224, 224, 3)).astype(np.float32)
    features, logits = model.predict_on_batch(x)
    expected = features @ state["classifier.1.weight"].T + state["classifier.1.bias"]
    np.testing.assert_allclose(logits, expected, atol=1e-3, rtol=1e-4)


def test_weights_are_cached_by_checkpoint_hash(model, cache, tmp_path):
    cached = sorted(cache.glob("mobilenet_v2-*.npz"))
    assert len(cached) == 1 and cnn._sha256(cnn.default_checkpoint()) in cached[0].name
    again = cnn.load_mobilenet_v2(include_logits=True)
    for layer in model.layers:
        for original, reloaded in zip(layer.get_weights(), again.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(original, reloaded)
    # A changed file (here: trailing bytes the reader ignores) is converted again.
    changed = tmp_path / "changed.pth"
    shutil.copyfile(cnn.default_checkpoint(), changed)
    with open(changed, "ab") as fh:
        fh.write(b"\0")
    cnn.load_mobilenet_v2(checkpoint=changed)
    assert len(list(cache.glob("mobilenet_v2-*.npz"))) == 2


def test_damaged_cache_is_reconverted(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cnn.load_mobilenet_v2()
    (cached,) = (tmp_path / "im2vec").glob("*.npz")
    size = cached.stat().st_size
    for damaged in (cached.read_bytes()[: size // 2], b"not a zip"):
        cached.write_bytes(damaged)
        assert cnn.load_mobilenet_v2().output.shape == (None, cnn.FEATURE_DIM)
        assert cached.stat().st_size == size


def test_zip_and_hostile_checkpoints_fail_clearly(tmp_path):
    zipped = tmp_path / "new.pth"
    zipped.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(Im2vecError, match="zip-format"):
        cnn.read_torch_checkpoint(zipped)
    hostile = tmp_path / "hostile.pth"
    header = b"".join(pickle.dumps(x, protocol=2) for x in (cnn._LEGACY_MAGIC, 1001, {"little_endian": True}))
    hostile.write_bytes(header + b"cos\nsystem\n(S'touch pwned'\ntR.")
    with pytest.raises(Im2vecError, match="os.system"):
        cnn.read_torch_checkpoint(hostile)
    assert not os.path.exists("pwned")
    # The stem's shape (32, 3, 3, 3) pickled as BININT1s, made (64, 3, 3, 3): past its storage.
    data = cnn.default_checkpoint().read_bytes()
    assert data.count(b"K\x20K\x03K\x03K\x03t") == 1
    oversized = tmp_path / "oversized.pth"
    oversized.write_bytes(data.replace(b"K\x20K\x03K\x03K\x03t", b"K\x40K\x03K\x03K\x03t"))
    with pytest.raises(Im2vecError, match="reaching element"):
        cnn.read_torch_checkpoint(oversized)


def test_feature_model_default_is_mobilenet_v2():
    model, size, dim = cnn.feature_model({"cnn": "mobilenet_v2", "cnn_weights": ""})
    assert (size, dim) == (224, 1280) and model.output.shape == (None, 1280)
    model, size, dim = cnn.feature_model({"cnn": "mobilenet_v2", "cnn_input_size": 160})
    assert (size, dim) == (160, 1280) and model.input.shape == (None, 160, 160, 3)


@pytest.mark.parametrize("cnn_value, message", [
    ("resnet9000", "cnn: 'resnet9000' is not mobilenet_v2"), ("keras:", "is not mobilenet_v2"),
    ("keras:NoSuchNet", "keras.applications has no model 'NoSuchNet'"),
    ("keras:MobileNetV2", "needs cnn_weights"), ("savedmodel:/no/such/model", "/no/such/model does not exist")])
def test_feature_model_rejects_bad_config(cnn_value, message):
    """What the features stage's driver says before any Spark job starts (test_features.py checks that part)."""
    with pytest.raises(Im2vecError, match=message):
        cnn.feature_model({"cnn": cnn_value, "cnn_weights": ""})


def test_a_backbone_is_one_registry_entry(monkeypatch):
    """feature_model dispatches on the entry's name and hands it the argument; errors list every entry's form."""
    calls = []

    def tiny(argument, config):
        calls.append(argument)
        inputs = keras.Input((int(argument), int(argument), 3))
        return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs)), int(argument), 3

    monkeypatch.setitem(cnn.BACKBONES, "tiny", cnn.Backbone(tiny, "<side>", "a test backbone"))
    model, size, dim = cnn.feature_model({"cnn": "tiny:32"})
    assert calls == ["32"] and (size, dim) == (32, 3) and model.output.shape == (None, 3)
    with pytest.raises(Im2vecError, match=r"is not mobilenet_v2, keras:<Application>, savedmodel:<path> or tiny:<side>"):
        cnn.feature_model({"cnn": "tiny"})


def test_keras_application_gets_its_own_preprocessing(tmp_path):
    backbone = keras.applications.MobileNetV2(include_top=False, weights=None, pooling="avg",
                                              input_shape=(224, 224, 3))
    weights = tmp_path / "mobilenet_v2_notop.weights.h5"
    backbone.save_weights(weights)
    model, size, dim = cnn.feature_model({"cnn": "keras:MobileNetV2", "cnn_weights": str(weights)})
    assert (size, dim) == (224, 1280)
    pixels = np.random.default_rng(2).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    expected = backbone.predict_on_batch(pixels / 127.5 - 1.0)  # keras MobileNetV2 wants [-1, 1]
    np.testing.assert_allclose(model.predict_on_batch(images.normalize(pixels)), expected, atol=1e-4, rtol=1e-3)


def test_user_models_keras_file_and_savedmodel(tmp_path):
    inputs = keras.Input((64, 64, 3))
    features = keras.layers.Dense(8)(keras.layers.GlobalAveragePooling2D()(inputs))
    user = keras.Model(inputs, features)
    x = np.random.default_rng(3).standard_normal((2, 64, 64, 3)).astype(np.float32)
    user.save(tmp_path / "user.keras")
    user.export(str(tmp_path / "saved"), verbose=False)
    for path in (tmp_path / "user.keras", tmp_path / "saved"):
        model, size, dim = cnn.feature_model({"cnn": f"savedmodel:{path}", "cnn_weights": ""})
        assert (size, dim) == (64, 8)
        np.testing.assert_allclose(model.predict_on_batch(x), user.predict_on_batch(x), atol=1e-5)
