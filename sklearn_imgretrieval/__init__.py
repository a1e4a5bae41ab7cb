"""Content-based image retrieval as scikit-learn estimators.

Public names are resolved on first access (PEP 562), so ``import
sklearn_imgretrieval`` costs almost nothing: scikit-learn is imported with
the first estimator used and Keras (and so TensorFlow) only when a Keras
embedder builds, trains or runs a network on Keras; a fitted embedder that
runs on ONNX Runtime never imports it. The ``imgretrieval`` command relies
on this to start fast.
"""

import importlib

from ._version import __version__

# public name -> module defining it
_PUBLIC = {
    "ImagePreprocessor": "sklearn_imgretrieval.preprocessing",
    "ImageHasher": "sklearn_imgretrieval.hashing",
    "AutoencoderEmbedder": "sklearn_imgretrieval.embedders",
    "ContrastiveEmbedder": "sklearn_imgretrieval.embedders",
    "VAEEmbedder": "sklearn_imgretrieval.embedders",
    "PretrainedCNNEmbedder": "sklearn_imgretrieval.embedders",
    "NearestImageRetriever": "sklearn_imgretrieval.neighbors",
    "ShardedRetriever": "sklearn_imgretrieval.neighbors",
    "RetrievalPipeline": "sklearn_imgretrieval.pipeline",
    "make_retrieval_pipeline": "sklearn_imgretrieval.pipeline",
    "save": "sklearn_imgretrieval.persistence",
    "load": "sklearn_imgretrieval.persistence",
    "find_duplicates": "sklearn_imgretrieval.duplicates",
}

__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
