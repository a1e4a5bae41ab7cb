"""Keras embedders: images (rows or 4-D arrays) to embeddings.

Importing this package does not import Keras: each estimator's module does,
and is loaded on first access of its name (PEP 562).
"""

import importlib

# public name -> private module defining it
_EMBEDDERS = {
    "AutoencoderEmbedder": "._autoencoder",
    "ContrastiveEmbedder": "._contrastive",
    "VAEEmbedder": "._vae",
    "PretrainedCNNEmbedder": "._pretrained",
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
