"""scikit-learn's search (brute force, KD-tree, ball tree) behind the backend contract.

Any metric scikit-learn knows, a callable, or ``"precomputed"``. Its brute
force computes distances in chunks of ``sklearn.set_config(working_memory=...)``
so no query x gallery matrix is held whole.
"""

from __future__ import annotations

import copy
import dataclasses
from itertools import chain
from typing import Any

import numpy as np
from sklearn.neighbors import VALID_METRICS, NearestNeighbors

from ._backend import SearchBackend, sorted_ragged

#: Metrics of packed bit codes: only FAISS's binary indexes serve them.
_BINARY_METRICS = frozenset({"hamming"})
_METRICS = {
    algorithm: frozenset(VALID_METRICS[algorithm]) - _BINARY_METRICS for algorithm in ("brute", "kd_tree", "ball_tree")
}
_METRICS["auto"] = frozenset(chain.from_iterable(VALID_METRICS.values())) - _BINARY_METRICS
#: Every metric name scikit-learn's search takes here.
SKLEARN_METRICS = _METRICS["auto"]


@dataclasses.dataclass(frozen=True)
class ScikitLearnParams:
    """Build settings of :class:`ScikitLearnBackend`.

    Attributes
    ----------
    algorithm : {"auto", "brute", "kd_tree", "ball_tree"}
        scikit-learn's search structure.
    metric_params : dict or None
        Keyword arguments of the metric.
    """

    algorithm: str = "auto"
    metric_params: dict[str, Any] | None = None


class ScikitLearnBackend(SearchBackend):
    """``sklearn.neighbors.NearestNeighbors`` over the gallery rows.

    Adding or removing rows refits on the new gallery: these structures have
    no incremental update, and refitting brute force is free. A subset is
    searched by a structure fitted on its rows alone.
    """

    algorithms = ("auto", "brute", "kd_tree", "ball_tree")
    Params = ScikitLearnParams

    def __init__(self, metric, params, n_jobs):
        super().__init__(metric, params, n_jobs)
        self._rows = None
        self._neighbors = None

    @classmethod
    def serves(cls, algorithm, metric):
        return callable(metric) or metric == "precomputed" or metric in _METRICS[algorithm]

    @property
    def n_samples(self):
        return len(self._rows)

    @property
    def nbytes(self):
        held = [self._rows]
        tree = getattr(self._neighbors, "_tree", None)
        if tree is not None:  # a KD or ball tree keeps its own (float64) copy of the rows
            held.extend(tree.get_arrays())
        unique = []
        for array in held:
            if not any(np.shares_memory(array, seen) for seen in unique):
                unique.append(array)
        return int(sum(array.nbytes for array in unique))

    def _fitted(self, rows, algorithm=None):
        return NearestNeighbors(
            algorithm=algorithm or self.params.algorithm,
            metric=self.metric,
            metric_params=self.params.metric_params,
            n_jobs=self.n_jobs,
        ).fit(rows)

    def _fit(self, rows):
        self._rows = rows
        self._neighbors = self._fitted(rows)

    def build(self, X):
        self._fit(X)

    def add(self, X):
        self._fit(np.concatenate([self._rows, X.astype(self._rows.dtype, copy=False)]))

    def remove(self, indices):
        self._fit(np.delete(self._rows, indices, axis=0))

    def _searcher(self, settings, subset):
        """The fitted structure to search (over ``subset`` alone, when given), with this search's threads.

        A shallow copy carries the threads, so the structure itself never
        changes and searches with other settings can run meanwhile.
        """
        if subset is None:
            searcher = copy.copy(self._neighbors)
        elif self.metric == "precomputed":
            raise ValueError("A precomputed distance matrix cannot be searched within a subset of its columns.")
        else:
            # Brute force over a small subset is cheaper than building a tree for it.
            searcher = self._fitted(self._rows[subset], algorithm="brute" if len(subset) < 4096 else None)
        searcher.n_jobs = settings.n_jobs
        return searcher

    def search(self, X, k, settings, subset=None):
        distances, indices = self._searcher(settings, subset).kneighbors(X, n_neighbors=k)
        if subset is not None:
            indices = subset[indices]
        return distances.astype(np.float64, copy=False), indices

    def range_search(self, X, radius, settings, subset=None):
        distances, indices = self._searcher(settings, subset).radius_neighbors(X, radius=radius)
        if subset is not None:
            for row, found in enumerate(indices):
                indices[row] = subset[found]
        return sorted_ragged(distances, indices)

    def reconstruct(self, start, stop):
        return self._rows[start:stop]

    def __getstate__(self):
        # The gallery and the settings: the tree is rebuilt on load.
        return {
            "metric": self.metric,
            "params": dataclasses.asdict(self.params),
            "n_jobs": self.n_jobs,
            "rows": self._rows,
        }

    def __setstate__(self, state):
        self.__init__(state["metric"], ScikitLearnParams(**state["params"]), state["n_jobs"])
        self._fit(state["rows"])
