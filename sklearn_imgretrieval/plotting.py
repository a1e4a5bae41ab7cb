"""Pictures of retrieval results and embeddings (matplotlib, imported on use)."""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from PIL import Image

from . import _image_io
from ._image_shape import infer_image_shape

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .duplicates import Duplicates

__all__ = ["EmbeddingDisplay", "RetrievalDisplay", "plot_duplicates", "plot_embedding", "plot_retrieval"]

_MATCH, _MISMATCH = "#2ca02c", "#d62728"
_KEPT = _MATCH


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "Plotting needs matplotlib. Install it with "
            "`pip install matplotlib` or `pip install sklearn-imgretrieval[plot]`."
        ) from exc
    return plt


def _with_parameters_of(method, wrapper):
    """``wrapper``'s docstring with its ``{parameters}`` line replaced by ``method``'s Parameters section.

    A ``plot_*`` function takes the parameters of its display's method:
    they are documented once, there.
    """
    source = inspect.getdoc(method)
    start = source.index("Parameters\n----------\n")
    parameters = source[start : source.index("\n\nReturns\n-------", start)]
    return inspect.cleandoc(wrapper.__doc__).replace("{parameters}", parameters)


def _displayable(image, image_shape=None):
    """One image as an (H, W) or (H, W, 3) float array in [0, 1] for imshow.

    Accepts a path, a PIL image, an (h, w[, c]) array, or a flattened row.
    """
    if _image_io.is_path(image) or isinstance(image, Image.Image):
        channels = _image_io.read_header(image)[2]
        image = _image_io.load_one(image, channels, size=None, crop=None)
    image = np.asarray(image)
    if image.ndim == 1:
        image = image.reshape(infer_image_shape(image.size, image_shape))
    image = _image_io.scale_to_unit(image)
    if image.ndim == 3 and image.shape[2] in (1, 2):
        image = image[:, :, 0]
    elif image.ndim == 3:
        image = image[:, :, :3]
    return np.clip(image, 0.0, 1.0)


def _figure_grid(plt, ax, n_rows, n_cols, *, cell, hspace):
    """A figure and an ``n_rows x n_cols`` grid of cells of ``cell`` (width, height) inches,
    or the grid that splits ``ax``'s area, which it replaces."""
    if ax is None:
        fig = plt.figure(figsize=(cell[0] * n_cols, cell[1] * n_rows))
        return fig, fig.add_gridspec(n_rows, n_cols, wspace=0.1, hspace=hspace)
    fig, grid = ax.figure, ax.get_subplotspec().subgridspec(n_rows, n_cols, wspace=0.1, hspace=hspace)
    ax.remove()
    return fig, grid


def _show(ax, image, title=None, frame=None):
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0.0, vmax=1.0)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(frame is not None)
        if frame is not None:
            spine.set_edgecolor(frame)
            spine.set_linewidth(3)
    if title is not None:
        ax.set_title(title, fontsize=8)


class RetrievalDisplay:
    """Retrieval results as a grid: one query per row followed by its neighbours.

    Build it with :meth:`from_estimator` (which asks a fitted estimator for
    the neighbours) or :meth:`from_predictions` (neighbours already found),
    as scikit-learn's displays are built; the constructor only stores its
    arguments and :meth:`plot` draws them.

    Parameters
    ----------
    query_images : sequence of images
        Paths, PIL images, arrays or flattened rows, one per query.
    gallery_images : sequence of images
        The gallery, indexed by ``indices``.
    indices : array-like of shape (n_queries, n_neighbors)
        Gallery indices of each query's neighbours, as ``kneighbors`` returns.
    distances : array-like of shape (n_queries, n_neighbors), default=None
        Shown in the neighbours' titles.
    query_labels, gallery_labels : array-like, default=None
        When both are given, neighbours sharing the query's label are framed
        in green and the others in red.
    image_shape : tuple, default=None
        ``(H, W[, C])`` of flattened rows that are not square images.

    Attributes
    ----------
    axes_ : ndarray of matplotlib Axes of shape (n_queries, n_neighbors + 1)
        The query (column 0) and its neighbours, row by row. A grid has many
        axes, so, like :class:`sklearn.inspection.PartialDependenceDisplay`,
        it has ``axes_`` where one-axes displays have ``ax_``.
    figure_ : matplotlib Figure
        The figure holding the grid.

    See Also
    --------
    plot_retrieval : The same picture in one call, returning the figure.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from sklearn_imgretrieval import NearestImageRetriever
    >>> from sklearn_imgretrieval.plotting import RetrievalDisplay
    >>> rng = np.random.default_rng(0)
    >>> gallery = rng.random((20, 64))  # flattened 8x8 images
    >>> retriever = NearestImageRetriever(n_neighbors=3).fit(gallery)
    >>> display = RetrievalDisplay.from_estimator(retriever, gallery[:2], gallery)
    >>> display.axes_.shape
    (2, 4)
    >>> display.axes_[0, 1].get_title()
    '0'
    """

    def __init__(
        self,
        query_images: Sequence[Any],
        gallery_images: Sequence[Any],
        indices: ArrayLike,
        distances: ArrayLike | None = None,
        query_labels: ArrayLike | None = None,
        gallery_labels: ArrayLike | None = None,
        *,
        image_shape: tuple[int, ...] | None = None,
    ) -> None:
        self.query_images = query_images
        self.gallery_images = gallery_images
        self.indices = indices
        self.distances = distances
        self.query_labels = query_labels
        self.gallery_labels = gallery_labels
        self.image_shape = image_shape

    def plot(self, *, query_titles: Sequence[str] | None = None, ax: Axes | None = None) -> RetrievalDisplay:
        """Draw the grid.

        Parameters
        ----------
        query_titles : sequence of str, default=None
            Titles of the queries; ``"query: <label>"`` (or ``"query"``) otherwise.
        ax : matplotlib Axes, default=None
            Draw into this axes (its area is split into the grid, and the
            axes itself removed); a new figure otherwise.

        Returns
        -------
        display : RetrievalDisplay
            This display, with ``axes_`` and ``figure_`` set.
        """
        plt = _pyplot()
        query_images, gallery_images = self.query_images, self.gallery_images
        # indexed as given (lists of str stay str), as plot_retrieval always did
        query_labels: Any = self.query_labels
        gallery_labels: Any = self.gallery_labels
        indices = np.asarray(self.indices)
        if indices.ndim != 2 or len(indices) != len(query_images):
            raise ValueError(
                f"indices must have shape (n_queries, n_neighbors) with n_queries="
                f"{len(query_images)}; got shape {indices.shape}."
            )
        distances = None if self.distances is None else np.asarray(self.distances)
        n_rows, n_neighbors = indices.shape
        n_cols = n_neighbors + 1
        fig, grid = _figure_grid(plt, ax, n_rows, n_cols, cell=(1.4, 1.5), hspace=0.35)
        show_match = query_labels is not None and gallery_labels is not None
        axes = np.empty((n_rows, n_cols), dtype=object)
        for row in range(n_rows):
            if query_titles is not None:
                title = query_titles[row]
            else:
                title = "query" if query_labels is None else f"query: {query_labels[row]}"
            axes[row, 0] = fig.add_subplot(grid[row, 0])
            _show(axes[row, 0], _displayable(query_images[row], self.image_shape), title)
            for col, index in enumerate(indices[row], start=1):
                title = f"#{col}" if distances is None else f"{float(distances[row, col - 1]):.3g}"
                frame = None
                if show_match:
                    same = gallery_labels[index] == query_labels[row]
                    frame = _MATCH if same else _MISMATCH
                axes[row, col] = fig.add_subplot(grid[row, col])
                _show(axes[row, col], _displayable(gallery_images[index], self.image_shape), title, frame)
        self.axes_, self.figure_ = axes, fig
        return self

    @classmethod
    def from_predictions(
        cls,
        query_images: Sequence[Any],
        gallery_images: Sequence[Any],
        indices: ArrayLike,
        distances: ArrayLike | None = None,
        *,
        query_labels: ArrayLike | None = None,
        gallery_labels: ArrayLike | None = None,
        query_titles: Sequence[str] | None = None,
        image_shape: tuple[int, ...] | None = None,
        ax: Axes | None = None,
    ) -> RetrievalDisplay:
        """Plot neighbours already found, for instance by ``kneighbors``.

        Parameters
        ----------
        query_images : sequence of images
            Paths, PIL images, arrays or flattened rows, one per query.
        gallery_images : sequence of images
            The gallery, indexed by ``indices``.
        indices : array-like of shape (n_queries, n_neighbors)
            Gallery indices of each query's neighbours.
        distances : array-like of shape (n_queries, n_neighbors), default=None
            Shown in the neighbours' titles; their rank otherwise.
        query_labels, gallery_labels : array-like, default=None
            When both are given, neighbours sharing the query's label are
            framed in green and the others in red.
        query_titles : sequence of str, default=None
            Titles of the queries; ``"query: <label>"`` (or ``"query"``) otherwise.
        image_shape : tuple, default=None
            ``(H, W[, C])`` of flattened rows that are not square images.
        ax : matplotlib Axes, default=None
            Draw into this axes (its area is split into the grid); a new
            figure otherwise.

        Returns
        -------
        display : RetrievalDisplay
            The display, drawn.

        Examples
        --------
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> import numpy as np
        >>> from sklearn_imgretrieval.plotting import RetrievalDisplay
        >>> gallery = np.random.default_rng(0).random((6, 8, 8))
        >>> display = RetrievalDisplay.from_predictions(gallery[:2], gallery, [[0, 3], [1, 4]], [[0, 0.5], [0, 0.7]])
        >>> [ax.get_title() for ax in display.axes_[1]]
        ['query', '0', '0.7']
        """
        display = cls(
            query_images,
            gallery_images,
            indices,
            distances,
            query_labels,
            gallery_labels,
            image_shape=image_shape,
        )
        return display.plot(query_titles=query_titles, ax=ax)

    @classmethod
    def from_estimator(
        cls,
        estimator: Any,
        query_images: Sequence[Any],
        gallery_images: Sequence[Any],
        *,
        n_neighbors: int | None = None,
        query_labels: ArrayLike | None = None,
        gallery_labels: ArrayLike | None = None,
        query_titles: Sequence[str] | None = None,
        image_shape: tuple[int, ...] | None = None,
        ax: Axes | None = None,
    ) -> RetrievalDisplay:
        """Ask a fitted estimator for the queries' neighbours, and plot them.

        Parameters
        ----------
        estimator : estimator with ``kneighbors``
            A fitted :class:`~sklearn_imgretrieval.RetrievalPipeline` or
            :class:`~sklearn_imgretrieval.NearestImageRetriever`; its gallery
            must be ``gallery_images``, in the same order.
        query_images : sequence of images
            The queries, in the format ``estimator`` takes, which must also be
            drawable: paths, PIL images, arrays or flattened rows of pixels.
        gallery_images : sequence of images
            The images the estimator was fitted on, to draw the neighbours.
        n_neighbors : int, default=None
            Neighbours per query; the estimator's ``n_neighbors`` by default.
        query_labels : array-like of shape (n_queries,), default=None
            Labels of the queries, shown in their titles.
        gallery_labels : array-like of shape (n_gallery,), default=None
            Labels of the gallery; the labels the estimator was fitted with
            (its last step's ``gallery_labels_``) by default. With
            ``query_labels``, neighbours are framed in green when they share
            the query's label and in red otherwise.
        query_titles : sequence of str, default=None
            Titles of the queries; ``"query: <label>"`` (or ``"query"``) otherwise.
        image_shape : tuple, default=None
            ``(H, W[, C])`` of flattened rows that are not square images.
        ax : matplotlib Axes, default=None
            Draw into this axes (its area is split into the grid); a new
            figure otherwise.

        Returns
        -------
        display : RetrievalDisplay
            The display, drawn, its ``indices`` and ``distances`` those
            ``estimator.kneighbors`` returned.

        Examples
        --------
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> from sklearn_imgretrieval import ImagePreprocessor, NearestImageRetriever, make_retrieval_pipeline
        >>> from sklearn_imgretrieval.datasets import load_digits_images
        >>> from sklearn_imgretrieval.plotting import RetrievalDisplay
        >>> images, labels = load_digits_images()
        >>> pipe = make_retrieval_pipeline(ImagePreprocessor(), NearestImageRetriever(n_neighbors=4))
        >>> pipe = pipe.fit(images[:500], labels[:500])
        >>> display = RetrievalDisplay.from_estimator(pipe, images[500:503], images[:500], query_labels=labels[500:503])
        >>> display.indices.shape, display.axes_.shape
        ((3, 4), (3, 5))
        """
        if not hasattr(estimator, "kneighbors"):
            raise TypeError(f"{type(estimator).__name__} has no kneighbors method: pass a fitted retrieval estimator.")
        distances, indices = estimator.kneighbors(query_images, n_neighbors=n_neighbors)
        if gallery_labels is None:
            final = estimator[-1] if hasattr(estimator, "steps") else estimator
            gallery_labels = getattr(final, "gallery_labels_", None)
        return cls.from_predictions(
            query_images,
            gallery_images,
            indices,
            distances,
            query_labels=query_labels,
            gallery_labels=gallery_labels,
            query_titles=query_titles,
            image_shape=image_shape,
            ax=ax,
        )


def plot_retrieval(
    query_images: Sequence[Any],
    gallery_images: Sequence[Any],
    indices: ArrayLike,
    distances: ArrayLike | None = None,
    query_labels: ArrayLike | None = None,
    gallery_labels: ArrayLike | None = None,
    *,
    query_titles: Sequence[str] | None = None,
    image_shape: tuple[int, ...] | None = None,
    ax: Axes | None = None,
) -> Figure:
    """A grid with one query per row followed by its neighbours.

    The figure of :meth:`RetrievalDisplay.from_predictions`.

    {parameters}

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure holding the grid.

    See Also
    --------
    RetrievalDisplay : The same picture as a display, which also keeps the axes.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_imgretrieval.plotting import plot_retrieval
    >>> gallery = np.random.default_rng(0).random((6, 8, 8))
    >>> fig = plot_retrieval(gallery[:2], gallery, [[0, 3], [1, 4]], distances=[[0, 0.5], [0, 0.7]])
    >>> len(fig.axes)
    6
    """
    display = RetrievalDisplay(
        query_images,
        gallery_images,
        indices,
        distances,
        query_labels,
        gallery_labels,
        image_shape=image_shape,
    )
    return display.plot(query_titles=query_titles, ax=ax).figure_


plot_retrieval.__doc__ = _with_parameters_of(RetrievalDisplay.from_predictions, plot_retrieval)


def _project(embeddings: ArrayLike, method: str, random_state: int | None) -> tuple[np.ndarray, str]:
    """Embeddings projected to 2-D, and the name of the projection's axes."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 2 or len(embeddings) < 2:
        raise ValueError(f"embeddings must be a 2-D array with at least 2 rows; got shape {embeddings.shape}.")
    if method not in ("pca", "tsne"):
        raise ValueError(f'method must be "pca" or "tsne", got {method!r}.')
    if embeddings.shape[1] <= 2:
        return embeddings, "feature"
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(2, random_state=random_state).fit_transform(embeddings), "PCA"
    from sklearn.manifold import TSNE

    perplexity = min(30.0, (len(embeddings) - 1) / 3)
    return TSNE(2, perplexity=perplexity, random_state=random_state).fit_transform(embeddings), "t-SNE"


class EmbeddingDisplay:
    """A 2-D scatter of embeddings, coloured by label or cluster.

    Build it with :meth:`from_estimator` (which embeds images with a fitted
    transformer) or :meth:`from_predictions` (embeddings already computed);
    both project to 2-D first. The constructor only stores its arguments
    and :meth:`plot` draws them.

    Parameters
    ----------
    points : array-like of shape (n_samples, 2)
        The projected embeddings.
    labels : array-like of shape (n_samples,), default=None
        Class or cluster of each point; one colour each, with a legend.
    axis_name : str, default="PCA"
        Name of the projection; the axes are labelled ``"<axis_name> 1"``
        and ``"<axis_name> 2"``.

    Attributes
    ----------
    ax_ : matplotlib Axes
        The axes holding the scatter.
    figure_ : matplotlib Figure
        The figure holding the scatter.

    See Also
    --------
    plot_embedding : The same picture in one call, returning the figure.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from sklearn.decomposition import PCA
    >>> from sklearn_imgretrieval.plotting import EmbeddingDisplay
    >>> X = np.random.default_rng(0).normal(size=(30, 16))
    >>> display = EmbeddingDisplay.from_estimator(PCA(5).fit(X), X, labels=np.repeat([0, 1, 2], 10))
    >>> display.points.shape, display.ax_.get_xlabel()
    ((30, 2), 'PCA 1')
    """

    def __init__(self, points: ArrayLike, labels: ArrayLike | None = None, *, axis_name: str = "PCA") -> None:
        self.points = points
        self.labels = labels
        self.axis_name = axis_name

    def plot(self, *, ax: Axes | None = None) -> EmbeddingDisplay:
        """Draw the scatter.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Draw into this axes; a new figure otherwise.

        Returns
        -------
        display : EmbeddingDisplay
            This display, with ``ax_`` and ``figure_`` set.
        """
        plt = _pyplot()
        points = np.asarray(self.points)
        if ax is None:
            fig, ax = plt.subplots(figsize=(6, 5))
        else:
            fig = ax.figure
        if self.labels is None:
            ax.scatter(points[:, 0], points[:, 1], s=8)
        else:
            labels = np.asarray(self.labels)
            for label in np.unique(labels):
                mask = labels == label
                ax.scatter(points[mask, 0], points[mask, 1], s=8, label=str(label))
            ax.legend(markerscale=2, fontsize=8, loc="best")
        ax.set_xlabel(f"{self.axis_name} 1")
        ax.set_ylabel(f"{self.axis_name} 2")
        self.ax_, self.figure_ = ax, fig
        return self

    @classmethod
    def from_predictions(
        cls,
        embeddings: ArrayLike,
        labels: ArrayLike | None = None,
        *,
        method: Literal["pca", "tsne"] = "pca",
        random_state: int | None = 0,
        ax: Axes | None = None,
    ) -> EmbeddingDisplay:
        """Project embeddings already computed to 2-D, and plot them.

        Parameters
        ----------
        embeddings : array-like of shape (n_samples, n_features)
            Embeddings, for example an embedder's ``transform`` output.
        labels : array-like of shape (n_samples,), default=None
            Class or cluster of each point; one colour each, with a legend.
        method : {"pca", "tsne"}, default="pca"
            Projection to 2-D: PCA (fast, linear) or t-SNE (slower, keeps local
            neighbourhoods). Embeddings with 2 features are drawn as they are.
        random_state : int, default=0
            Seed of the projection.
        ax : matplotlib Axes, default=None
            Draw into this axes; a new figure otherwise.

        Returns
        -------
        display : EmbeddingDisplay
            The display, drawn.

        Examples
        --------
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> import numpy as np
        >>> from sklearn_imgretrieval.plotting import EmbeddingDisplay
        >>> points = np.random.default_rng(0).normal(size=(30, 5))
        >>> display = EmbeddingDisplay.from_predictions(points, np.repeat([0, 1, 2], 10))
        >>> len(display.ax_.get_legend().get_texts())
        3
        """
        points, axis_name = _project(embeddings, method, random_state)
        return cls(points, labels, axis_name=axis_name).plot(ax=ax)

    @classmethod
    def from_estimator(
        cls,
        estimator: Any,
        X: Any,
        labels: ArrayLike | None = None,
        *,
        method: Literal["pca", "tsne"] = "pca",
        random_state: int | None = 0,
        ax: Axes | None = None,
    ) -> EmbeddingDisplay:
        """Embed ``X`` with a fitted transformer, project to 2-D, and plot.

        Parameters
        ----------
        estimator : fitted transformer
            An embedder, or a pipeline of preprocessing and embedding steps;
            its ``transform`` output is what is drawn.
        X : images or array-like
            The images, in the format ``estimator`` takes.
        labels : array-like of shape (n_samples,), default=None
            Class or cluster of each image; one colour each, with a legend.
        method : {"pca", "tsne"}, default="pca"
            Projection to 2-D, as in :meth:`from_predictions`.
        random_state : int, default=0
            Seed of the projection.
        ax : matplotlib Axes, default=None
            Draw into this axes; a new figure otherwise.

        Returns
        -------
        display : EmbeddingDisplay
            The display, drawn.
        """
        if not hasattr(estimator, "transform"):
            raise TypeError(f"{type(estimator).__name__} has no transform method: pass a fitted transformer.")
        embeddings = estimator.transform(X)
        if hasattr(embeddings, "toarray"):
            raise ValueError(
                f"{type(estimator).__name__}.transform returned a sparse matrix, not embeddings; "
                "pass the steps before the retriever (pipe[:-1])."
            )
        return cls.from_predictions(embeddings, labels, method=method, random_state=random_state, ax=ax)


def plot_embedding(
    embeddings: ArrayLike,
    labels: ArrayLike | None = None,
    method: Literal["pca", "tsne"] = "pca",
    *,
    random_state: int | None = 0,
    ax: Axes | None = None,
) -> Figure:
    """A 2-D scatter of embeddings, coloured by label or cluster.

    The figure of :meth:`EmbeddingDisplay.from_predictions`.

    {parameters}

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure holding the scatter.

    See Also
    --------
    EmbeddingDisplay : The same picture as a display, which also keeps the axes.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_imgretrieval.plotting import plot_embedding
    >>> points = np.random.default_rng(0).normal(size=(30, 5))
    >>> fig = plot_embedding(points, labels=np.repeat([0, 1, 2], 10))
    >>> fig.axes[0].get_xlabel()
    'PCA 1'
    """
    _pyplot()
    return EmbeddingDisplay.from_predictions(
        embeddings, labels, method=method, random_state=random_state, ax=ax
    ).figure_


plot_embedding.__doc__ = _with_parameters_of(EmbeddingDisplay.from_predictions, plot_embedding)


def _short_name(item, width=18):
    """A file's name, shortened from the left to ``width`` characters."""
    name = os.path.basename(os.fspath(item)) if _image_io.is_path(item) else f"#{item}"
    return name if len(name) <= width else "..." + name[-(width - 3) :]


def plot_duplicates(
    duplicates: Duplicates,
    images: Sequence[Any] | None = None,
    *,
    max_groups: int = 10,
    max_per_group: int = 8,
    keep: Iterable[int] | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Groups of duplicates side by side, one group per row.

    Parameters
    ----------
    duplicates : Duplicates
        What :func:`~sklearn_imgretrieval.duplicates.find_duplicates` returned.
    images : sequence of images, default=None
        The images, indexed like ``duplicates.items``; needed when they are
        not paths (queries, then reference images).
    max_groups : int, default=10
        Groups drawn, the first ones. When there are more, the figure's
        title says how many were left out.
    max_per_group : int, default=8
        Images drawn per group, the first ones (the title says so when a
        group has more).
    keep : array-like of int, default=None
        Items to frame in green, for instance those a move would keep.
    ax : matplotlib Axes, default=None
        Draw into this axes (its area is split into the grid); a new figure
        otherwise.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure holding the grid; each image is titled with its file
        name (or position) and its size.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_imgretrieval import find_duplicates
    >>> from sklearn_imgretrieval.plotting import plot_duplicates
    >>> images = np.random.default_rng(0).integers(0, 256, size=(3, 32, 32), dtype=np.uint8)
    >>> images[2] = images[0]
    >>> found = find_duplicates(images, method="phash")
    >>> fig = plot_duplicates(found, images)
    >>> len(fig.axes)
    2
    """
    plt = _pyplot()
    groups = [group[:max_per_group] for group in duplicates.groups[:max_groups]]
    if not groups:
        raise ValueError("No groups of duplicates to plot: find_duplicates found none.")
    pictures: Any = images
    if pictures is None:
        if not all(_image_io.is_path(item) for item in duplicates.items):
            raise ValueError("The duplicates were found on in-memory images: pass them as images= to plot them.")
        pictures = duplicates.items
    elif len(pictures) != len(duplicates.items):
        raise ValueError(f"images has {len(pictures)} images but the duplicates have {len(duplicates.items)} items.")
    kept = set() if keep is None else {int(i) for i in keep}
    n_rows, n_cols = len(groups), max(len(group) for group in groups)
    area = None if ax is None else ax.get_position()
    fig, grid = _figure_grid(plt, ax, n_rows, n_cols, cell=(1.6, 1.7), hspace=0.45)
    for row, group in enumerate(groups):
        for col, index in enumerate(group):
            image = _displayable(pictures[index])
            title = f"{_short_name(duplicates.items[index])}\n{image.shape[1]}x{image.shape[0]}"
            frame = _KEPT if index in kept else None
            _show(fig.add_subplot(grid[row, col]), image, title, frame)
    shown = shown_of_duplicates(duplicates.groups, max_groups, max_per_group)
    if shown and area is None:
        fig.suptitle(f"Showing {shown}")
    elif shown:  # the user's figure keeps its own title: the note goes above the area of the axes
        fig.text((area.x0 + area.x1) / 2, area.y1 + 0.04, f"Showing {shown}", ha="center", va="bottom")
    return fig


def shown_of_duplicates(groups, max_groups, max_per_group):
    """What a plot of the first ``max_groups`` groups (``max_per_group`` images each) shows, when it
    leaves some out ("the first 10 of 12 groups of duplicates (2 not drawn)"); "" when it shows all."""
    parts = []
    if len(groups) > max_groups:
        parts.append(
            f"the first {max_groups} of {len(groups)} groups of duplicates ({len(groups) - max_groups} not drawn)"
        )
    larger = sum(len(group) > max_per_group for group in groups[:max_groups])
    if larger:
        images = "image" if max_per_group == 1 else f"{max_per_group} images"
        parts.append(f"the first {images} of {larger} larger group{'s' if larger > 1 else ''}")
    return "; ".join(parts)
