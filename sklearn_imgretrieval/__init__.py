"""Content-based image retrieval as scikit-learn estimators.

Importing the package is cheap: the Keras embedders (and so TensorFlow) are
imported only when one of them is first used, so that the command line and
pure-scikit-learn pipelines start fast.
"""

import importlib
import importlib.util

from ._version import __version__
from .neighbors import NearestImageRetriever
from .pipeline import RetrievalPipeline, make_retrieval_pipeline
from .preprocessing import ImagePreprocessor

# Public names whose modules import Keras, resolved on first access (PEP 562).
_LAZY = {
    "AutoencoderEmbedder": "sklearn_imgretrieval.embedders.autoencoder",
    "VAEEmbedder": "sklearn_imgretrieval.embedders.vae",
    "PretrainedCNNEmbedder": "sklearn_imgretrieval.embedders.pretrained",
}

__all__ = [
    "ImagePreprocessor",
    "NearestImageRetriever",
    "RetrievalPipeline",
    "make_retrieval_pipeline",
    "__version__",
]


def _available_lazy_names():
    """Lazy names whose module exists in this checkout."""
    return [
        name
        for name, module in _LAZY.items()
        if importlib.util.find_spec(module) is not None
    ]


__all__ += _available_lazy_names()


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
