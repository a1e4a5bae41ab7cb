"""RetrievalPipeline: a Pipeline whose last step answers neighbour queries."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Literal

from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

if TYPE_CHECKING:
    import numpy as np
    import scipy.sparse as sp
    from joblib import Memory
    from numpy.typing import ArrayLike

    from ._typing import Images

__all__ = ["RetrievalPipeline", "make_retrieval_pipeline", "set_query_batch_size"]


class RetrievalPipeline(Pipeline):
    """A :class:`sklearn.pipeline.Pipeline` with ``kneighbors`` and ``kneighbors_graph``.

    Queries pass through every step but the last (decoding, embedding), then
    the last step, typically a
    :class:`~sklearn_imgretrieval.NearestImageRetriever`, answers them.
    ``partial_fit`` grows the gallery chunk by chunk, the steps before the
    retriever staying as they are. Everything else is ``Pipeline``: ``fit``,
    ``predict``, ``score``, ``transform``, ``set_params`` with
    ``step__param`` names, so that ``GridSearchCV`` and ``joblib.dump`` work
    as usual.

    Parameters
    ----------
    steps : list of (name, estimator) tuples
        As for ``Pipeline``; the last estimator must have ``kneighbors``.
    memory : str or object with the joblib.Memory interface, default=None
        Caches fitted transformers, as for ``Pipeline``.
    verbose : bool, default=False
        Print the time each step takes to fit.
    transform_input : list of str, default=None
        Metadata parameters to transform with the steps before the one that
        takes them, as for :class:`sklearn.pipeline.Pipeline` (metadata
        routing only).

    See Also
    --------
    make_retrieval_pipeline : Build one with step names chosen for you.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.decomposition import PCA
    >>> from sklearn_imgretrieval import NearestImageRetriever, RetrievalPipeline
    >>> X = np.random.default_rng(0).random((20, 64), dtype=np.float32)
    >>> pipe = RetrievalPipeline([("pca", PCA(4)), ("neighbors", NearestImageRetriever(n_neighbors=3))])
    >>> pipe.set_params(neighbors__n_neighbors=2).fit(X)
    RetrievalPipeline(steps=[('pca', PCA(n_components=4)),
                             ('neighbors', NearestImageRetriever(n_neighbors=2))])
    >>> pipe.kneighbors(X[:1], return_distance=False)
    array([[ 0, 10]])
    """

    def _embed(self, X):
        check_is_fitted(self)
        if X is None:
            return None
        for _, step in self.steps[:-1]:
            if step is not None and step != "passthrough":
                X = step.transform(X)
        return X

    def partial_fit(self, X: Images, y: ArrayLike | None = None) -> RetrievalPipeline:
        """Add images to the gallery: embed ``X`` with the steps before the last, then ``partial_fit`` the last.

        The steps before the retriever are never refitted, so that every
        chunk is embedded the same way. An unfitted step is fitted on the
        first chunk when its fit learns nothing but the images' shape
        (``ImagePreprocessor``, ``PretrainedCNNEmbedder`` without fine-tuning);
        a step that learns from its data (PCA, an autoencoder) must be fitted
        on a sample first: ``pipe[:-1].fit(sample)``.

        Parameters
        ----------
        X : images or array-like
            A chunk of images, in the format the first step takes.
        y : array-like of shape (n_samples,), default=None
            Their labels, if the gallery has labels.

        Returns
        -------
        self : RetrievalPipeline
            The pipeline, with the chunk added to the gallery.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn_imgretrieval import ImagePreprocessor, NearestImageRetriever, make_retrieval_pipeline
        >>> images = np.random.default_rng(0).integers(0, 256, size=(30, 12, 12), dtype=np.uint8)
        >>> pre = ImagePreprocessor(size=(8, 8), color_mode="grayscale")
        >>> pipe = make_retrieval_pipeline(pre, NearestImageRetriever(n_neighbors=2))
        >>> for chunk in np.array_split(images, 3):
        ...     pipe = pipe.partial_fit(chunk)
        >>> pipe[-1].n_samples_fit_
        30
        """
        Xt = X
        for name, step in self.steps[:-1]:
            if step is None or step == "passthrough":
                continue
            if not _is_fitted(step):
                if not getattr(step, "_fitted_from_any_sample", False):
                    raise ValueError(
                        f"Step {name!r} ({type(step).__name__}) is not fitted and learns from the "
                        "data it is fitted on, so fitting it on the first chunk alone would embed "
                        "later chunks differently. Fit the steps before the retriever on a "
                        "sample first, pipe[:-1].fit(sample), then call partial_fit chunk by chunk."
                    )
                step.fit(Xt)
            Xt = step.transform(Xt)
        self._final_estimator.partial_fit(Xt, y)
        return self

    def kneighbors(
        self,
        X: Images | None = None,
        n_neighbors: int | None = None,
        return_distance: bool = True,
        *,
        subset: ArrayLike | None = None,
    ) -> tuple[np.ndarray, np.ndarray] | np.ndarray:
        """Embed ``X`` with all steps but the last, then ask the last for neighbours.

        Parameters
        ----------
        X : images or array-like, default=None
            Queries in the format the first step takes. ``None`` queries the
            gallery itself, each item left out of its own list.
        n_neighbors : int, default=None
            Neighbours per query; defaults to the last step's ``n_neighbors``.
        return_distance : bool, default=True
            Whether to return distances as well.
        subset : array-like of bool or int, default=None
            Answer only with these gallery items (a boolean mask or gallery
            indices), inside the search: see
            :meth:`NearestImageRetriever.kneighbors`.

        Returns
        -------
        distances : ndarray of shape (n_queries, n_neighbors)
            Only when ``return_distance=True``.
        indices : ndarray of shape (n_queries, n_neighbors)
            Gallery indices of the neighbours, nearest first.
        """
        if subset is None:  # any final step with kneighbors, as before
            return self._final_estimator.kneighbors(
                self._embed(X), n_neighbors=n_neighbors, return_distance=return_distance
            )
        return self._final_estimator.kneighbors(
            self._embed(X), n_neighbors=n_neighbors, return_distance=return_distance, subset=subset
        )

    def kneighbors_graph(
        self,
        X: Images | None = None,
        n_neighbors: int | None = None,
        mode: Literal["connectivity", "distance"] = "connectivity",
    ) -> sp.csr_matrix:
        """Sparse k-NN graph of the queries ``X`` against the gallery.

        Parameters
        ----------
        X : images or array-like, default=None
            Queries; ``None`` queries the gallery leave-one-out.
        n_neighbors : int, default=None
            Neighbours per query.
        mode : {"connectivity", "distance"}, default="connectivity"
            Values of the graph.

        Returns
        -------
        graph : sparse matrix of shape (n_queries, n_gallery)
            CSR matrix.
        """
        return self._final_estimator.kneighbors_graph(self._embed(X), n_neighbors=n_neighbors, mode=mode)


def _is_fitted(estimator):
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        return False
    return True


def _step_names(estimators):
    """Lower-case class names, numbered when repeated (as ``make_pipeline`` does)."""
    names = [type(estimator).__name__.lower() for estimator in estimators]
    repeated = {name for name, count in Counter(names).items() if count > 1}
    seen = Counter()
    unique = []
    for name in names:
        if name in repeated:
            seen[name] += 1
            name = f"{name}-{seen[name]}"
        unique.append(name)
    return unique


def make_retrieval_pipeline(
    *steps: Any, memory: str | Memory | None = None, verbose: bool = False
) -> RetrievalPipeline:
    """Build a :class:`RetrievalPipeline`, naming each step after its class.

    Names follow :func:`sklearn.pipeline.make_pipeline`: ``PCA`` becomes
    ``"pca"``, ``NearestImageRetriever`` becomes ``"nearestimageretriever"``,
    so a grid reads ``{"pca__n_components": [32, 64]}``.

    Parameters
    ----------
    *steps : estimators
        The steps in order; the last must have ``kneighbors``.
    memory : str or object with the joblib.Memory interface, default=None
        Caches fitted transformers.
    verbose : bool, default=False
        Print the time each step takes to fit.

    Returns
    -------
    pipeline : RetrievalPipeline
        The unfitted pipeline.

    Examples
    --------
    >>> from sklearn.decomposition import PCA
    >>> from sklearn_imgretrieval import ImagePreprocessor, NearestImageRetriever, make_retrieval_pipeline
    >>> pipe = make_retrieval_pipeline(ImagePreprocessor(size=(8, 8)), PCA(4), NearestImageRetriever())
    >>> [name for name, _ in pipe.steps]
    ['imagepreprocessor', 'pca', 'nearestimageretriever']
    """
    if not steps:
        raise ValueError("make_retrieval_pipeline needs at least one step.")
    if not hasattr(steps[-1], "kneighbors"):
        raise TypeError(
            f"The last step must answer neighbour queries (have kneighbors); got "
            f"{type(steps[-1]).__name__}. End the pipeline with NearestImageRetriever()."
        )
    return RetrievalPipeline(list(zip(_step_names(steps), steps)), memory=memory, verbose=verbose)


def set_query_batch_size(pipeline: RetrievalPipeline, n_queries: int) -> RetrievalPipeline:
    """Embed ``n_queries`` images in one batch of their own size, not a padded one.

    A Keras embedder pads every batch to ``batch_size`` rows, so that an
    image's embedding does not depend on its batch-mates; for a few queries
    that is mostly padding (32 images through the network for one). Each
    step's ``batch_size`` is lowered to ``n_queries`` (in memory: a loaded
    index file is not changed). A query's embedding then differs from the
    gallery's computation by float rounding (about 1e-7), which no ranking
    sees.

    Parameters
    ----------
    pipeline : RetrievalPipeline
        A fitted pipeline, changed in place.
    n_queries : int
        Images embedded per call from now on.

    Returns
    -------
    pipeline : RetrievalPipeline
        The same pipeline.

    Examples
    --------
    >>> from sklearn.decomposition import PCA
    >>> from sklearn_imgretrieval import NearestImageRetriever, make_retrieval_pipeline
    >>> from sklearn_imgretrieval.pipeline import set_query_batch_size
    >>> pipe = make_retrieval_pipeline(PCA(2), NearestImageRetriever())
    >>> set_query_batch_size(pipe, 1) is pipe  # PCA has no batch_size: nothing changes
    True
    """
    for _, step in pipeline.steps[:-1]:
        if hasattr(step, "get_params") and "batch_size" in step.get_params(deep=False) and step.batch_size:
            step.set_params(batch_size=max(1, min(step.batch_size, n_queries)))
    return pipeline
