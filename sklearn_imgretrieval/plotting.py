"""Pictures of retrieval results and embeddings (matplotlib, imported on use)."""

import os

import numpy as np
from PIL import Image

from . import _image_io
from ._image_shape import infer_image_shape

__all__ = ["plot_duplicates", "plot_embedding", "plot_retrieval"]

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


def plot_retrieval(
    query_images,
    gallery_images,
    indices,
    distances=None,
    query_labels=None,
    gallery_labels=None,
    *,
    query_titles=None,
    image_shape=None,
    ax=None,
):
    """A grid with one query per row followed by its neighbours.

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
    query_titles : sequence of str, default=None
        Titles of the queries; ``"query: <label>"`` (or ``"query"``) otherwise.
    image_shape : tuple, default=None
        ``(H, W[, C])`` of flattened rows that are not square images.
    ax : matplotlib Axes, default=None
        Draw into this axes (its area is split into the grid); a new figure
        otherwise.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure holding the grid.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_imgretrieval.plotting import plot_retrieval
    >>> gallery = np.random.default_rng(0).random((6, 8, 8))
    >>> fig = plot_retrieval(gallery[:2], gallery, [[0, 3], [1, 4]], distances=[[0, 0.5], [0, 0.7]])
    >>> len(fig.axes)
    6
    """
    plt = _pyplot()
    indices = np.asarray(indices)
    if indices.ndim != 2 or len(indices) != len(query_images):
        raise ValueError(
            f"indices must have shape (n_queries, n_neighbors) with n_queries="
            f"{len(query_images)}; got shape {indices.shape}."
        )
    n_rows, n_neighbors = indices.shape
    n_cols = n_neighbors + 1
    fig, grid = _figure_grid(plt, ax, n_rows, n_cols, cell=(1.4, 1.5), hspace=0.35)
    show_match = query_labels is not None and gallery_labels is not None
    for row in range(n_rows):
        if query_titles is not None:
            title = query_titles[row]
        else:
            title = "query" if query_labels is None else f"query: {query_labels[row]}"
        _show(fig.add_subplot(grid[row, 0]), _displayable(query_images[row], image_shape), title)
        for col, index in enumerate(indices[row], start=1):
            title = f"#{col}" if distances is None else f"{float(np.asarray(distances)[row, col - 1]):.3g}"
            frame = None
            if show_match:
                frame = _MATCH if gallery_labels[index] == query_labels[row] else _MISMATCH
            _show(fig.add_subplot(grid[row, col]), _displayable(gallery_images[index], image_shape), title, frame)
    return fig


def plot_embedding(embeddings, labels=None, method="pca", *, random_state=0, ax=None):
    """A 2-D scatter of embeddings, coloured by label or cluster.

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
    fig : matplotlib.figure.Figure
        The figure holding the scatter.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_imgretrieval.plotting import plot_embedding
    >>> points = np.random.default_rng(0).normal(size=(30, 5))
    >>> fig = plot_embedding(points, labels=np.repeat([0, 1, 2], 10))
    >>> fig.axes[0].get_xlabel()
    'PCA 1'
    """
    plt = _pyplot()
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 2 or len(embeddings) < 2:
        raise ValueError(f"embeddings must be a 2-D array with at least 2 rows; got shape {embeddings.shape}.")
    if method not in ("pca", "tsne"):
        raise ValueError(f'method must be "pca" or "tsne", got {method!r}.')
    if embeddings.shape[1] <= 2:
        points, axis_name = embeddings, "feature"
    elif method == "pca":
        from sklearn.decomposition import PCA

        points, axis_name = PCA(2, random_state=random_state).fit_transform(embeddings), "PCA"
    else:
        from sklearn.manifold import TSNE

        perplexity = min(30.0, (len(embeddings) - 1) / 3)
        points = TSNE(2, perplexity=perplexity, random_state=random_state).fit_transform(embeddings)
        axis_name = "t-SNE"
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 5))
    else:
        fig = ax.figure
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=8)
    else:
        labels = np.asarray(labels)
        for label in np.unique(labels):
            mask = labels == label
            ax.scatter(points[mask, 0], points[mask, 1], s=8, label=str(label))
        ax.legend(markerscale=2, fontsize=8, loc="best")
    ax.set_xlabel(f"{axis_name} 1")
    ax.set_ylabel(f"{axis_name} 2")
    return fig


def _short_name(item, width=18):
    """A file's name, shortened from the left to ``width`` characters."""
    name = os.path.basename(os.fspath(item)) if _image_io.is_path(item) else f"#{item}"
    return name if len(name) <= width else "..." + name[-(width - 3) :]


def plot_duplicates(duplicates, images=None, *, max_groups=10, max_per_group=8, keep=None, ax=None):
    """Groups of duplicates side by side, one group per row.

    Parameters
    ----------
    duplicates : Duplicates
        What :func:`~sklearn_imgretrieval.find_duplicates` returned.
    images : sequence of images, default=None
        The images, indexed like ``duplicates.items``; needed when they are
        not paths (queries, then reference images).
    max_groups : int, default=10
        Groups drawn, the first ones.
    max_per_group : int, default=8
        Images drawn per group, the first ones.
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
    if images is None:
        if not all(_image_io.is_path(item) for item in duplicates.items):
            raise ValueError("The duplicates were found on in-memory images: pass them as images= to plot them.")
        images = duplicates.items
    elif len(images) != len(duplicates.items):
        raise ValueError(f"images has {len(images)} images but the duplicates have {len(duplicates.items)} items.")
    kept = set() if keep is None else {int(i) for i in keep}
    n_rows, n_cols = len(groups), max(len(group) for group in groups)
    fig, grid = _figure_grid(plt, ax, n_rows, n_cols, cell=(1.6, 1.7), hspace=0.45)
    for row, group in enumerate(groups):
        for col, index in enumerate(group):
            image = _displayable(images[index])
            title = f"{_short_name(duplicates.items[index])}\n{image.shape[1]}x{image.shape[0]}"
            frame = _KEPT if index in kept else None
            _show(fig.add_subplot(grid[row, col]), image, title, frame)
    return fig
