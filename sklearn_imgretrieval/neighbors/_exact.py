"""scikit-learn's exact search (brute force, KD-tree, ball tree) behind the index protocol.

Any metric scikit-learn knows, a callable, or ``"precomputed"``. Its brute
force computes distances in chunks of ``sklearn.set_config(working_memory=...)``
so no query x gallery matrix is held whole.
"""

import numpy as np
from sklearn.neighbors import NearestNeighbors

from ._index import SearchIndex, sorted_ragged


class ScikitLearnIndex(SearchIndex):
    """``sklearn.neighbors.NearestNeighbors`` over the gallery rows.

    ``params["algorithm"]`` is scikit-learn's: "auto", "brute", "kd_tree" or
    "ball_tree". Adding or removing rows refits on the new gallery: these
    structures have no incremental update, and refitting brute force is free.
    """

    def __init__(self, metric, params, n_jobs):
        super().__init__(metric, params, n_jobs)
        self._rows = None
        self._search = None

    @property
    def n_samples(self):
        return len(self._rows)

    def _fit(self, rows):
        self._rows = rows
        self._search = NearestNeighbors(
            algorithm=self.params["algorithm"],
            metric=self.metric,
            metric_params=self.params.get("metric_params"),
            n_jobs=self.n_jobs,
        ).fit(rows)

    def build(self, X):
        self._fit(X)

    def add(self, X):
        self._fit(np.concatenate([self._rows, X.astype(self._rows.dtype, copy=False)]))

    def remove(self, indices):
        self._fit(np.delete(self._rows, indices, axis=0))

    def search(self, X, k, options):
        self._search.n_jobs = options["n_jobs"]
        distances, indices = self._search.kneighbors(X, n_neighbors=k)
        return distances.astype(np.float64, copy=False), indices

    def range_search(self, X, radius, options):
        self._search.n_jobs = options["n_jobs"]
        distances, indices = self._search.radius_neighbors(X, radius=radius)
        return sorted_ragged(distances, indices)

    def reconstruct(self, start, stop):
        return self._rows[start:stop]

    def __getstate__(self):
        # The gallery and the settings: the tree is rebuilt on load.
        return {"metric": self.metric, "params": self.params, "n_jobs": self.n_jobs, "rows": self._rows}

    def __setstate__(self, state):
        self.__init__(state["metric"], state["params"], state["n_jobs"])
        self._fit(state["rows"])
