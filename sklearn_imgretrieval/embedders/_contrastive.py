"""ContrastiveEmbedder: self-supervised embeddings learnt by contrasting random views (SimCLR)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import ArrayLike
from sklearn.utils.validation import check_is_fitted

from .._image_shape import infer_image_shape
from .._sklearn_compat import Interval, StrOptions, _fit_context
from . import _lite0
from ._base import KerasEmbedder, positive_int_tuple
from ._keras import import_keras
from ._seeding import seed_from, spawn_seeds

if TYPE_CHECKING:
    from .._typing import RandomState

__all__ = ["ContrastiveEmbedder"]

#: Smallest side of the images the encoder sees: below it, crops and strided
#: convolutions leave next to nothing.
MIN_SIDE = 8
#: Images per group when ``score`` matches views: a fixed number, so that
#: scores do not depend on ``batch_size``.
SCORE_GROUP = 256
_SCORE_SEED = 0


class ContrastiveEmbedder(KerasEmbedder):
    """Embed images with an encoder trained to recognise random views of each image (SimCLR).

    No labels: every training image is cropped, flipped and jittered twice
    (inside the Keras model, batch by batch), the encoder and a projection
    head map both views, and the NT-Xent loss pulls the two views of an
    image together and pushes the views of the other images in the batch
    away (Chen et al., 2020). What survives the augmentations is what the
    embedding keeps, so they define which images count as alike.
    ``transform`` returns the encoder's output, not the projection (the
    head serves training only), L2-normalised by default.

    Parameters
    ----------
    latent_dim : int or None, default=None
        Size of the embedding, the output of a linear layer ending the
        encoder. None: for ``encoder="conv"``, the encoder ends at its last
        ReLU (the flattened feature map, or the last of ``hidden_units``),
        which retrieved better than a linear layer after it in the sweep of
        docs/benchmarks.md; for ``"lite0"``, 128.
    encoder : {"conv", "lite0"}, default="conv"
        ``"conv"``: a small convolutional network trained from scratch
        (``filters``, ``pooling``, ``hidden_units``). ``"lite0"``: the frozen
        ImageNet EfficientNet-Lite0 backbone (offline weights) with a trained
        head of ``hidden_units`` then ``latent_dim``; every training step
        runs the backbone on two views of each image, which is slow on a
        CPU.
    filters : tuple of int, default=(32, 64)
        Conv encoder: filters of each stride-2 3x3 convolution (batch
        normalisation and ReLU follow each). Two halve a 28x28 image to a
        7x7 map: the embedding keeps where things are.
    pooling : {"flatten", "avg"}, default="flatten"
        Conv encoder: how the last feature map becomes a vector. Flattening
        keeps where things are in the image, averaging forgets it.
    hidden_units : tuple of int, default=()
        Dense layers (batch normalisation, ReLU) between the feature map and
        the embedding; for ``encoder="lite0"``, the head's hidden layers.
    projection_units : tuple of int, default=(256, 128)
        The projection head used for training only: ReLU layers, the last
        one linear; the loss compares its outputs.
    temperature : float, default=0.5
        Divides the cosine similarities in the NT-Xent loss; must be > 0.
        Lower values weigh the hardest negatives more.
    crop_scale : tuple of float, default=(0.6, 1.0)
        Range of the random crop's area as a fraction of the image's; the
        crop is resized back to the image's size. On Fashion-MNIST, crops
        that keep most of the object (with temperature 0.5) retrieved
        better than (0.3, 1.0) with temperature 0.2 (docs/benchmarks.md).
    crop_ratio : tuple of float, default=(0.75, 1.333)
        Range of the crop's aspect ratio (width / height).
    horizontal_flip : bool, default=True
        Mirror half of the views. Set False when left and right differ in
        meaning (text, some diagrams).
    brightness : float, default=0.6
        Brightness jitter: add a value from [-brightness, brightness] (for
        images in [0, 1]).
    contrast : float, default=0.6
        Contrast jitter: scale deviations from the image mean by a factor
        from [1 - contrast, 1 + contrast].
    saturation : float, default=0.3
        RGB images only: saturation jitter by a factor from [1 - saturation,
        1 + saturation].
    grayscale : float, default=0.2
        RGB images only: probability of a view being turned grayscale.
    input_size : int or None, default=None
        Side of the square images the encoder sees: images are resized to it
        inside the network. None keeps the images' own size for
        ``encoder="conv"`` and means 64 for ``"lite0"`` (its smallest input
        is 32).
    normalize : bool, default=True
        L2-normalise the embeddings (cosine and euclidean neighbours agree).
    epochs : int, default=15
        Passes over the training images (each sees two new random views
        of every image).
    batch_size : int, default=256
        Images per training batch (each gives two views, so every view has
        ``2 * batch_size - 2`` negatives); at least 2. Also the batch of
        ``transform``.
    learning_rate : float, default=1e-3
        Adam's initial learning rate, decayed to 0 along a cosine over the
        ``epochs``.
    validation_fraction : float, default=0.0
        Fraction held out to watch the contrastive loss on fresh views for
        early stopping; 0 trains on everything and turns early stopping off.
    early_stopping : bool, default=True
        With ``validation_fraction > 0``: stop when the validation loss has
        not improved for ``patience`` epochs and restore the best weights.
    patience : int, default=3
        Epochs without improvement before stopping.
    warm_start : bool, default=False
        Continue training the fitted networks on the next ``fit``.
    image_shape : tuple or None, default=None
        ``(height, width[, channels])`` of 2-D input rows; inferred for
        square 1- or 3-channel images, required otherwise (one side may be
        -1, as in ``numpy.reshape``).
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
    random_state : int, RandomState instance or None, default=None
        Seeds the weights, the views and the batch order: the same seed on
        the same data and backend gives the same embeddings.
    verbose : int, default=0
        0 is silent, 1 shows a progress bar with the loss per epoch, 2 one
        line per epoch.

    Attributes
    ----------
    encoder_ : keras.Model
        Rows to embeddings (before normalisation).
    n_features_out_ : int
        Size of the embeddings ``transform`` returns.
    projection_head_ : keras.Model
        Embeddings to the projections the loss compares.
    history_ : dict of list of float
        Per-epoch ``loss`` (and ``val_loss``): the NT-Xent loss.
    n_iter_ : int
        Epochs run, summed over warm-started fits.
    n_features_in_ : int
        Number of features of each input row.
    image_shape_ : tuple (H, W, C)
        Shape of the input images.

    See Also
    --------
    AutoencoderEmbedder : Embeddings that reconstruct the images.
    PretrainedCNNEmbedder : Features of an ImageNet network, no training.

    References
    ----------
    T. Chen, S. Kornblith, M. Norouzi, G. Hinton. "A Simple Framework for
    Contrastive Learning of Visual Representations", ICML 2020.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_imgretrieval import ContrastiveEmbedder
    >>> images = np.random.default_rng(0).random((64, 16, 16, 1), dtype=np.float32)
    >>> embedder = ContrastiveEmbedder(latent_dim=8, filters=(4, 8), epochs=2, batch_size=32, random_state=0)
    >>> embeddings = embedder.fit_transform(images)
    >>> embeddings.shape
    (64, 8)
    >>> bool(np.allclose(np.linalg.norm(embeddings, axis=1), 1.0))
    True
    """

    _parameter_constraints = {
        **KerasEmbedder._parameter_constraints,
        "encoder": [StrOptions({"conv", "lite0"})],
        "filters": ["array-like"],
        "pooling": [StrOptions({"flatten", "avg"})],
        "hidden_units": ["array-like"],
        "projection_units": ["array-like"],
        "temperature": [Interval(numbers.Real, 0, None, closed="neither")],
        "crop_scale": ["array-like"],
        "crop_ratio": ["array-like"],
        "horizontal_flip": ["boolean"],
        "brightness": [Interval(numbers.Real, 0, None, closed="left")],
        "contrast": [Interval(numbers.Real, 0, 1, closed="both")],
        "saturation": [Interval(numbers.Real, 0, 1, closed="both")],
        "grayscale": [Interval(numbers.Real, 0, 1, closed="both")],
        "input_size": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "normalize": ["boolean"],
        "latent_dim": [Interval(numbers.Integral, 1, None, closed="left"), None],
    }

    def __init__(
        self,
        latent_dim: int | None = None,
        *,
        encoder: Literal["conv", "lite0"] = "conv",
        filters: Sequence[int] = (32, 64),
        pooling: Literal["flatten", "avg"] = "flatten",
        hidden_units: Sequence[int] = (),
        projection_units: Sequence[int] = (256, 128),
        temperature: float = 0.5,
        crop_scale: Sequence[float] = (0.6, 1.0),
        crop_ratio: Sequence[float] = (0.75, 1.333),
        horizontal_flip: bool = True,
        brightness: float = 0.6,
        contrast: float = 0.6,
        saturation: float = 0.3,
        grayscale: float = 0.2,
        input_size: int | None = None,
        normalize: bool = True,
        epochs: int = 15,
        batch_size: int = 256,
        learning_rate: float = 1e-3,
        validation_fraction: float = 0.0,
        early_stopping: bool = True,
        patience: int = 3,
        warm_start: bool = False,
        image_shape: Sequence[int] | None = None,
        inference: Literal["auto", "onnxruntime", "keras"] = "auto",
        n_jobs: int | None = None,
        random_state: RandomState = None,
        verbose: int = 0,
    ) -> None:
        self.latent_dim = latent_dim
        self.encoder = encoder
        self.filters = filters
        self.pooling = pooling
        self.hidden_units = hidden_units
        self.projection_units = projection_units
        self.temperature = temperature
        self.crop_scale = crop_scale
        self.crop_ratio = crop_ratio
        self.horizontal_flip = horizontal_flip
        self.brightness = brightness
        self.contrast = contrast
        self.saturation = saturation
        self.grayscale = grayscale
        self.input_size = input_size
        self.normalize = normalize
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.patience = patience
        self.warm_start = warm_start
        self.image_shape = image_shape
        self.inference = inference
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose

    _keras_models = ("encoder_", "projection_head_")

    # -------------------------------------------------------------- input
    def _infer_image_shape(self, n_features):
        # Always an image, whatever the encoder: rows that are not one need image_shape.
        return infer_image_shape(n_features, self.image_shape)

    def _network_row_values(self, n_features):
        return max(n_features, math.prod(self._network_input_shape()))

    def _network_input_shape(self):
        """(side, side, C) or the image's own (H, W, C): what the encoder sees."""
        size = self.input_size
        if size is None and self.encoder == "lite0":
            size = 64
        if size is None:
            return tuple(self.image_shape_)
        return (size, size, 3 if self.encoder == "lite0" else self.image_shape_[2])

    def _check_settings(self):
        """Errors that would otherwise surface mid-training, or never."""
        if self.batch_size < 2:
            raise ValueError(
                f"batch_size={self.batch_size}: the NT-Xent loss contrasts each image's "
                "two views with the views of the other images in its batch, so a batch "
                "needs at least 2 images. Use batch_size >= 2 (256 or more works best)."
            )
        for name in ("crop_scale", "crop_ratio"):
            value = getattr(self, name)
            low, high = _range(value, name)
            if not 0 < low <= high or (name == "crop_scale" and high > 1):
                bounds = "0 < low <= high <= 1" if name == "crop_scale" else "0 < low <= high"
                raise ValueError(f"{name} must be a pair (low, high) with {bounds}, got {value!r}.")
        shape = self._network_input_shape()
        if min(shape[:2]) < MIN_SIDE:
            where = "images" if self.input_size is None else f"input_size={self.input_size} images"
            raise ValueError(
                f"The encoder would see {shape[0]}x{shape[1]} {where}; contrastive "
                f"views need at least {MIN_SIDE}x{MIN_SIDE} pixels. Give larger images "
                f"(ImagePreprocessor(size=...)) or set input_size >= {MIN_SIDE} to "
                "resize them inside the network."
            )
        if self.encoder == "lite0" and min(shape[:2]) < 32:
            raise ValueError(
                f"encoder='lite0' takes images of at least 32x32; input_size={self.input_size} is smaller."
            )
        from ._augmentation import smallest_crop_side

        side = smallest_crop_side(shape, _range(self.crop_scale), _range(self.crop_ratio))
        if side < 2:
            raise ValueError(
                f"crop_scale={tuple(self.crop_scale)!r} with crop_ratio="
                f"{tuple(self.crop_ratio)!r} can crop {side:.1f} pixels of a side of "
                f"the {shape[0]}x{shape[1]} images the encoder sees: at least 2 are "
                "needed. Raise the lower bound of crop_scale or give larger images."
            )

    # ------------------------------------------------------------ network
    def _build_models(self, seed, *, weights=None):
        """Build ``encoder_`` (rows -> embedding) and ``projection_head_``.

        ``weights`` is that of the Lite0 backbone: ``"imagenet"`` when
        fitting; unpickling builds with None and sets the stored weights.
        """
        from ._networks import build_conv_trunk, build_mlp

        keras = import_keras()
        trunk_seed, head_seed = spawn_seeds(seed, 2)
        latent_dim = 128 if self.latent_dim is None and self.encoder == "lite0" else self.latent_dim
        size_shape = self._network_input_shape()
        rows = keras.Input((self.n_features_in_,), name="rows")
        x = keras.layers.Reshape(tuple(self.image_shape_), name="images")(rows)
        if tuple(self.image_shape_[:2]) != size_shape[:2]:
            x = keras.layers.Resizing(size_shape[0], size_shape[1], name="resize")(x)
        prepare = keras.Model(rows, x, name="prepare")
        if self.encoder == "conv":
            trunk = build_conv_trunk(
                prepare.output.shape[1:],
                latent_dim,
                filters=positive_int_tuple(self.filters, "filters"),
                hidden_units=positive_int_tuple(self.hidden_units, "hidden_units", allow_empty=True),
                pooling=self.pooling,
                seed=trunk_seed,
            )
        else:
            trunk = self._lite0_trunk(prepare.output.shape[1:], latent_dim, weights, trunk_seed)
        self.encoder_ = keras.Model(rows, trunk(prepare(rows)), name="contrastive_encoder")
        self.n_features_out_ = int(self.encoder_.output.shape[-1])
        units = positive_int_tuple(self.projection_units, "projection_units")
        self.projection_head_ = build_mlp(self.n_features_out_, units, seed=head_seed, name="projection_head")

    def _lite0_trunk(self, image_shape, latent_dim, weights, seed):
        from ._layers import ImageNetPixels
        from ._networks import build_mlp

        keras = import_keras()
        backbone_seed, head_seed = spawn_seeds(seed, 2)
        views = keras.Input(tuple(image_shape), name="views")
        backbone = _lite0.lite0_network(tuple(image_shape[:2]) + (3,), weights=weights, seed=backbone_seed)
        backbone.trainable = False  # frozen: batch normalisation stays in inference mode too
        x = ImageNetPixels("symmetric", name="pixels")(views)
        x = keras.layers.GlobalAveragePooling2D()(backbone(x))
        hidden = positive_int_tuple(self.hidden_units, "hidden_units", allow_empty=True)
        head = build_mlp(x.shape[-1], hidden + (latent_dim,), seed=head_seed, name="lite0_head")
        return keras.Model(views, head(x), name="trunk")

    def _views(self, seed):
        from ._augmentation import RandomView

        return RandomView(
            crop_scale=_range(self.crop_scale),
            crop_ratio=_range(self.crop_ratio),
            horizontal_flip=self.horizontal_flip,
            brightness=self.brightness,
            contrast=self.contrast,
            saturation=self.saturation,
            grayscale=self.grayscale,
            seed=seed,
            name="random_view",
        )

    def _training_model(self, seed):
        """Rows -> two random views each -> encoder -> projection head -> NT-Xent loss."""
        from ._layers import NTXentLoss

        keras = import_keras()
        prepare, trunk = self.encoder_.get_layer("prepare"), self.encoder_.get_layer("trunk")
        rows = keras.Input((self.n_features_in_,), name="rows")
        images = prepare(rows)
        views = self._views(seed)
        both = keras.layers.Concatenate(axis=0, name="two_views")([views(images), views(images)])
        projections = self.projection_head_(trunk(both))
        return keras.Model(rows, NTXentLoss(self.temperature, name="nt_xent")(projections))

    # ------------------------------------------------------------ sklearn
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: ArrayLike, y: object = None) -> ContrastiveEmbedder:
        """Train the encoder on random views of the images ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, H, W, C)
            Images as rows (from ImagePreprocessor) or as a 4-D array; at
            least 2.
        y : None
            Ignored.

        Returns
        -------
        self : ContrastiveEmbedder
            The fitted embedder.
        """
        keras = import_keras()
        self._start_fitting()
        continuing = self._continues_training()
        rows = self._validate_input(X, reset=not continuing)
        if len(rows) < 2:
            raise ValueError(
                f"Got n_samples={len(rows)}: contrastive training needs at least 2 "
                "images, each one the other's negative."
            )
        self._check_settings()
        build_seed, view_seed, training_seed = spawn_seeds(seed_from(self.random_state), 3)
        if not continuing:
            self._build_models(build_seed, weights="imagenet")
        model = self._training_model(view_seed)
        n_train = len(rows) - int(np.ceil(len(rows) * self.validation_fraction))
        steps = self.epochs * int(np.ceil(n_train / self.batch_size))
        schedule = keras.optimizers.schedules.CosineDecay(self.learning_rate, decay_steps=steps)
        model.compile(optimizer=keras.optimizers.Adam(schedule))
        self._fit_model(model, rows, None, seed=training_seed, continuing=continuing)
        self._make_inference_graph()
        return self

    def _keras_embed(self, rows):
        return self._predict(self.encoder_, rows)

    def _inference_network(self):
        return self.encoder_

    def _finish_embeddings(self, embeddings):
        if self.normalize:
            embeddings /= np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        return embeddings

    @property
    def _n_features_out(self):
        check_is_fitted(self, "n_features_out_")
        return self.n_features_out_

    def score(self, X: ArrayLike, y: object = None) -> float:
        """How often a random view of an image finds the image's other view (higher is better).

        ``X`` is split in groups of 256 images in the given order; each image
        gets two random views (the training augmentations, drawn from a fixed
        seed, so that every call and every estimator sees the same views of
        the same images), and the score is the fraction of first views whose
        nearest second view (cosine of the embeddings) is of the same image.
        It does not depend on the temperature, the projection head or the
        batch size, so ``GridSearchCV`` can compare them.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, H, W, C)
            Images.
        y : None
            Ignored.

        Returns
        -------
        score : float
            Top-1 view-matching accuracy in [0, 1].
        """
        check_is_fitted(self)
        rows = self._validate_input(X, reset=False)
        prepare, trunk = self.encoder_.get_layer("prepare"), self.encoder_.get_layer("trunk")
        views = self._views(_SCORE_SEED)
        matched = 0
        for start in range(0, len(rows), SCORE_GROUP):
            images = prepare(rows[start : start + SCORE_GROUP], training=False)
            first, second = (
                _unit_rows(np.asarray(trunk(views(images), training=False), dtype=np.float32)) for _ in range(2)
            )
            matched += int(np.sum(np.argmax(first @ second.T, axis=1) == np.arange(len(first))))
        return matched / len(rows)


def _unit_rows(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _range(value, name="range"):
    """``(low, high)`` floats of a pair parameter."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair of numbers (low, high), got {value!r}.") from None
    return low, high
