"""Nearest-neighbour search over a gallery of embeddings.

:class:`NearestImageRetriever` is the estimator; each search backend lives
in its own private module behind the contract of ``_backend``, and
``_registry`` says which backend each ``algorithm`` names.
"""

from ._registry import resolve_algorithm
from ._retriever import NearestImageRetriever
from ._sharded import ShardedRetriever

__all__ = ["NearestImageRetriever", "ShardedRetriever", "resolve_algorithm"]
