"""NearestImageRetriever: nearest-neighbour search over a gallery of embeddings."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from itertools import chain
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.neighbors import VALID_METRICS
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, column_or_1d

from .._sklearn_compat import Interval, StrOptions, _fit_context, validate_data
from ..metrics import majority_vote, precision_at_k
from ._exact import ScikitLearnIndex
from ._faiss import BINARY_METRICS, FAISS_INDEXES, FLOAT_METRICS

if TYPE_CHECKING:
    from .._typing import RandomState

__all__ = ["NearestImageRetriever"]

_SKLEARN_ALGORITHMS = ("auto", "brute", "kd_tree", "ball_tree")
# "hamming" here means bits of packed codes, which only FAISS's binary indexes serve.
_SKLEARN_METRICS = {
    "auto": frozenset(chain.from_iterable(VALID_METRICS.values())) - BINARY_METRICS,
    "brute": frozenset(VALID_METRICS["brute"]) - BINARY_METRICS,
    "kd_tree": frozenset(VALID_METRICS["kd_tree"]) - BINARY_METRICS,
    "ball_tree": frozenset(VALID_METRICS["ball_tree"]) - BINARY_METRICS,
}
_ALL_METRICS = _SKLEARN_METRICS["auto"] | FLOAT_METRICS | BINARY_METRICS
_LEAVE_ONE_OUT_CHUNK = 8192  # gallery rows re-queried at a time by kneighbors(X=None)


def _serves(algorithm, metric):
    """Whether ``algorithm`` can search with ``metric``."""
    if algorithm in FAISS_INDEXES:
        return metric in FAISS_INDEXES[algorithm].metrics
    return callable(metric) or metric in _SKLEARN_METRICS[algorithm] or metric == "precomputed"


def _label_kind(labels):
    """ "text" or "number", for telling query and gallery labels apart."""
    kind = labels.dtype.kind
    if kind == "O" and len(labels):
        kinds = {"text" if isinstance(v, (str, bytes)) else "number" for v in labels}
        return kinds.pop() if len(kinds) == 1 else "mixed"
    return "text" if kind in "USO" else "number"


def _check_labels(y, what):
    """Labels as a 1-D array with no missing values."""
    y = column_or_1d(y, warn=True)
    if y.dtype.kind == "O" and any(v is None for v in y):
        raise ValueError(f"{what} contain None; every item needs a label. Drop unlabelled items or give them one.")
    if y.dtype.kind == "f" and np.isnan(y).any():
        raise ValueError(f"{what} contain NaN; every item needs a label. Drop unlabelled items or give them one.")
    if _label_kind(y) == "mixed":
        raise ValueError(f"{what} mix text and numbers; use one type for every label.")
    return y


class NearestImageRetriever(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Index a gallery of embeddings and answer nearest-neighbour queries, exactly or approximately.

    The last step of a retrieval pipeline. It follows
    :class:`sklearn.neighbors.KNeighborsTransformer`: ``kneighbors`` returns
    distances and gallery indices, ``radius_neighbors`` everything within a
    distance, ``transform`` a sparse k-NN graph that feeds ``DBSCAN``,
    ``Isomap`` or ``TSNE`` with ``metric="precomputed"``. When fitted with
    labels it also predicts (majority label of the neighbours) and scores
    (precision@k), so ``GridSearchCV`` needs no custom scorer.
    ``partial_fit`` adds images to the gallery without rebuilding the index.

    Search runs on scikit-learn (exact, any metric) or on FAISS (exact
    ``"flat"`` and the approximate ``"ivf"``, ``"hnsw"`` and ``"ivfpq"``).
    ``algorithm="auto"`` takes FAISS's exact search for the metrics it
    serves (several times faster than scikit-learn's brute force) and
    scikit-learn's otherwise. See the "Choosing an index" page of the
    documentation for measured speed and recall.

    Parameters
    ----------
    n_neighbors : int, default=5
        Number of neighbours returned for each query.
    radius : float, default=1.0
        Distance within which ``radius_neighbors`` returns neighbours by
        default.
    metric : str or callable, default="euclidean"
        Distance between embeddings. On FAISS: ``"euclidean"``,
        ``"sqeuclidean"``, ``"cosine"`` (``1 - cosine similarity``),
        ``"inner_product"`` (returned as ``-<x, y>``, so that the nearest
        comes first) and ``"hamming"``: the number of differing bits
        between packed binary codes, uint8 rows as ``np.packbits`` or
        :class:`~sklearn_imgretrieval.ImageHasher` give them. On
        scikit-learn: any metric :class:`sklearn.neighbors.NearestNeighbors`
        accepts (``"manhattan"``, ``"chebyshev"``, a callable,
        ``"precomputed"``...), except ``"hamming"``.
    algorithm : {"auto", "brute", "kd_tree", "ball_tree", "flat", "ivf", "hnsw", "ivfpq"}, default="auto"
        Search structure. Exact: ``"auto"`` (FAISS ``"flat"`` for the
        metrics it serves, else scikit-learn), scikit-learn's ``"brute"``,
        ``"kd_tree"``, ``"ball_tree"``, and FAISS's ``"flat"``. Approximate,
        on FAISS: ``"ivf"`` (k-means cells, ``n_probe`` of them scanned per
        query), ``"hnsw"`` (a navigable graph) and ``"ivfpq"`` (IVF with
        compressed product-quantized codes, re-ranked by ``refine``).
    mode : {"distance", "connectivity"}, default="distance"
        Values stored in the graph that ``transform`` returns.
    n_cells : int or "auto", default="auto"
        ``"ivf"`` and ``"ivfpq"``: number of k-means cells. ``"auto"`` is about
        ``4 * sqrt(n_gallery)`` with at least 39 rows per cell (FAISS's
        minimum for training), taken from the rows of the first fit.
    n_probe : int, default=8
        ``"ivf"`` and ``"ivfpq"``: cells scanned per query (at most
        ``n_cells``). Larger is slower and more accurate; it can change
        after fitting, so it is the knob to tune with ``GridSearchCV``.
        On Fashion-MNIST vectors 8 gave recall@10 0.97 at 100k rows and
        0.98 at 300k, in 0.6 to 0.7 times the query time of 16.
    hnsw_m : int, default=32
        ``"hnsw"``: links per node of the graph (FAISS's ``M``).
    ef_construction : int, default=40
        ``"hnsw"``: candidate list size while building.
    ef_search : int, default=32
        ``"hnsw"``: candidate list size while searching; the speed/recall
        knob, changeable after fitting. On Fashion-MNIST vectors 32 gave
        recall@10 0.999 from 100k to 1M rows, at 0.6 times the query time
        of 64.
    pq_m : int or "auto", default="auto"
        ``"ivfpq"``: sub-quantizers per row; must divide the number of
        features. ``"auto"`` takes about one per 4 features.
    pq_bits : int or "auto", default="auto"
        ``"ivfpq"``: bits per sub-quantizer code. ``"auto"`` is 8 once the
        gallery has 9,984 rows (39 per centroid), fewer below.
    refine : {"flat", "fp16", "sq8"} or None, default="fp16"
        ``"ivfpq"``: rows kept to re-rank the ``k_factor * n_neighbors``
        best candidates by their codes: exact float32 rows (4 bytes per
        value), half-precision (2), 8-bit scalar-quantized (1), or none
        (distances from the codes alone, the least memory). On Fashion-MNIST
        vectors half precision ranked nearly as well as float32 (recall@10
        0.988 against 0.993 at 10M rows, 0.999 against 1.000 at 1M) in half
        the memory, which lets 10M rows of 128 values fit in 4 GB; one byte
        per value fell to 0.91 at 10M, too coarse to order near-duplicates.
    k_factor : int, default=8
        ``"ivfpq"``: size of the shortlist re-ranked, in multiples of the
        neighbours asked for. At 10M rows with many near-duplicates, 4 gave
        recall@10 0.90, 8 gave 0.989 and 16 gave 0.997 for 5% more query
        time than 8.
    metric_params : dict, default=None
        Keyword arguments of a scikit-learn metric.
    random_state : int, RandomState instance or None, default=None
        Seeds FAISS's k-means (``"ivf"``, ``"ivfpq"``). An int also builds
        the ``"hnsw"`` graph on one thread, which makes it reproducible
        (FAISS's parallel insertion depends on thread timing).
    n_jobs : int, default=None
        Threads for building and searching. On FAISS ``None`` keeps its
        default of every core (OpenMP); on a machine busy with other work
        set the number of free cores, since FAISS slows down more than
        scikit-learn when cores are oversubscribed. On scikit-learn, as
        for ``NearestNeighbors``.

    Attributes
    ----------
    index_ : object
        The fitted search backend.
    fit_algorithm_ : str
        The algorithm in use; ``"auto"`` resolved.
    gallery_labels_ : ndarray of shape (n_gallery,) or None
        Labels given to ``fit`` and ``partial_fit``, used by ``predict`` and
        ``score``.
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
    >>> retriever.partial_fit([[5.5, 6.0]], [1]).n_samples_fit_
    6
    >>> retriever.radius_neighbors([[5.5, 5.0]], radius=1.0, return_distance=False)[0]
    array([3, 4, 5])
    """

    _parameter_constraints = {
        "n_neighbors": [Interval(numbers.Integral, 1, None, closed="left")],
        "radius": [Interval(numbers.Real, 0, None, closed="left")],
        "metric": [StrOptions(_ALL_METRICS | {"precomputed"}), callable],
        "algorithm": [StrOptions(set(_SKLEARN_ALGORITHMS) | set(FAISS_INDEXES))],
        "mode": [StrOptions({"distance", "connectivity"})],
        "n_cells": [Interval(numbers.Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "n_probe": [Interval(numbers.Integral, 1, None, closed="left")],
        "hnsw_m": [Interval(numbers.Integral, 2, None, closed="left")],
        "ef_construction": [Interval(numbers.Integral, 1, None, closed="left")],
        "ef_search": [Interval(numbers.Integral, 1, None, closed="left")],
        "pq_m": [Interval(numbers.Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "pq_bits": [Interval(numbers.Integral, 1, 16, closed="both"), StrOptions({"auto"})],
        "refine": [StrOptions({"flat", "fp16", "sq8"}), None],
        "k_factor": [Interval(numbers.Integral, 1, None, closed="left")],
        "metric_params": [dict, None],
        "random_state": ["random_state"],
        "n_jobs": [None, numbers.Integral],
    }

    def __init__(
        self,
        n_neighbors: int = 5,
        *,
        radius: float = 1.0,
        metric: str | Callable[..., float] = "euclidean",
        algorithm: Literal["auto", "brute", "kd_tree", "ball_tree", "flat", "ivf", "hnsw", "ivfpq"] = "auto",
        mode: Literal["distance", "connectivity"] = "distance",
        n_cells: int | Literal["auto"] = "auto",
        n_probe: int = 8,
        hnsw_m: int = 32,
        ef_construction: int = 40,
        ef_search: int = 32,
        pq_m: int | Literal["auto"] = "auto",
        pq_bits: int | Literal["auto"] = "auto",
        refine: Literal["flat", "fp16", "sq8"] | None = "fp16",
        k_factor: int = 8,
        metric_params: dict[str, Any] | None = None,
        random_state: RandomState = None,
        n_jobs: int | None = None,
    ) -> None:
        self.n_neighbors = n_neighbors
        self.radius = radius
        self.metric = metric
        self.algorithm = algorithm
        self.mode = mode
        self.n_cells = n_cells
        self.n_probe = n_probe
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.pq_m = pq_m
        self.pq_bits = pq_bits
        self.refine = refine
        self.k_factor = k_factor
        self.metric_params = metric_params
        self.random_state = random_state
        self.n_jobs = n_jobs

    # ------------------------------------------------------------ backend
    def _resolve_algorithm(self):
        """The algorithm to build, or a clear error when it cannot serve the metric."""
        algorithm = self.algorithm
        if algorithm == "auto" and not callable(self.metric) and self.metric in FAISS_INDEXES["flat"].metrics:
            algorithm = "flat"
        if not _serves(algorithm, self.metric):
            able = [name for name in (*_SKLEARN_ALGORITHMS, *FAISS_INDEXES) if _serves(name, self.metric)]
            raise ValueError(
                f"algorithm={self.algorithm!r} cannot search with metric={self.metric!r}. "
                f"Algorithms that can: {', '.join(repr(name) for name in able)}."
            )
        return algorithm

    def _check_build_settings(self, algorithm, n_rows, n_features):
        """Settings that depend on the data, checked before anything is built."""
        if algorithm not in ("ivf", "ivfpq"):
            return
        if self.n_cells != "auto":
            if self.n_cells > n_rows:
                raise ValueError(
                    f"n_cells={self.n_cells} k-means cells cannot be trained on {n_rows} rows: "
                    f"use n_cells <= {n_rows} (FAISS wants 39 rows per cell), or n_cells='auto'."
                )
            if self.n_probe > self.n_cells:
                raise ValueError(
                    f"n_probe={self.n_probe} is larger than n_cells={self.n_cells}: a query can "
                    f"scan at most every cell. Use n_probe <= {self.n_cells}."
                )
        if algorithm == "ivfpq" and self.pq_m != "auto" and n_features % self.pq_m:
            raise ValueError(
                f"pq_m={self.pq_m} must divide the number of features, {n_features}; "
                "each sub-quantizer codes an equal slice of the row. Use pq_m='auto'."
            )

    def _make_index(self, algorithm):
        if algorithm not in FAISS_INDEXES:
            return ScikitLearnIndex(
                self.metric, {"algorithm": algorithm, "metric_params": self.metric_params}, self.n_jobs
            )
        params = {
            "n_cells": self.n_cells,
            "hnsw_m": self.hnsw_m,
            "ef_construction": self.ef_construction,
            "pq_m": self.pq_m,
            "pq_bits": self.pq_bits,
            "refine": self.refine,
            "seed": int(check_random_state(self.random_state).randint(2**31 - 1)),
            "deterministic": self.random_state is not None,
        }
        return FAISS_INDEXES[algorithm](self.metric, params, self.n_jobs)

    def _search_options(self):
        # Search-time settings are read at every call: they change without refitting.
        return {"n_jobs": self.n_jobs, "n_probe": self.n_probe, "ef_search": self.ef_search, "k_factor": self.k_factor}

    # -------------------------------------------------------------- input
    def _validate_rows(self, X, y=None, *, reset):
        """Validated rows (and labels): uint8 codes for hamming, float rows otherwise."""
        if self.metric in BINARY_METRICS:
            dtype = None
        elif self.algorithm in FAISS_INDEXES or (self.algorithm == "auto" and self.metric in FLOAT_METRICS):
            dtype = np.float32  # what FAISS computes in
        else:
            dtype = [np.float64, np.float32]
        if y is None:
            X = validate_data(self, X, reset=reset, dtype=dtype)
        else:
            X, y = validate_data(self, X, y, reset=reset, dtype=dtype)
            y = _check_labels(y, "Labels y")
        if self.metric in BINARY_METRICS and X.dtype != np.uint8:
            raise ValueError(
                f"metric='hamming' compares packed binary codes, uint8 rows of 8 bits per value "
                f"(np.packbits or ImageHasher give them); got dtype {X.dtype}. Pack the bits "
                "with np.packbits(bits, axis=1)."
            )
        return X, y

    # ---------------------------------------------------------------- fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: ArrayLike, y: ArrayLike | None = None) -> NearestImageRetriever:
        """Index the gallery ``X``; keep its labels ``y`` when given.

        Parameters
        ----------
        X : array-like of shape (n_gallery, n_features)
            Gallery embeddings (uint8 packed codes for ``metric="hamming"``).
        y : array-like of shape (n_gallery,), default=None
            Gallery labels, needed by ``predict`` and ``score``.

        Returns
        -------
        self : NearestImageRetriever
            The fitted retriever.
        """
        return self._fit(X, y)

    def _fit(self, X, y):
        algorithm = self._resolve_algorithm()
        X, y = self._validate_rows(X, y, reset=True)
        self._check_build_settings(algorithm, *X.shape)
        index = self._make_index(algorithm)
        index.build(X)
        self.index_ = index
        self.fit_algorithm_ = algorithm
        self.gallery_labels_ = y
        self.n_samples_fit_ = index.n_samples
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X: ArrayLike, y: ArrayLike | None = None) -> NearestImageRetriever:
        """Add images to the gallery without rebuilding the index.

        The first call fits. Later calls append ``X`` (and its labels) to the
        index: trained parts such as IVF cells stay as the first call made
        them, and gallery indices continue from ``n_samples_fit_``. Nothing
        changes when the rows or labels are refused.

        Parameters
        ----------
        X : array-like of shape (n_new, n_features)
            Embeddings to add.
        y : array-like of shape (n_new,), default=None
            Their labels: required if the gallery has labels, refused if not.

        Returns
        -------
        self : NearestImageRetriever
            The retriever, with the rows added.
        """
        if not hasattr(self, "index_"):
            return self._fit(X, y)
        if self.metric == "precomputed":
            raise ValueError(
                "partial_fit cannot add rows to a precomputed distance matrix; fit on the whole matrix instead."
            )
        X, y = self._validate_rows(X, y, reset=False)
        if (y is None) != (self.gallery_labels_ is None):
            have = "with" if self.gallery_labels_ is not None else "without"
            raise ValueError(
                f"The gallery was fitted {have} labels, so partial_fit needs "
                f"{'labels for the new rows too' if have == 'with' else 'no labels'}: call "
                f"partial_fit(X{', y' if have == 'with' else ''})."
            )
        if y is not None and _label_kind(y) != _label_kind(self.gallery_labels_):
            raise ValueError(
                f"The new labels are {_label_kind(y)} but the gallery's are {_label_kind(self.gallery_labels_)}; "
                "use one type for every label."
            )
        self.index_.add(X)
        if y is not None:
            self.gallery_labels_ = np.concatenate([self.gallery_labels_, y])
        self.n_samples_fit_ = self.index_.n_samples
        return self

    def remove(self, indices: ArrayLike) -> NearestImageRetriever:
        """Forget gallery items, as when their images were deleted.

        Later items move down to fill the gaps, as in a list: after removing
        item 3, item 4 becomes 3. Their labels go with them. Flat indexes
        remove rows in place; the other structures are rebuilt from the rows
        kept, without retraining (IVF cells and PQ codebooks stay). IVF-PQ
        moves its rows in place, so an interrupted removal cannot be undone:
        it keeps the first of the rows kept, with their labels
        (``n_samples_fit_`` says how many), to be completed with
        ``partial_fit``.

        Parameters
        ----------
        indices : array-like of int
            Gallery indices to remove, each in ``[0, n_samples_fit_)``.

        Returns
        -------
        self : NearestImageRetriever
            The retriever without those items.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn_imgretrieval import NearestImageRetriever
        >>> retriever = NearestImageRetriever(n_neighbors=1).fit([[0.0], [1.0], [2.0]], ["a", "b", "c"])
        >>> retriever.remove([1]).gallery_labels_
        array(['a', 'c'], dtype='<U1')
        >>> retriever.kneighbors([[1.9]])[1]
        array([[1]])
        """
        check_is_fitted(self)
        indices = np.unique(np.asarray(indices, dtype=np.int64).ravel())
        if len(indices) and (indices[0] < 0 or indices[-1] >= self.n_samples_fit_):
            raise ValueError(
                f"Gallery indices must be in [0, {self.n_samples_fit_}); got {indices[0]} to {indices[-1]}."
            )
        if len(indices) == 0:
            return self
        if self.metric == "precomputed":
            raise ValueError("A precomputed distance matrix cannot lose rows; fit on the smaller matrix instead.")
        try:
            self.index_.remove(indices)
        finally:
            # An interrupted removal can leave only the first of the rows kept
            # (see the backend's remove): the labels follow the rows either way.
            if self.index_.n_samples != self.n_samples_fit_:
                if self.gallery_labels_ is not None:
                    self.gallery_labels_ = np.delete(self.gallery_labels_, indices)[: self.index_.n_samples]
                self.n_samples_fit_ = self.index_.n_samples
        return self

    # -------------------------------------------------------------- search
    def _check_n_neighbors(self, n_neighbors, leave_one_out, *, asked=None):
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
                f"{asked or f'n_neighbors={n_neighbors}'} is larger than {what}. Ask for at most "
                f"{available} neighbours, or fit on a larger gallery."
            )
        return int(n_neighbors)

    def _check_query(self, X):
        X, _ = self._validate_rows(X, reset=False)
        return X

    def _gallery_rows(self):
        """The gallery's rows, chunk by chunk, as (start, rows)."""
        for start in range(0, self.n_samples_fit_, _LEAVE_ONE_OUT_CHUNK):
            yield start, self.index_.reconstruct(start, min(start + _LEAVE_ONE_OUT_CHUNK, self.n_samples_fit_))

    def _search(self, rows, k):
        distances, indices = self.index_.search(rows, k, self._search_options())
        if callable(self.metric) and not np.isfinite(distances).all():
            raise ValueError(
                f"The metric {getattr(self.metric, '__name__', self.metric)!r} returned NaN or infinite "
                "distances; make it return finite numbers for every pair of rows."
            )
        return distances, indices

    def kneighbors(
        self, X: ArrayLike | None = None, n_neighbors: int | None = None, return_distance: bool = True
    ) -> tuple[np.ndarray, np.ndarray] | np.ndarray:
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
            distances, indices = self._search(self._check_query(X), n_neighbors)
        else:
            distances, indices = self._leave_one_out(n_neighbors)
        return (distances, indices) if return_distance else indices

    def kneighbors_of_gallery(
        self, indices: ArrayLike, n_neighbors: int | None = None, return_distance: bool = True
    ) -> tuple[np.ndarray, np.ndarray] | np.ndarray:
        """The nearest other gallery items of the gallery items ``indices``.

        What ``kneighbors(X=None)`` gives for the whole gallery, for a few
        items: each is queried with the row the index stores for it and left
        out of its own list.

        Parameters
        ----------
        indices : array-like of int
            Gallery indices of the items to query with.
        n_neighbors : int, default=None
            Neighbours per item; defaults to the ``n_neighbors`` parameter.
        return_distance : bool, default=True
            Whether to return the distances as well.

        Returns
        -------
        distances : ndarray of shape (len(indices), n_neighbors)
            Only when ``return_distance=True``.
        indices : ndarray of shape (len(indices), n_neighbors)
            Gallery indices of the neighbours, nearest first.

        Examples
        --------
        >>> from sklearn_imgretrieval import NearestImageRetriever
        >>> retriever = NearestImageRetriever(n_neighbors=1).fit([[0.0], [1.0], [3.0]])
        >>> retriever.kneighbors_of_gallery([2], return_distance=False)
        array([[1]])
        """
        check_is_fitted(self)
        n_neighbors = self._check_n_neighbors(n_neighbors, leave_one_out=True)
        items = np.asarray(indices, dtype=np.int64).ravel()
        if len(items) and (items.min() < 0 or items.max() >= self.n_samples_fit_):
            raise ValueError(f"Gallery indices must be in [0, {self.n_samples_fit_}); got {items.tolist()[:10]}.")
        rows = np.concatenate([self.index_.reconstruct(int(i), int(i) + 1) for i in items]) if len(items) else None
        if rows is None:
            empty = np.empty((0, n_neighbors))
            return (empty, empty.astype(np.int64)) if return_distance else empty.astype(np.int64)
        distances, found = self._search(rows, n_neighbors + 1)
        distances, found = self._drop_self(distances, found, items)
        return (distances, found) if return_distance else found

    @staticmethod
    def _drop_self(distances, indices, items):
        """Each row without the item that made the query (or its last neighbour, if absent)."""
        own = indices == items[:, None]
        own[~own.any(axis=1), -1] = True  # approximate search, or more exact duplicates than k
        own[np.cumsum(own, axis=1) > 1] = False  # one column per row, even with repeats
        n_rows, k = indices.shape
        return distances[~own].reshape(n_rows, k - 1), indices[~own].reshape(n_rows, k - 1)

    def _leave_one_out(self, k):
        """Each gallery item's ``k`` nearest others: ``k + 1`` found, the item itself dropped.

        When the item is not among them (approximate search, or more than
        ``k`` exact duplicates), the farthest is dropped instead.
        """
        distances = np.empty((self.n_samples_fit_, k), dtype=np.float64)
        indices = np.empty((self.n_samples_fit_, k), dtype=np.int64)
        for start, rows in self._gallery_rows():
            stop = start + len(rows)
            items = np.arange(start, stop)
            distances[start:stop], indices[start:stop] = self._drop_self(*self._search(rows, k + 1), items)
        return distances, indices

    def radius_neighbors(
        self,
        X: ArrayLike | None = None,
        radius: float | None = None,
        return_distance: bool = True,
        sort_results: bool = True,
    ) -> tuple[np.ndarray, np.ndarray] | np.ndarray:
        """Every gallery item within ``radius`` of each query.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features), default=None
            Query embeddings. ``None`` queries the gallery itself, leaving each
            item out of its own list.
        radius : float, default=None
            Largest distance included; defaults to the ``radius`` parameter.
        return_distance : bool, default=True
            Whether to return the distances as well.
        sort_results : bool, default=True
            Neighbours are always returned nearest first; accepted for
            compatibility with scikit-learn.

        Returns
        -------
        distances : ndarray of shape (n_queries,) of arrays
            Each query's distances, nearest first. Only when
            ``return_distance=True``.
        indices : ndarray of shape (n_queries,) of arrays
            Each query's gallery indices.
        """
        check_is_fitted(self)
        radius = self.radius if radius is None else radius
        if not isinstance(radius, numbers.Real) or radius < 0:
            raise ValueError(f"radius must be a non-negative number, got {radius!r}.")
        if not self.index_.supports_range_search:
            # FAISS has no range search in its binary HNSW nor in the re-ranking of IVF-PQ.
            able = [name for name in ("brute", "kd_tree", "ball_tree", "flat", "ivf") if _serves(name, self.metric)]
            if self.metric not in BINARY_METRICS:
                able.append("hnsw")
            raise ValueError(
                f"algorithm={self.fit_algorithm_!r} has no radius search in FAISS with these settings. "
                f"Use one of {', '.join(repr(name) for name in able)}"
                + (", or refine=None for 'ivfpq'." if self.fit_algorithm_ == "ivfpq" else ".")
            )
        options = self._search_options()
        if X is not None:
            distances, indices = self.index_.range_search(self._check_query(X), radius, options)
        else:
            parts_d, parts_i = [], []
            for start, rows in self._gallery_rows():
                d, i = self.index_.range_search(rows, radius, options)
                for own, (row_d, row_i) in enumerate(zip(d, i), start=start):
                    keep = row_i != own
                    parts_d.append(row_d[keep])
                    parts_i.append(row_i[keep])
            distances = np.empty(len(parts_d), dtype=object)
            indices = np.empty(len(parts_i), dtype=object)
            distances[:], indices[:] = parts_d, parts_i
        return (distances, indices) if return_distance else indices

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
        k = self._check_n_neighbors(k, leave_one_out=False, asked=asked)
        distances, indices = self._search(self._check_query(X), k)
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
        y = _check_labels(y, "Query labels y")
        if _label_kind(y) != _label_kind(self.gallery_labels_):
            raise ValueError(
                f"The query labels are {_label_kind(y)} but the gallery's are "
                f"{_label_kind(self.gallery_labels_)}, so no neighbour could ever match: "
                "give both in the same type."
            )
        indices = self.kneighbors(X, return_distance=False)
        return precision_at_k(y, self.gallery_labels_[indices])

    # -------------------------------------------------------------- sklearn
    def __setstate__(self, state):
        super().__setstate__(state)
        index = state.get("index_")
        # FAISS trusts the dimension it reads; a query of another width would
        # make it read past its buffers, so a stored index must match the gallery.
        expected = self.n_features_in_ * (8 if self.metric in BINARY_METRICS else 1) if index is not None else None
        if index is not None and getattr(index, "n_dims", expected) != expected:
            raise ValueError(
                f"The stored index has {index.n_dims} dimensions but the retriever was fitted on "
                f"{self.n_features_in_} features: the file was altered."
            )
        if index is not None and index.n_samples != self.n_samples_fit_:
            raise ValueError(
                f"The stored index has {index.n_samples} rows but the retriever counts "
                f"{self.n_samples_fit_}: the file was altered."
            )

    @property
    def _n_features_out(self):
        return self.n_samples_fit_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.pairwise = self.metric == "precomputed"
        tags.transformer_tags.preserves_dtype = []
        return tags


def _check_mode(mode):
    if mode not in ("connectivity", "distance"):
        raise ValueError(f'mode must be "connectivity" or "distance", got {mode!r}.')
