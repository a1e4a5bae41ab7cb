"""Nearest-neighbour search over a gallery of embeddings.

:class:`NearestImageRetriever` is the estimator; each search backend lives
in its own private module behind the small index protocol of ``_index``.
"""

from ._retriever import NearestImageRetriever

__all__ = ["NearestImageRetriever"]
