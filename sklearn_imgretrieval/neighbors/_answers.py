"""What every retriever answers from its neighbours: graphs, predictions, scores, and the checks they share.

:class:`NearestImageRetriever` and :class:`ShardedRetriever` find
neighbours each their own way (``kneighbors``, ``radius_neighbors``); the
answers built from them are the same and live here, once.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike
from sklearn.utils.validation import check_is_fitted, column_or_1d

from ..metrics import majority_vote, precision_at_k


def label_kind(labels):
    """ "text" or "number", for telling query and gallery labels apart."""
    kind = labels.dtype.kind
    if kind == "O" and len(labels):
        kinds = {"text" if isinstance(v, (str, bytes)) else "number" for v in labels}
        return kinds.pop() if len(kinds) == 1 else "mixed"
    return "text" if kind in "USO" else "number"


def check_labels(y, what):
    """Labels as a 1-D array with no missing values."""
    y = column_or_1d(y, warn=True)
    if y.dtype.kind == "O" and any(v is None for v in y):
        raise ValueError(f"{what} contain None; every item needs a label. Drop unlabelled items or give them one.")
    if y.dtype.kind == "f" and np.isnan(y).any():
        raise ValueError(f"{what} contain NaN; every item needs a label. Drop unlabelled items or give them one.")
    if label_kind(y) == "mixed":
        raise ValueError(f"{what} mix text and numbers; use one type for every label.")
    return y


def _check_mode(mode):
    if mode not in ("connectivity", "distance"):
        raise ValueError(f'mode must be "connectivity" or "distance", got {mode!r}.')


class NeighborsAnswers:
    """Graphs, ``transform``, ``predict`` and ``score`` from ``kneighbors``.

    A subclass provides ``kneighbors``, ``radius_neighbors``,
    ``_check_n_neighbors``, and the attributes ``n_neighbors``, ``mode``,
    ``n_samples_fit_`` and ``gallery_labels_``.
    """

    def _check_subset(self, subset):
        """``subset`` as sorted unique row numbers (None: every row).

        A boolean mask over the gallery's rows, or row numbers in any order.
        """
        if subset is None:
            return None
        subset = np.asarray(subset)
        if subset.dtype == bool:
            if subset.shape != (self.n_samples_fit_,):
                raise ValueError(
                    f"A boolean subset is a mask over the gallery's {self.n_samples_fit_} rows; got shape "
                    f"{subset.shape}. Give one value per gallery row, or the row numbers themselves."
                )
            return np.flatnonzero(subset)
        if subset.ndim != 1 or (subset.size and subset.dtype.kind not in "iu"):
            raise ValueError(
                f"subset must be a boolean mask over the gallery's rows or a 1-D array of row numbers; got an array "
                f"of {subset.dtype} with shape {subset.shape}."
            )
        rows = np.unique(subset.astype(np.int64))
        if len(rows) and (rows[0] < 0 or rows[-1] >= self.n_samples_fit_):
            raise ValueError(
                f"subset's row numbers must be in [0, {self.n_samples_fit_}); got {rows[0]} to {rows[-1]}."
            )
        return rows

    # ------------------------------------------------------------- graphs
    def kneighbors_graph(
        self,
        X: ArrayLike | None = None,
        n_neighbors: int | None = None,
        mode: Literal["connectivity", "distance"] = "connectivity",
    ) -> sp.csr_matrix:
        """Sparse graph of each query's neighbours, as scikit-learn builds it.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features), default=None
            Query embeddings; ``None`` queries the gallery leave-one-out.
        n_neighbors : int, default=None
            Neighbours per query; defaults to the ``n_neighbors`` parameter.
        mode : {"connectivity", "distance"}, default="connectivity"
            Ones, or the distances, as the graph's values.

        Returns
        -------
        graph : sparse matrix of shape (n_queries, n_gallery)
            CSR matrix with ``n_neighbors`` entries per row.
        """
        _check_mode(mode)
        distances, indices = self.kneighbors(X, n_neighbors, return_distance=True)
        return self._graph(distances, indices, mode)

    def _graph(self, distances, indices, mode):
        n_queries, k = indices.shape
        values = np.ones(n_queries * k) if mode == "connectivity" else distances.ravel()
        indptr = np.arange(0, n_queries * k + 1, k)
        return sp.csr_matrix((values, indices.ravel(), indptr), shape=(n_queries, self.n_samples_fit_))

    def radius_neighbors_graph(
        self,
        X: ArrayLike | None = None,
        radius: float | None = None,
        mode: Literal["connectivity", "distance"] = "connectivity",
        sort_results: bool = True,
    ) -> sp.csr_matrix:
        """Sparse graph of each query's neighbours within ``radius``.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features), default=None
            Query embeddings; ``None`` queries the gallery leave-one-out.
        radius : float, default=None
            Largest distance included; defaults to the ``radius`` parameter.
        mode : {"connectivity", "distance"}, default="connectivity"
            Ones, or the distances, as the graph's values.
        sort_results : bool, default=True
            Accepted for compatibility; rows are always sorted by distance.

        Returns
        -------
        graph : sparse matrix of shape (n_queries, n_gallery)
            CSR matrix, one row per query.
        """
        _check_mode(mode)
        distances, indices = self.radius_neighbors(X, radius, return_distance=True)
        lengths = np.fromiter((len(row) for row in indices), dtype=np.int64, count=len(indices))
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        flat_i = np.concatenate(list(indices)) if len(indices) else np.empty(0, np.int64)
        flat_d = np.concatenate(list(distances)) if len(distances) else np.empty(0)
        values = np.ones(len(flat_i)) if mode == "connectivity" else flat_d
        return sp.csr_matrix((values, flat_i, indptr), shape=(len(indices), self.n_samples_fit_))

    def transform(self, X: ArrayLike) -> sp.csr_matrix:
        """k-NN graph of ``X`` against the gallery, as ``KNeighborsTransformer`` gives it.

        In ``mode="distance"`` each row has ``n_neighbors + 1`` entries, so
        that a query that is itself in the gallery still has ``n_neighbors``
        others.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features)
            Query embeddings.

        Returns
        -------
        graph : sparse matrix of shape (n_queries, n_gallery)
            CSR graph in the retriever's ``mode``.
        """
        check_is_fitted(self)
        k = self.n_neighbors + (self.mode == "distance")
        asked = (
            f"transform returns n_neighbors + 1 = {k} neighbours per row in mode='distance' (the query "
            f"itself may be in the gallery), which"
            if self.mode == "distance"
            else None
        )
        self._check_n_neighbors(k, leave_one_out=False, asked=asked)
        distances, indices = self.kneighbors(X, k)
        return self._graph(distances, indices, self.mode)

    # ------------------------------------------------------------- labels
    def _require_labels(self, method):
        check_is_fitted(self)
        if self.gallery_labels_ is None:
            raise ValueError(
                f"{method} needs the gallery's labels, but this retriever was "
                "fitted without them. Call fit(X, y) with one label per gallery item."
            )

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Majority label of each query's ``n_neighbors`` neighbours.

        Ties go to the smallest label.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features)
            Query embeddings.

        Returns
        -------
        labels : ndarray of shape (n_queries,)
            Predicted labels.
        """
        self._require_labels("predict")
        indices = self.kneighbors(X, return_distance=False)
        return majority_vote(self.gallery_labels_[indices])

    def score(self, X: ArrayLike, y: ArrayLike) -> float:
        """Mean precision@``n_neighbors`` of the queries ``X`` labelled ``y``.

        A neighbour is relevant when its gallery label equals the query's.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features)
            Query embeddings.
        y : array-like of shape (n_queries,)
            Query labels, of the same type as the gallery's.

        Returns
        -------
        score : float
            Fraction of relevant neighbours, averaged over queries (higher is
            better).
        """
        self._require_labels("score")
        y = check_labels(y, "Query labels y")
        if label_kind(y) != label_kind(self.gallery_labels_):
            raise ValueError(
                f"The query labels are {label_kind(y)} but the gallery's are "
                f"{label_kind(self.gallery_labels_)}, so no neighbour could ever match: "
                "give both in the same type."
            )
        indices = self.kneighbors(X, return_distance=False)
        return precision_at_k(y, self.gallery_labels_[indices])
