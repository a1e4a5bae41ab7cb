"""Embedders by name: what ``imgretrieval --embedder NAME`` builds, for Python users too.

Keras (and so TensorFlow) is imported only when a Keras embedder is built.
"""

from __future__ import annotations

from typing import Any

#: What each named embedder means when a setting is left out: the image size
#: and colour it sees, and the size of its embedding (None: fixed by the network).
EMBEDDER_DEFAULTS: dict[str, dict[str, Any]] = {
    "lite0": {"size": (224, 224), "color": "rgb", "dims": None},
    "pca": {"size": (64, 64), "color": "grayscale", "dims": 64},
    "autoencoder": {"size": (64, 64), "color": "grayscale", "dims": 64},
    "vae": {"size": (64, 64), "color": "grayscale", "dims": 32},
}
#: The defaults of a keras.applications backbone given by name.
BACKBONE_DEFAULTS: dict[str, Any] = {"size": (224, 224), "color": "rgb", "dims": None}
#: Named embedders that learn from the images themselves, and so need more than one.
LEARNED_EMBEDDERS = ("autoencoder", "vae", "pca")
#: Training epochs of the learned Keras embedders when none are given.
DEFAULT_EPOCHS = 10


def embedder_defaults(name: str) -> dict[str, Any]:
    """The image size, colour and embedding size that ``name`` means when they are left out.

    Parameters
    ----------
    name : str
        ``"lite0"``, ``"pca"``, ``"autoencoder"``, ``"vae"`` or a backbone of
        :attr:`PretrainedCNNEmbedder.BACKBONES`.

    Returns
    -------
    defaults : dict
        ``size`` (height, width), ``color`` ("rgb" or "grayscale") and ``dims``.

    Examples
    --------
    >>> from sklearn_imgretrieval.embedders import embedder_defaults
    >>> embedder_defaults("pca")
    {'size': (64, 64), 'color': 'grayscale', 'dims': 64}
    """
    return dict(EMBEDDER_DEFAULTS.get(name, BACKBONE_DEFAULTS))


def make_embedder(
    name: str = "lite0",
    *,
    dims: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    random_state: int | None = 0,
):
    """The embedder a name stands for, as ``imgretrieval --embedder NAME`` builds it.

    Parameters
    ----------
    name : str, default="lite0"
        ``"lite0"``: :class:`PretrainedCNNEmbedder` with the bundled
        EfficientNet-Lite0 ImageNet weights (offline, nothing to train);
        ``"pca"``: scikit-learn's :class:`~sklearn.decomposition.PCA`;
        ``"autoencoder"`` and ``"vae"``: convolutional
        :class:`AutoencoderEmbedder` and :class:`VAEEmbedder`; any other name
        is a ``keras.applications`` backbone with ImageNet weights
        (downloaded once).
    dims : int, default=None
        Size of the embedding of pca, autoencoder and vae; None takes
        :func:`embedder_defaults`'s.
    epochs : int, default=None
        Training epochs of autoencoder and vae; None is 10.
    batch_size : int, default=None
        Images per batch through a network; None keeps the estimator's own.
    random_state : int or None, default=0
        Seed of the embedders that learn.

    Returns
    -------
    embedder : estimator
        An unfitted transformer.

    Examples
    --------
    >>> from sklearn_imgretrieval.embedders import make_embedder
    >>> make_embedder("pca", dims=16)
    PCA(n_components=16, random_state=0)
    """
    dims = embedder_defaults(name)["dims"] if dims is None else dims
    if name == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=dims, random_state=random_state)
    batch = {"batch_size": batch_size} if batch_size else {}
    if name in ("autoencoder", "vae"):
        from . import AutoencoderEmbedder, VAEEmbedder

        cls = AutoencoderEmbedder if name == "autoencoder" else VAEEmbedder
        return cls(
            architecture="conv",
            latent_dim=dims,
            epochs=epochs or DEFAULT_EPOCHS,
            random_state=random_state,
            **batch,
        )
    from . import PretrainedCNNEmbedder

    if name == "lite0":
        return PretrainedCNNEmbedder(**batch)
    return PretrainedCNNEmbedder(backbone=name, weights="imagenet", **batch)
