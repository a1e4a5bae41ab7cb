"""NearestImageRetriever: k-nearest-neighbour search over a gallery of embeddings."""

import numbers
from itertools import chain

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.neighbors import VALID_METRICS, NearestNeighbors
from sklearn.utils.validation import check_is_fitted

from .._sklearn_compat import Interval, StrOptions, _fit_context, validate_data
from ..metrics import majority_vote, precision_at_k

_SKLEARN_METRICS = frozenset(chain.from_iterable(VALID_METRICS.values()))


def _exact_index(*, n_neighbors, algorithm, metric, metric_params, n_jobs):
    """scikit-learn's exact search; its brute force computes distances in chunks
    of ``sklearn.set_config(working_memory=...)`` so no query x gallery matrix
    is ever held whole."""
    return NearestNeighbors(
        n_neighbors=n_neighbors,
        algorithm=algorithm,
        metric=metric,
        metric_params=metric_params,
        n_jobs=n_jobs,
    )


# ``algorithm`` value -> factory of an unfitted index with ``fit(X)`` and
# ``kneighbors(X, n_neighbors, return_distance)`` (X=None leaving each gallery
# item out of its own list). Approximate backends join here, one module each.
_INDEX_FACTORIES = {
    "auto": _exact_index,
    "brute": _exact_index,
    "kd_tree": _exact_index,
    "ball_tree": _exact_index,
}


class NearestImageRetriever(TransformerMixin, BaseEstimator):
    """Index a gallery of embeddings and answer k-nearest-neighbour queries.

    The last step of a retrieval pipeline. It follows
    :class:`sklearn.neighbors.KNeighborsTransformer`: ``kneighbors`` returns
    distances and gallery indices, ``transform`` a sparse k-NN graph that
    feeds ``DBSCAN``, ``Isomap`` or ``TSNE`` with ``metric="precomputed"``.
    When fitted with labels it also predicts (majority label of the
    neighbours) and scores (precision@k), so ``GridSearchCV`` needs no custom
    scorer.

    Parameters
    ----------
    n_neighbors : int, default=5
        Number of neighbours returned for each query.
    metric : str or callable, default="euclidean"
        Distance between embeddings: ``"euclidean"``, ``"cosine"``,
        ``"manhattan"`` or any metric :class:`sklearn.neighbors.NearestNeighbors`
        accepts.
    algorithm : {"auto", "brute", "kd_tree", "ball_tree"}, default="auto"
        Search algorithm; all of them are exact.
    mode : {"distance", "connectivity"}, default="distance"
        Values stored in the graph that ``transform`` returns.
    metric_params : dict, default=None
        Keyword arguments of the metric.
    n_jobs : int, default=None
        Parallel jobs for the search; ``-1`` means all cores.

    Attributes
    ----------
    index_ : object
        The fitted search structure (a ``NearestNeighbors`` for exact search).
    gallery_labels_ : ndarray of shape (n_gallery,) or None
        Labels given to ``fit``, used by ``predict`` and ``score``.
    n_samples_fit_ : int
        Number of gallery items.
    n_features_in_ : int
        Number of features of the gallery embeddings.
    feature_names_in_ : ndarray of str
        Column names of a DataFrame seen during fit.

    See Also
    --------
    sklearn.neighbors.KNeighborsTransformer : The scikit-learn estimator whose
        contract this one follows.
    sklearn_imgretrieval.make_retrieval_pipeline : Chain a preprocessor, an
        embedder and this retriever.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_imgretrieval import NearestImageRetriever
    >>> gallery = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [5.0, 5.0], [6.0, 5.0]])
    >>> retriever = NearestImageRetriever(n_neighbors=2).fit(gallery, y=[0, 0, 0, 1, 1])
    >>> distances, indices = retriever.kneighbors([[0.9, 0.1]])
    >>> indices
    array([[1, 0]])
    >>> retriever.predict([[5.0, 4.0], [0.2, 0.2]])
    array([1, 0])
    >>> retriever.kneighbors(n_neighbors=1, return_distance=False).ravel()  # leave-one-out
    array([1, 0, 0, 4, 3])
    """

    _parameter_constraints = {
        "n_neighbors": [Interval(numbers.Integral, 1, None, closed="left")],
        "metric": [StrOptions(_SKLEARN_METRICS), callable],
        "algorithm": [StrOptions(set(_INDEX_FACTORIES))],
        "mode": [StrOptions({"distance", "connectivity"})],
        "metric_params": [dict, None],
        "n_jobs": [None, numbers.Integral],
    }

    def __init__(
        self,
        n_neighbors=5,
        *,
        metric="euclidean",
        algorithm="auto",
        mode="distance",
        metric_params=None,
        n_jobs=None,
    ):
        self.n_neighbors = n_neighbors
        self.metric = metric
        self.algorithm = algorithm
        self.mode = mode
        self.metric_params = metric_params
        self.n_jobs = n_jobs

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Index the gallery ``X``; keep its labels ``y`` when given.

        Parameters
        ----------
        X : array-like of shape (n_gallery, n_features)
            Gallery embeddings.
        y : array-like of shape (n_gallery,), default=None
            Gallery labels, needed by ``predict`` and ``score``.

        Returns
        -------
        self : NearestImageRetriever
            The fitted retriever.
        """
        if y is None:
            X = validate_data(self, X, dtype=[np.float64, np.float32])
            self.gallery_labels_ = None
        else:
            X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
            self.gallery_labels_ = np.asarray(y)
        factory = _INDEX_FACTORIES[self.algorithm]
        self.index_ = factory(
            n_neighbors=self.n_neighbors,
            algorithm=self.algorithm,
            metric=self.metric,
            metric_params=self.metric_params,
            n_jobs=self.n_jobs,
        ).fit(X)
        self.n_samples_fit_ = X.shape[0]
        return self

    def _check_n_neighbors(self, n_neighbors, leave_one_out):
        if n_neighbors is None:
            n_neighbors = self.n_neighbors
        if not isinstance(n_neighbors, numbers.Integral) or n_neighbors < 1:
            raise ValueError(f"n_neighbors must be a positive integer, got {n_neighbors!r}.")
        available = self.n_samples_fit_ - int(leave_one_out)
        if n_neighbors > available:
            what = (
                f"the gallery of {self.n_samples_fit_} items less the query itself"
                if leave_one_out
                else f"the gallery of {self.n_samples_fit_} items"
            )
            raise ValueError(
                f"n_neighbors={n_neighbors} is larger than {what}. Ask for at most "
                f"{available} neighbours, or fit on a larger gallery."
            )
        return int(n_neighbors)

    def kneighbors(self, X=None, n_neighbors=None, return_distance=True):
        """Find the nearest gallery items of each query.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features), default=None
            Query embeddings. ``None`` queries the gallery itself, leaving each
            item out of its own list.
        n_neighbors : int, default=None
            Neighbours per query; defaults to the ``n_neighbors`` parameter.
        return_distance : bool, default=True
            Whether to return the distances as well.

        Returns
        -------
        distances : ndarray of shape (n_queries, n_neighbors)
            Distances to the neighbours, nearest first. Only when
            ``return_distance=True``.
        indices : ndarray of shape (n_queries, n_neighbors)
            Gallery indices of the neighbours.
        """
        check_is_fitted(self)
        n_neighbors = self._check_n_neighbors(n_neighbors, leave_one_out=X is None)
        if X is not None:
            X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return self.index_.kneighbors(X, n_neighbors, return_distance=return_distance)

    def kneighbors_graph(self, X=None, n_neighbors=None, mode="connectivity"):
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
        if mode not in ("connectivity", "distance"):
            raise ValueError(f'mode must be "connectivity" or "distance", got {mode!r}.')
        distances, indices = self.kneighbors(X, n_neighbors, return_distance=True)
        n_queries, k = indices.shape
        values = np.ones(n_queries * k) if mode == "connectivity" else distances.ravel()
        indptr = np.arange(0, n_queries * k + 1, k)
        return sp.csr_matrix((values, indices.ravel(), indptr), shape=(n_queries, self.n_samples_fit_))

    def transform(self, X):
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
        add_one = self.mode == "distance"
        return self.kneighbors_graph(X, self.n_neighbors + add_one, mode=self.mode)

    def _require_labels(self, method):
        check_is_fitted(self)
        if self.gallery_labels_ is None:
            raise ValueError(
                f"{method} needs the gallery's labels, but this retriever was "
                "fitted without them. Call fit(X, y) with one label per gallery item."
            )

    def predict(self, X):
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

    def score(self, X, y):
        """Mean precision@``n_neighbors`` of the queries ``X`` labelled ``y``.

        A neighbour is relevant when its gallery label equals the query's.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features)
            Query embeddings.
        y : array-like of shape (n_queries,)
            Query labels.

        Returns
        -------
        score : float
            Fraction of relevant neighbours, averaged over queries (higher is
            better).
        """
        self._require_labels("score")
        indices = self.kneighbors(X, return_distance=False)
        return precision_at_k(y, self.gallery_labels_[indices])

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.pairwise = self.metric == "precomputed"
        tags.transformer_tags.preserves_dtype = []
        return tags
