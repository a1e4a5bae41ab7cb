"""The index protocol every search backend implements.

A backend is a search structure over the gallery's rows: it is built on the
first rows (training what it needs), grows with ``add``, answers ``search``
(k nearest) and, where its structure allows, ``range_search`` (everything
within a radius), gives back stored rows with ``reconstruct`` and forgets
rows with ``remove``. Distances are always in the units of the user's
metric, smallest first; gallery indices count rows in the order they were
added. A backend pickles as plain data (parameters and NumPy arrays), so the
safe model format can store it.

``NearestImageRetriever`` holds one backend and adds what is the same for
all of them: input validation, labels, leave-one-out queries, graphs.
"""

import abc

import numpy as np


class SearchIndex(abc.ABC):
    """A search structure over gallery rows, in the units of one metric.

    Parameters
    ----------
    metric : str or callable
        The retriever's metric.
    params : dict
        The retriever's build settings that concern this backend.
    n_jobs : int or None
        Threads for building, as the retriever's ``n_jobs``.
    """

    #: Metrics the backend serves (``None``: any metric scikit-learn knows).
    metrics = None
    #: Whether ``range_search`` is supported.
    supports_range_search = True

    def __init__(self, metric, params, n_jobs):
        self.metric = metric
        self.params = params
        self.n_jobs = n_jobs

    @property
    @abc.abstractmethod
    def n_samples(self):
        """Number of rows stored."""

    @abc.abstractmethod
    def build(self, X):
        """Index the first rows ``X``, training what the structure needs."""

    @abc.abstractmethod
    def add(self, X):
        """Append rows; their indices continue from ``n_samples``."""

    @abc.abstractmethod
    def search(self, X, k, options):
        """``(distances, indices)`` of shape ``(len(X), k)``, nearest first.

        ``options`` holds the search-time settings, which may change between
        calls without rebuilding: ``n_jobs``, ``n_probe``, ``ef_search`` and
        ``k_factor`` (each backend reads those it has).
        """

    def range_search(self, X, radius, options):
        """Every row within ``radius`` of each query (inclusive), nearest first.

        Returns two object arrays of ``len(X)`` arrays, as scikit-learn's
        ``radius_neighbors`` does.
        """
        raise NotImplementedError

    @abc.abstractmethod
    def reconstruct(self, start, stop):
        """The stored rows ``start:stop`` (as the index sees them)."""

    @abc.abstractmethod
    def remove(self, indices):
        """Forget the rows ``indices``; later rows move down to fill the gaps."""


def sorted_ragged(distances, indices):
    """Sort each row of a ragged (object array) result by distance, stably."""
    for row, (dist, ind) in enumerate(zip(distances, indices)):
        order = np.argsort(dist, kind="stable")
        distances[row], indices[row] = dist[order], ind[order]
    return distances, indices


def ragged(parts, n_rows, dtype):
    """An object array of ``n_rows`` arrays (``np.array`` would make it 2-D if equal)."""
    out = np.empty(n_rows, dtype=object)
    for row, part in enumerate(parts):
        out[row] = np.asarray(part, dtype=dtype)
    return out
