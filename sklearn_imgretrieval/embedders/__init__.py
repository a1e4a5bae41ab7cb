"""Keras embedders: images (rows or 4-D arrays) to embeddings.

Importing this package, or a fitted embedder from a file, does not import
Keras: it is imported (through ``_keras.import_keras``, which also keeps
TensorFlow's start-up notices off stderr) only when a network is built,
trained or run on Keras. Each estimator's module is loaded on first access
of its name (PEP 562).
"""

import importlib

# public name -> private module defining it
_EMBEDDERS = {
    "AutoencoderEmbedder": "._autoencoder",
    "ContrastiveEmbedder": "._contrastive",
    "VAEEmbedder": "._vae",
    "PretrainedCNNEmbedder": "._pretrained",
    # embedders by name; Keras is imported only when a Keras embedder is built
    "DEFAULT_EPOCHS": "._factory",
    "LEARNED_EMBEDDERS": "._factory",
    "embedder_defaults": "._factory",
    "make_embedder": "._factory",
}

__all__ = sorted(_EMBEDDERS)


def __getattr__(name):
    if name in _EMBEDDERS:
        value = getattr(importlib.import_module(_EMBEDDERS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
