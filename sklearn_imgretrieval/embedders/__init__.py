"""Keras embedders: images (rows or 4-D arrays) to embeddings.

Importing this package does not import Keras: each estimator's module does,
and is loaded on first access of its name (PEP 562). Before that first
import, TensorFlow's C++ INFO lines (CPU instruction notices printed on
every start) are turned off unless ``TF_CPP_MIN_LOG_LEVEL`` is already set;
its warnings and errors still show.
"""

import importlib
import os

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
        if _EMBEDDERS[name] != "._factory":
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
        value = getattr(importlib.import_module(_EMBEDDERS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
