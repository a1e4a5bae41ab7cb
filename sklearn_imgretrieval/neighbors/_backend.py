"""The contract every search backend keeps.

A backend is one search structure over the gallery's rows. It declares what
it is, as class attributes and class methods the retriever reads before
anything is built: the ``algorithm`` names that select it, its build
parameters (``Params``, a frozen dataclass whose fields are named as
:class:`~sklearn_imgretrieval.NearestImageRetriever`'s parameters), the
metrics it serves, the dtype it takes, the rows its training needs, whether
it can search within a radius and how it reports its memory. A fitted backend is built on the first rows,
grows with ``add``, forgets rows with ``remove``, answers ``search`` (k
nearest) and ``range_search`` (everything within a radius), optionally
within a subset of the rows, gives back stored rows with ``reconstruct`` and
says how much memory it holds (``nbytes``).

Distances are in the units of the user's metric, smallest first; row
numbers count rows in the order they were added. Settings that may change
between searches travel with each search (:class:`SearchSettings`), never as
state of the backend, so searches with different settings can run side by
side. A backend pickles as plain data (parameters and NumPy arrays), so the
safe model format stores it.

A new backend is one module defining a subclass, and one line in
``_registry.py``; build settings it needs beyond the existing ones are also
parameters of ``NearestImageRetriever``.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import ClassVar

import numpy as np


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """What a search may change without rebuilding: read at every call.

    Attributes
    ----------
    n_jobs : int or None
        Threads of this search.
    n_probe : int
        IVF: cells scanned per query.
    ef_search : int
        HNSW: candidate list size.
    k_factor : int
        IVF-PQ: shortlist re-ranked, in multiples of ``k``.
    """

    n_jobs: int | None = None
    n_probe: int = 8
    ef_search: int = 32
    k_factor: int = 8


@dataclasses.dataclass(frozen=True)
class NoParams:
    """A backend without build settings."""


def field_names(params_type):
    """Names of the fields of a ``Params`` dataclass."""
    return tuple(field.name for field in dataclasses.fields(params_type))


class SearchBackend(abc.ABC):
    """A search structure over gallery rows, in the units of one metric.

    Parameters
    ----------
    metric : str or callable
        The retriever's metric.
    params : Params
        The build settings, an instance of the subclass's ``Params``.
    n_jobs : int or None
        Threads for building, as the retriever's ``n_jobs``.
    """

    #: ``algorithm`` values that select this backend.
    algorithms: ClassVar[tuple[str, ...]] = ()
    #: The dataclass of build settings.
    Params: ClassVar[type] = NoParams
    #: Whether every answer is the true nearest neighbours.
    exact: ClassVar[bool] = True

    def __init__(self, metric, params, n_jobs):
        self.metric = metric
        self.params = params
        self.n_jobs = n_jobs

    # --------------------------------------------------- what it is, before fit
    @classmethod
    @abc.abstractmethod
    def serves(cls, algorithm, metric):
        """Whether ``algorithm`` (one of ``algorithms``) searches with ``metric``."""

    @classmethod
    def input_dtype(cls, metric):
        """The dtype (or dtypes, the first preferred) rows are validated to; None keeps theirs."""
        return [np.float64, np.float32]

    @classmethod
    def range_search_unsupported(cls, metric, params):
        """Why ``range_search`` does not work with these settings, or None when it does."""
        return None

    @classmethod
    def resolve_params(cls, params, n_samples):
        """``params`` with the settings left to ``"auto"`` fixed for a gallery of ``n_samples`` rows."""
        return params

    @classmethod
    def rows_to_train(cls, params, n_samples):
        """Rows the first build must see to train for a gallery of ``n_samples`` (1 if nothing is trained)."""
        return 1

    @classmethod
    def check_params(cls, params, n_rows, n_features):
        """Refuse settings the data cannot support, before anything is built."""
        return None  # every setting suits any data

    # ----------------------------------------------------------- fitted state
    @property
    @abc.abstractmethod
    def n_samples(self):
        """Number of rows stored."""

    @property
    @abc.abstractmethod
    def nbytes(self):
        """Bytes the structure holds in memory (rows, codes, graph links, position maps)."""

    @abc.abstractmethod
    def build(self, X):
        """Index the first rows ``X``, training what the structure needs."""

    @abc.abstractmethod
    def add(self, X):
        """Append rows; their numbers continue from ``n_samples``."""

    @abc.abstractmethod
    def search(self, X, k, settings, subset=None):
        """``(distances, indices)`` of shape ``(len(X), k)``, nearest first.

        ``subset`` (sorted row numbers, or None for every row) restricts
        the answers to those rows, inside the search: ``k`` answers come
        back whenever the subset holds ``k`` rows. Rows of an approximate
        index that its search misses are looked for exhaustively, so
        answers are never short.
        """

    def range_search(self, X, radius, settings, subset=None):
        """Every row within ``radius`` of each query (inclusive), nearest first.

        Returns two object arrays of ``len(X)`` arrays, as scikit-learn's
        ``radius_neighbors`` does; ``subset`` as for :meth:`search`.
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
