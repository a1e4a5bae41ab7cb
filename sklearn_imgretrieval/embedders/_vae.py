"""VAEEmbedder: a variational autoencoder whose posterior mean is the embedding."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import ArrayLike
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from .._sklearn_compat import Interval, _fit_context
from ._autoencoder import AutoencoderEmbedder, reconstruction_loss
from ._keras import import_keras
from ._seeding import spawn_seeds

if TYPE_CHECKING:
    from .._typing import RandomState

__all__ = ["VAEEmbedder"]


def summed_reconstruction_loss(loss, n_features):
    """Keras loss summing ``loss`` over an image's features (the ELBO's scale).

    Keras's mse and cross-entropy average over features; the likelihood term
    of the ELBO sums them, which keeps the balance with the KL term.
    """
    base = import_keras().losses.get(loss)

    def summed(y_true, y_pred):
        return float(n_features) * base(y_true, y_pred)

    return summed


class VAEEmbedder(AutoencoderEmbedder):
    """Embed images with the posterior mean of a variational autoencoder.

    The encoder gives each image a Gaussian posterior (mean and
    log-variance) over ``latent_dim`` dimensions; training maximises the
    evidence lower bound: reconstruction of a sample from the posterior
    minus ``beta`` times its KL divergence from the standard normal prior.
    ``transform`` returns the posterior mean, so embeddings are
    deterministic; ``sample`` decodes draws from the prior into new images.

    Parameters
    ----------
    latent_dim : int, default=32
        Size of the embedding.
    beta : float, default=1.0
        Weight of the KL term; 1 is the ELBO, lower values keep more detail
        in the embedding, higher values a smoother latent space.
    architecture : {"dense", "conv"}, default="conv"
        Dense layers, or strided convolutions (needs an image shape).
    hidden_units : tuple of int, default=(256,)
        Widths of the dense layers: the whole encoder for ``"dense"``; the
        layers between the convolutions and the latent heads for ``"conv"``.
        Mirrored in the decoder.
    filters : tuple of int, default=(32, 64)
        Conv architecture: filters of each stride-2 3x3 convolution.
    loss : {"binary_crossentropy", "mse"}, default="binary_crossentropy"
        Reconstruction likelihood, summed over pixels. Cross-entropy needs
        inputs in [0, 1].
    noise : float, default=0.0
        Standard deviation of Gaussian noise added to the training inputs
        (denoising); 0 for none.
    epochs : int, default=10
        Maximum passes over the training data.
    batch_size : int, default=128
        Images per gradient step, and per batch in ``transform``.
    learning_rate : float, default=1e-3
        Adam's learning rate.
    validation_fraction : float, default=0.1
        Fraction held out for early stopping; 0 turns early stopping off.
    early_stopping : bool, default=True
        Stop when the validation loss has not improved for ``patience``
        epochs and restore the best weights.
    patience : int, default=3
        Epochs without improvement before stopping.
    warm_start : bool, default=False
        Continue training the fitted networks on the next ``fit``.
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
        Seeds the weights, the batch order and the sampling noise.
    verbose : int, default=0
        0 is silent, 1 shows Keras's progress bar per epoch.

    Attributes
    ----------
    encoder_ : keras.Model
        Rows to ``[mean, log_var]``.
    decoder_ : keras.Model
        Latent vectors to rows.
    history_ : dict of list of float
        Per-epoch ``loss`` (and ``val_loss``): the negative ELBO per image.
    n_iter_ : int
        Epochs run.
    n_features_in_ : int
        Number of features of each input image.
    image_shape_ : tuple (H, W, C) or None
        Shape of the input images.

    See Also
    --------
    AutoencoderEmbedder : A plain autoencoder.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_imgretrieval import VAEEmbedder
    >>> images = np.random.default_rng(0).random((40, 8, 8, 1), dtype=np.float32)
    >>> vae = VAEEmbedder(latent_dim=3, epochs=2, random_state=0).fit(images)
    >>> vae.transform(images).shape
    (40, 3)
    >>> vae.sample(2, random_state=0).shape
    (2, 8, 8, 1)
    """

    _n_latent_heads = 2  # mean and log-variance
    _parameter_constraints = {
        **AutoencoderEmbedder._parameter_constraints,
        "beta": [Interval(numbers.Real, 0, None, closed="left")],
    }

    def __init__(
        self,
        latent_dim: int = 32,
        *,
        beta: float = 1.0,
        architecture: Literal["dense", "conv"] = "conv",
        hidden_units: Sequence[int] = (256,),
        filters: Sequence[int] = (32, 64),
        loss: Literal["mse", "binary_crossentropy"] = "binary_crossentropy",
        noise: float = 0.0,
        epochs: int = 10,
        batch_size: int = 128,
        learning_rate: float = 1e-3,
        validation_fraction: float = 0.1,
        early_stopping: bool = True,
        patience: int = 3,
        warm_start: bool = False,
        image_shape: Sequence[int] | None = None,
        inference: Literal["auto", "onnxruntime", "keras"] = "auto",
        n_jobs: int | None = None,
        random_state: RandomState = None,
        verbose: int = 0,
    ) -> None:
        super().__init__(
            latent_dim=latent_dim,
            architecture=architecture,
            hidden_units=hidden_units,
            filters=filters,
            loss=loss,
            noise=noise,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            validation_fraction=validation_fraction,
            early_stopping=early_stopping,
            patience=patience,
            warm_start=warm_start,
            image_shape=image_shape,
            inference=inference,
            n_jobs=n_jobs,
            random_state=random_state,
            verbose=verbose,
        )
        self.beta = beta

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: ArrayLike, y: object = None) -> VAEEmbedder:
        """Train the VAE on the images ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, H, W, C)
            Images as rows (from ImagePreprocessor) or as a 4-D array.
        y : None
            Ignored.

        Returns
        -------
        self : VAEEmbedder
            The fitted embedder.
        """
        from ._layers import GaussianSampling

        keras = import_keras()
        rows, seed, (inputs, noisy), continuing = self._start_fit(X)
        batches_seed, sampling_seed = spawn_seeds(seed, 2)
        z = GaussianSampling(self.beta, seed=sampling_seed)(self.encoder_(noisy))
        vae = keras.Model(inputs, self.decoder_(z))
        vae.compile(
            optimizer=keras.optimizers.Adam(self.learning_rate),
            loss=summed_reconstruction_loss(self.loss, rows.shape[1]),
        )
        self._fit_model(vae, rows, rows, seed=batches_seed, continuing=continuing)
        self._make_inference_graph()
        return self

    def _posterior(self, rows):
        mean, log_var = self._predict(self.encoder_, rows)
        return mean, log_var

    def _keras_embed(self, rows):
        return self._posterior(rows)[0]

    def _inference_network(self):
        keras = import_keras()
        return keras.Model(self.encoder_.input, self.encoder_.outputs[0], name="posterior_mean")

    def sample(self, n_samples: int = 1, random_state: RandomState = None) -> np.ndarray:
        """Generate images by decoding draws from the standard normal prior.

        Parameters
        ----------
        n_samples : int, default=1
            Number of images.
        random_state : int, RandomState instance or None, default=None
            Seed of the draws.

        Returns
        -------
        images : ndarray of float32, shape (n_samples, n_features) or (n_samples, H, W, C)
            Generated images, in the layout ``fit`` was given.
        """
        check_is_fitted(self)
        if not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
        z = check_random_state(random_state).standard_normal((n_samples, self.latent_dim))
        return self.inverse_transform(z.astype(np.float32))

    def score(self, X: ArrayLike, y: object = None) -> float:
        """Negative ELBO per image, evaluated at the posterior mean (higher is better).

        ``-(reconstruction + beta * KL)`` with the reconstruction loss summed
        over pixels, the objective training minimises; the posterior mean
        replaces the random draw so that the score is deterministic.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, H, W, C)
            Images.
        y : None
            Ignored.

        Returns
        -------
        score : float
            Mean over images.
        """
        check_is_fitted(self)
        rows = self._validate_input(X, reset=False)
        mean, log_var = self._posterior(rows)
        reconstruction = self._predict(self.decoder_, mean)
        recon = rows.shape[1] * reconstruction_loss(rows, reconstruction, self.loss)
        kl = -0.5 * np.sum(1.0 + log_var - mean**2 - np.exp(log_var), axis=1)
        return -float(np.mean(recon + self.beta * kl))
