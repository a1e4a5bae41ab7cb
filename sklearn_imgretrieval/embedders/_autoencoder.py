"""AutoencoderEmbedder: the bottleneck of a trained autoencoder as the embedding."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import ArrayLike
from sklearn.utils.validation import check_is_fitted

from .._sklearn_compat import Interval, StrOptions, _fit_context
from ._base import KerasEmbedder, positive_int_tuple
from ._keras import import_keras
from ._seeding import seed_from, spawn_seeds

if TYPE_CHECKING:
    from .._typing import RandomState

__all__ = ["AutoencoderEmbedder"]

_EPS = 1e-7  # keeps log() finite in the cross-entropy score, as Keras clips


def reconstruction_loss(rows, reconstruction, loss):
    """Per-row mean ``"mse"`` or ``"binary_crossentropy"``, as Keras computes them."""
    if loss == "mse":
        return np.mean((rows - reconstruction) ** 2, axis=1)
    p = np.clip(reconstruction, _EPS, 1 - _EPS)
    return -np.mean(rows * np.log(p) + (1 - rows) * np.log(1 - p), axis=1)


def check_unit_range(rows, loss):
    if loss == "binary_crossentropy" and (rows.min() < 0 or rows.max() > 1):
        raise ValueError(
            'loss="binary_crossentropy" needs inputs in [0, 1], but they range over '
            f"[{rows.min():.3g}, {rows.max():.3g}]. Scale them (ImagePreprocessor "
            'gives [0, 1]) or use loss="mse".'
        )


def output_activation(rows, loss):
    """Sigmoid for images in [0, 1] (sharper reconstructions); linear otherwise."""
    if loss == "binary_crossentropy" or (rows.min() >= 0 and rows.max() <= 1):
        return "sigmoid"
    return "linear"


class AutoencoderEmbedder(KerasEmbedder):
    """Embed images with the bottleneck of an autoencoder trained on them.

    The encoder maps each image to ``latent_dim`` numbers and the decoder
    maps them back; training minimises the reconstruction error, so similar
    images get nearby embeddings. ``architecture="dense"`` treats the image
    as a vector (any rows work); ``architecture="conv"`` uses strided
    convolutions and needs an image shape (from ``image_shape``, a 4-D input,
    or square 1- or 3-channel rows).

    Parameters
    ----------
    latent_dim : int, default=64
        Size of the embedding.
    architecture : {"dense", "conv"}, default="dense"
        Dense layers, or strided convolutions with a dense bottleneck and a
        transposed-convolution decoder.
    hidden_units : tuple of int, default=(256, 128)
        Widths of the encoder's dense hidden layers (after the convolutions
        for ``"conv"``), mirrored in the decoder; ``()`` for none.
    filters : tuple of int, default=(32, 64)
        Conv architecture: filters of each stride-2 3x3 convolution, mirrored
        in the decoder.
    loss : {"mse", "binary_crossentropy"}, default="mse"
        Reconstruction loss. Cross-entropy needs inputs in [0, 1].
    noise : float, default=0.0
        Standard deviation of Gaussian noise added to the training inputs
        (a denoising autoencoder: it learns to reconstruct the clean image
        from a noisy one); 0 trains a plain autoencoder. ``transform`` and
        the validation loss always see the clean images.
    epochs : int, default=100
        Maximum passes over the training data; early stopping usually ends
        training sooner. Ten epochs left the embedding no better than raw
        pixels on digits and a Fashion-MNIST subset (docs/benchmarks.md).
    batch_size : int, default=128
        Images per gradient step, and per batch in ``transform``.
    learning_rate : float, default=1e-3
        Adam's learning rate.
    validation_fraction : float, default=0.1
        Fraction of the images held out to watch for early stopping; 0 trains
        on everything and turns early stopping off.
    early_stopping : bool, default=True
        Stop when the validation loss has not improved for ``patience``
        epochs and restore the weights of the best epoch.
    patience : int, default=10
        Epochs without improvement before stopping.
    warm_start : bool, default=False
        Continue training the fitted networks on the next ``fit`` instead of
        starting afresh (with a new optimiser state).
    image_shape : tuple or None, default=None
        ``(height, width[, channels])`` of 2-D input rows (conv only).
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
        Seeds the initial weights and the batch order: the same seed on the
        same data and backend gives the same embeddings.
    verbose : int, default=0
        0 is silent, 1 shows Keras's progress bar per epoch.

    Attributes
    ----------
    encoder_ : keras.Model
        Rows to embeddings.
    decoder_ : keras.Model
        Embeddings to rows.
    history_ : dict of list of float
        Per-epoch ``loss`` (and ``val_loss``), as Keras reports them.
    n_iter_ : int
        Epochs run, summed over warm-started fits.
    n_features_in_ : int
        Number of features (pixels times channels) of each input image.
    image_shape_ : tuple (H, W, C) or None
        Shape of the input images, None for dense rows of no known shape.

    See Also
    --------
    VAEEmbedder : A variational autoencoder, which also generates images.
    PretrainedCNNEmbedder : Features of an ImageNet network, no training.
    sklearn.decomposition.PCA : The linear baseline.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_imgretrieval import AutoencoderEmbedder
    >>> images = np.random.default_rng(0).random((40, 8, 8, 1), dtype=np.float32)
    >>> embedder = AutoencoderEmbedder(architecture="conv", latent_dim=4, epochs=2, random_state=0)
    >>> embedder.fit_transform(images).shape
    (40, 4)
    >>> embedder.inverse_transform(embedder.transform(images[:2])).shape
    (2, 8, 8, 1)
    """

    _parameter_constraints = {
        **KerasEmbedder._parameter_constraints,
        "architecture": [StrOptions({"dense", "conv"})],
        "hidden_units": ["array-like"],
        "filters": ["array-like"],
        "loss": [StrOptions({"mse", "binary_crossentropy"})],
        "noise": [Interval(numbers.Real, 0, None, closed="left")],
    }

    def __init__(
        self,
        latent_dim: int = 64,
        *,
        architecture: Literal["dense", "conv"] = "dense",
        hidden_units: Sequence[int] = (256, 128),
        filters: Sequence[int] = (32, 64),
        loss: Literal["mse", "binary_crossentropy"] = "mse",
        noise: float = 0.0,
        epochs: int = 100,
        batch_size: int = 128,
        learning_rate: float = 1e-3,
        validation_fraction: float = 0.1,
        early_stopping: bool = True,
        patience: int = 10,
        warm_start: bool = False,
        image_shape: Sequence[int] | None = None,
        inference: Literal["auto", "onnxruntime", "keras"] = "auto",
        n_jobs: int | None = None,
        random_state: RandomState = None,
        verbose: int = 0,
    ) -> None:
        self.latent_dim = latent_dim
        self.architecture = architecture
        self.hidden_units = hidden_units
        self.filters = filters
        self.loss = loss
        self.noise = noise
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

    _keras_models = ("encoder_", "decoder_")
    _n_latent_heads = 1  # the VAE's encoder gives a mean and a log-variance

    def _build_models(self, seed):
        from ._networks import build_decoder, build_encoder

        encoder_seed, decoder_seed = spawn_seeds(seed, 2)
        spec = dict(
            architecture=self.architecture,
            hidden_units=positive_int_tuple(self.hidden_units, "hidden_units", allow_empty=True),
            filters=positive_int_tuple(self.filters, "filters"),
            image_shape=self.image_shape_,
        )
        self.encoder_ = build_encoder(
            self.n_features_in_, self.latent_dim, n_heads=self._n_latent_heads, seed=encoder_seed, **spec
        )
        self.decoder_ = build_decoder(
            self.latent_dim,
            self.n_features_in_,
            output_activation=self._output_activation,
            seed=decoder_seed,
            **spec,
        )

    def _start_fit(self, X):
        """Validate ``X`` and build the networks unless a warm start continues.

        Returns the float32 rows, the seed of the training loop, the
        training model's input (with the input noise layer) and whether the
        fit continues the previous one.
        """
        keras = import_keras()
        self._start_fitting()
        continuing = self._continues_training()
        rows = self._validate_input(X, reset=not continuing)
        self._check_latent_dim(rows.shape[1])
        check_unit_range(rows, self.loss)
        build_seed, training_seed, noise_seed = spawn_seeds(seed_from(self.random_state), 3)
        if not continuing:
            self._output_activation = output_activation(rows, self.loss)
            self._build_models(build_seed)
        inputs = keras.Input((rows.shape[1],))
        noisy = keras.layers.GaussianNoise(self.noise, seed=noise_seed)(inputs) if self.noise else inputs
        return rows, training_seed, (inputs, noisy), continuing

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: ArrayLike, y: object = None) -> AutoencoderEmbedder:
        """Train the autoencoder on the images ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, H, W, C)
            Images as rows (from ImagePreprocessor) or as a 4-D array.
        y : None
            Ignored.

        Returns
        -------
        self : AutoencoderEmbedder
            The fitted embedder.
        """
        rows, seed, (inputs, noisy), continuing = self._start_fit(X)
        keras = import_keras()
        autoencoder = keras.Model(inputs, self.decoder_(self.encoder_(noisy)))
        autoencoder.compile(optimizer=keras.optimizers.Adam(self.learning_rate), loss=self.loss)
        self._fit_model(autoencoder, rows, rows, seed=seed, continuing=continuing)
        self._make_inference_graph()
        return self

    def _keras_embed(self, rows):
        return self._predict(self.encoder_, rows)

    def _inference_network(self):
        return self.encoder_

    def score(self, X: ArrayLike, y: object = None) -> float:
        """Negative mean reconstruction loss of ``X`` (higher is better).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, H, W, C)
            Images.
        y : None
            Ignored.

        Returns
        -------
        score : float
            Minus the training loss (``loss``) averaged over images and pixels.
        """
        check_is_fitted(self)
        rows = self._validate_input(X, reset=False)
        # On Keras throughout, as training computed the loss: the decoder has no exported graph.
        reconstruction = self._predict(self.decoder_, self._keras_embed(rows))
        return -float(np.mean(reconstruction_loss(rows, reconstruction, self.loss)))

    def inverse_transform(self, X: ArrayLike) -> np.ndarray:
        """Decode embeddings back to images, in the layout ``fit`` was given.

        Parameters
        ----------
        X : array-like of shape (n_samples, latent_dim)
            Embeddings, for example from ``transform``.

        Returns
        -------
        images : ndarray of float32, shape (n_samples, n_features) or (n_samples, H, W, C)
            Decoded rows, or images if ``fit`` was given a 4-D array.
        """
        check_is_fitted(self)
        return self._as_input_layout(self._predict(self.decoder_, self._check_embeddings(X)))
