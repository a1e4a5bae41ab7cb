"""NearestImageRetriever: nearest-neighbour search over a gallery of embeddings."""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from .._sklearn_compat import Interval, StrOptions, _fit_context, validate_data
from ._answers import NeighborsAnswers, check_labels, label_kind
from ._backend import SearchSettings, field_names
from ._registry import BACKENDS, METRICS, resolve_algorithm

if TYPE_CHECKING:
    from .._typing import RandomState

__all__ = ["NearestImageRetriever"]

_LEAVE_ONE_OUT_CHUNK = 8192  # gallery rows re-queried at a time by kneighbors(X=None)


class NearestImageRetriever(NeighborsAnswers, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
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
    backend_ : SearchBackend
        The fitted search structure (a private type of
        ``sklearn_imgretrieval.neighbors``; its contract is in ``_backend.py``).
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
        "metric": [StrOptions(set(METRICS)), callable],
        "algorithm": [StrOptions(set(BACKENDS))],
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
    def _backend_type(self, algorithm=None):
        return BACKENDS[algorithm or self.fit_algorithm_]

    def _backend_params(self, algorithm):
        """The build settings of ``algorithm``'s backend, from this retriever's parameters."""
        values = self.get_params(deep=False)
        values["algorithm"] = algorithm  # "auto" resolved
        if self.random_state is not None:  # an int seed; a RandomState instance gives one draw
            values["random_state"] = int(check_random_state(self.random_state).randint(2**31 - 1))
        backend = self._backend_type(algorithm)
        return backend.Params(**{name: values[name] for name in field_names(backend.Params)})

    def _search_settings(self):
        # Read at every search: these parameters change without refitting.
        values = self.get_params(deep=False)
        return SearchSettings(**{name: values[name] for name in field_names(SearchSettings)})

    def params_for_gallery(self, n_samples: int) -> dict[str, Any]:
        """The build parameters that ``"auto"`` stands for in a gallery of ``n_samples`` rows.

        A gallery streamed through :meth:`partial_fit` is trained on its
        first rows; set these parameters first, so that the structure suits
        the whole gallery rather than its first chunk (IVF cells, for example).

        Parameters
        ----------
        n_samples : int
            Rows the gallery will hold.

        Returns
        -------
        params : dict
            Parameters to give :meth:`set_params` (empty when nothing is "auto").

        Examples
        --------
        >>> from sklearn_imgretrieval import NearestImageRetriever
        >>> NearestImageRetriever(algorithm="ivf").params_for_gallery(100_000)
        {'n_cells': 1265}
        """
        algorithm = resolve_algorithm(self.algorithm, self.metric)
        backend = self._backend_type(algorithm)
        params = self._backend_params(algorithm)
        resolved = backend.resolve_params(params, n_samples)
        return {
            name: getattr(resolved, name)
            for name in field_names(backend.Params)
            if name not in ("algorithm", "random_state") and getattr(resolved, name) != getattr(params, name)
        }

    def rows_to_train(self, n_samples: int) -> int:
        """Rows the first :meth:`partial_fit` must hold to train for a gallery of ``n_samples`` rows.

        1 for structures without training (exact search, HNSW); for IVF,
        FAISS's 39 rows per k-means cell (and per PQ centroid for IVF-PQ),
        at most ``n_samples``.

        Parameters
        ----------
        n_samples : int
            Rows the gallery will hold.

        Returns
        -------
        n_rows : int
            Rows to gather before the first ``partial_fit``.

        Examples
        --------
        >>> from sklearn_imgretrieval import NearestImageRetriever
        >>> NearestImageRetriever(algorithm="ivf", n_cells=100).rows_to_train(1_000_000)
        3900
        """
        algorithm = resolve_algorithm(self.algorithm, self.metric)
        return self._backend_type(algorithm).rows_to_train(self._backend_params(algorithm), n_samples)

    # -------------------------------------------------------------- input
    def _validate_rows(self, X, y=None, *, reset):
        """Validated rows (and labels), in the dtype the backend takes: uint8 codes for hamming."""
        algorithm = resolve_algorithm(self.algorithm, self.metric) if reset else self.fit_algorithm_
        dtype = self._backend_type(algorithm).input_dtype(self.metric)
        if y is None:
            X = validate_data(self, X, reset=reset, dtype=dtype)
        else:
            X, y = validate_data(self, X, y, reset=reset, dtype=dtype)
            y = check_labels(y, "Labels y")
        if dtype is None and X.dtype != np.uint8:
            raise ValueError(
                f"metric={self.metric!r} compares packed binary codes, uint8 rows of 8 bits per value "
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
        algorithm = resolve_algorithm(self.algorithm, self.metric)
        X, y = self._validate_rows(X, y, reset=True)
        backend_type = self._backend_type(algorithm)
        params = self._backend_params(algorithm)
        backend_type.check_params(params, *X.shape)
        backend = backend_type(self.metric, params, self.n_jobs)
        backend.build(X)
        self.backend_ = backend
        self.fit_algorithm_ = algorithm
        self.gallery_labels_ = y
        self.n_samples_fit_ = backend.n_samples
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
        if not hasattr(self, "backend_"):
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
        if y is not None and label_kind(y) != label_kind(self.gallery_labels_):
            raise ValueError(
                f"The new labels are {label_kind(y)} but the gallery's are {label_kind(self.gallery_labels_)}; "
                "use one type for every label."
            )
        self.backend_.add(X)
        if y is not None:
            self.gallery_labels_ = np.concatenate([self.gallery_labels_, y])
        self.n_samples_fit_ = self.backend_.n_samples
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
            self.backend_.remove(indices)
        finally:
            # An interrupted removal can leave only the first of the rows kept
            # (see the backend's remove): the labels follow the rows either way.
            if self.backend_.n_samples != self.n_samples_fit_:
                if self.gallery_labels_ is not None:
                    self.gallery_labels_ = np.delete(self.gallery_labels_, indices)[: self.backend_.n_samples]
                self.n_samples_fit_ = self.backend_.n_samples
        return self

    # -------------------------------------------------------------- search
    def _check_n_neighbors(self, n_neighbors, leave_one_out, *, asked=None, subset=None):
        if n_neighbors is None:
            n_neighbors = self.n_neighbors
        if not isinstance(n_neighbors, numbers.Integral) or isinstance(n_neighbors, bool) or n_neighbors < 1:
            raise ValueError(f"n_neighbors must be a positive integer, got {n_neighbors!r}.")
        n_rows = self.n_samples_fit_ if subset is None else len(subset)
        available = n_rows - int(leave_one_out)
        if n_neighbors > available:
            what = f"the gallery of {n_rows} items" if subset is None else f"the subset of {n_rows} gallery items"
            if leave_one_out:
                what += " less the query itself"
            raise ValueError(
                f"{asked or f'n_neighbors={n_neighbors}'} is larger than {what}. Ask for at most "
                f"{available} neighbours, or {'fit on a larger gallery' if subset is None else 'widen the subset'}."
            )
        return int(n_neighbors)

    def _check_query(self, X):
        X, _ = self._validate_rows(X, reset=False)
        return X

    def _gallery_chunks(self):
        """The gallery's rows, chunk by chunk, as (start, rows)."""
        for start in range(0, self.n_samples_fit_, _LEAVE_ONE_OUT_CHUNK):
            yield start, self.backend_.reconstruct(start, min(start + _LEAVE_ONE_OUT_CHUNK, self.n_samples_fit_))

    def gallery_rows(self, indices: ArrayLike | None = None) -> np.ndarray:
        """The gallery's rows as the index stores them.

        Exact indexes give back the rows that were added (cosine rows
        L2-normalised, as FAISS stores them); IVF-PQ gives its re-ranking
        rows (half precision by default) or rows decoded from its codes.

        Parameters
        ----------
        indices : array-like of int, default=None
            Gallery rows to read; ``None`` reads them all.

        Returns
        -------
        rows : ndarray of shape (n_rows, n_features)
            float32 rows, or uint8 codes for ``metric="hamming"``.

        Examples
        --------
        >>> from sklearn_imgretrieval import NearestImageRetriever
        >>> NearestImageRetriever(algorithm="flat").fit([[0.0, 1.0], [2.0, 3.0]]).gallery_rows([1])
        array([[2., 3.]], dtype=float32)
        """
        check_is_fitted(self)
        if indices is None:
            return self.backend_.reconstruct(0, self.n_samples_fit_)
        items = np.asarray(indices, dtype=np.int64).ravel()
        if len(items) and (items.min() < 0 or items.max() >= self.n_samples_fit_):
            raise ValueError(f"Gallery indices must be in [0, {self.n_samples_fit_}); got {items.tolist()[:10]}.")
        order = np.argsort(items, kind="stable")
        rows = self.backend_.reconstruct(0, 0)
        rows = np.empty((len(items), *rows.shape[1:]), dtype=rows.dtype)
        sorted_items = items[order]
        # Contiguous runs are read at once (FAISS reconstructs a run in one call).
        breaks = np.flatnonzero(np.diff(sorted_items) != 1) + 1
        start = 0
        for run in np.split(sorted_items, breaks) if len(items) else []:
            rows[order[start : start + len(run)]] = self.backend_.reconstruct(int(run[0]), int(run[-1]) + 1)
            start += len(run)
        return rows

    @property
    def nbytes_(self) -> int:
        """Bytes the fitted index holds in memory: rows, codes, graph links, position maps.

        Read from the sizes of its parts, without allocator overhead; the
        "Choosing an index" page of the documentation compares it with
        measured peaks.
        """
        check_is_fitted(self)
        return int(self.backend_.nbytes)

    def _search(self, rows, k, subset=None):
        distances, indices = self.backend_.search(rows, k, self._search_settings(), subset)
        if callable(self.metric) and not np.isfinite(distances).all():
            raise ValueError(
                f"The metric {getattr(self.metric, '__name__', self.metric)!r} returned NaN or infinite "
                "distances; make it return finite numbers for every pair of rows."
            )
        return distances, indices

    def kneighbors(
        self,
        X: ArrayLike | None = None,
        n_neighbors: int | None = None,
        return_distance: bool = True,
        *,
        subset: ArrayLike | None = None,
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
        subset : array-like of bool or int, default=None
            Search only these gallery items: a boolean mask over the
            gallery's rows, or their row numbers. The restriction is applied
            inside the search, so each query gets ``n_neighbors`` answers
            whenever the subset holds that many.

        Returns
        -------
        distances : ndarray of shape (n_queries, n_neighbors)
            Distances to the neighbours, nearest first. Only when
            ``return_distance=True``.
        indices : ndarray of shape (n_queries, n_neighbors)
            Gallery indices of the neighbours.

        Examples
        --------
        >>> from sklearn_imgretrieval import NearestImageRetriever
        >>> retriever = NearestImageRetriever(n_neighbors=1).fit([[0.0], [1.0], [3.0]])
        >>> retriever.kneighbors([[0.9]], return_distance=False)
        array([[1]])
        >>> retriever.kneighbors([[0.9]], subset=[True, False, True], return_distance=False)
        array([[0]])
        """
        check_is_fitted(self)
        subset = self._check_subset(subset)
        n_neighbors = self._check_n_neighbors(n_neighbors, leave_one_out=X is None, subset=subset)
        if X is not None:
            distances, indices = self._search(self._check_query(X), n_neighbors, subset)
        else:
            distances, indices = self._leave_one_out(n_neighbors, subset)
        return (distances, indices) if return_distance else indices

    def kneighbors_of_gallery(
        self,
        indices: ArrayLike,
        n_neighbors: int | None = None,
        return_distance: bool = True,
        *,
        subset: ArrayLike | None = None,
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
        subset : array-like of bool or int, default=None
            Answer only with these gallery items, as for :meth:`kneighbors`.

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
        subset = self._check_subset(subset)
        n_neighbors = self._check_n_neighbors(n_neighbors, leave_one_out=True, subset=subset)
        items = np.asarray(indices, dtype=np.int64).ravel()
        rows = self.gallery_rows(items)
        if not len(items):
            empty = np.empty((0, n_neighbors))
            return (empty, empty.astype(np.int64)) if return_distance else empty.astype(np.int64)
        distances, found = self._search(rows, n_neighbors + 1, subset)
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

    def _leave_one_out(self, k, subset=None):
        """Each gallery item's ``k`` nearest others: ``k + 1`` found, the item itself dropped.

        When the item is not among them (approximate search, more than
        ``k`` exact duplicates, or an item outside ``subset``), the farthest
        is dropped instead.
        """
        distances = np.empty((self.n_samples_fit_, k), dtype=np.float64)
        indices = np.empty((self.n_samples_fit_, k), dtype=np.int64)
        for start, rows in self._gallery_chunks():
            stop = start + len(rows)
            items = np.arange(start, stop)
            distances[start:stop], indices[start:stop] = self._drop_self(*self._search(rows, k + 1, subset), items)
        return distances, indices

    def radius_neighbors(
        self,
        X: ArrayLike | None = None,
        radius: float | None = None,
        return_distance: bool = True,
        sort_results: bool = True,
        *,
        subset: ArrayLike | None = None,
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
        subset : array-like of bool or int, default=None
            Search only these gallery items, as for :meth:`kneighbors`.

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
        if not isinstance(radius, numbers.Real) or isinstance(radius, bool) or not 0 <= radius < np.inf:
            raise ValueError(f"radius must be a finite non-negative number, got {radius!r}.")
        subset = self._check_subset(subset)
        backend = self._backend_type()
        unsupported = backend.range_search_unsupported(self.metric, self.backend_.params)
        if unsupported:
            able = [
                name
                for name, other in BACKENDS.items()
                if other.serves(name, self.metric) and not other.range_search_unsupported(self.metric, other.Params())
            ]
            raise ValueError(
                f"algorithm={self.fit_algorithm_!r} has no radius search with these settings: {unsupported}. "
                f"Algorithms that have one for metric={self.metric!r}: {', '.join(map(repr, able))}."
            )
        settings = self._search_settings()
        if X is not None:
            distances, indices = self.backend_.range_search(self._check_query(X), radius, settings, subset)
        else:
            parts_d, parts_i = [], []
            for start, rows in self._gallery_chunks():
                d, i = self.backend_.range_search(rows, radius, settings, subset)
                for own, (row_d, row_i) in enumerate(zip(d, i), start=start):
                    keep = row_i != own
                    parts_d.append(row_d[keep])
                    parts_i.append(row_i[keep])
            distances = np.empty(len(parts_d), dtype=object)
            indices = np.empty(len(parts_i), dtype=object)
            distances[:], indices[:] = parts_d, parts_i
        return (distances, indices) if return_distance else indices

    # -------------------------------------------------------------- sklearn
    @property
    def index_(self):
        """Deprecated name of ``backend_``."""
        warnings.warn(
            "NearestImageRetriever.index_ was renamed backend_ in 0.1 and will be removed in 0.2; "
            "read gallery rows with gallery_rows() and the memory with nbytes_.",
            FutureWarning,
            stacklevel=2,
        )
        return self.backend_

    def __setstate__(self, state):
        state = dict(state)
        if "index_" in state:  # files saved before 0.1 name the backend index_
            state["backend_"] = state.pop("index_")
        super().__setstate__(state)
        backend = state.get("backend_")
        if backend is None:
            return
        # FAISS trusts the dimension it reads; a query of another width would
        # make it read past its buffers, so a stored index must match the gallery.
        binary = self._backend_type().input_dtype(self.metric) is None
        expected = self.n_features_in_ * (8 if binary else 1)
        if getattr(backend, "n_dims", expected) != expected:
            raise ValueError(
                f"The stored index has {backend.n_dims} dimensions but the retriever was fitted on "
                f"{self.n_features_in_} features: the file was altered."
            )
        if backend.n_samples != self.n_samples_fit_:
            raise ValueError(
                f"The stored index has {backend.n_samples} rows but the retriever counts "
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
