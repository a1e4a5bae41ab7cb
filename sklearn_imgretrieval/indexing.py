"""Image indexes: a fitted retrieval pipeline with the files it indexed.

``imgretrieval index`` builds an :class:`ImageIndex` and writes it with
:func:`sklearn_imgretrieval.save`; ``imgretrieval query`` reads it back with
:func:`load_index`, which builds no object the file could use to run code.
"""

import os
from pathlib import Path

import numpy as np

from .persistence import load

__all__ = ["ImageIndex", "load_index"]


def _check_path_list(paths):
    if isinstance(paths, (str, bytes, os.PathLike)) or not hasattr(paths, "__len__"):
        raise TypeError(f"paths must be a list of file paths, one per indexed image; got {type(paths).__name__}.")
    if not all(isinstance(p, (str, os.PathLike)) for p in paths):
        raise TypeError("paths must hold str or path-like file names.")
    return [os.path.abspath(p) for p in paths]


class ImageIndex:
    """A fitted :class:`~sklearn_imgretrieval.RetrievalPipeline` and the images it indexed.

    ``kneighbors`` answers with gallery indices; ``paths[i]`` is the file of
    gallery image ``i``. Paths are made absolute once, when the index is
    built, so that answers do not depend on the folder a query runs from.
    The state is plain data (the pipeline, lists of str, an array), so
    :func:`sklearn_imgretrieval.save` stores it without pickle.

    Parameters
    ----------
    pipeline : RetrievalPipeline
        Fitted on the images of ``paths``, in that order.
    paths : list of str or path-like
        The indexed files, one per gallery item.
    root : str or path-like, default=None
        The folder that was indexed; :func:`load_index` can map paths under
        it to the folder's new place.
    labels : array-like of int, default=None
        Class of each image: an index into ``class_names``.
    class_names : list of str, default=None
        Names of the classes (subfolders).
    settings : dict, default=None
        How the index was built (embedder name, image size, ...), as plain
        values, for the record.

    Attributes
    ----------
    paths : list of str
        Absolute paths of the indexed images.
    root : str or None
        Absolute path of the indexed folder.
    labels : ndarray of int or None
        Class of each image.
    class_names : list of str
        Names of the classes.
    settings : dict
        How the index was built.

    See Also
    --------
    load_index : Read an index written by ``save`` or ``imgretrieval index``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_imgretrieval import ImagePreprocessor, NearestImageRetriever, make_retrieval_pipeline
    >>> from sklearn_imgretrieval.indexing import ImageIndex
    >>> images = np.random.default_rng(0).random((3, 4, 4), dtype=np.float32)
    >>> pipe = make_retrieval_pipeline(ImagePreprocessor(), NearestImageRetriever(n_neighbors=1)).fit(images)
    >>> index = ImageIndex(pipe, ["/photos/a.png", "/photos/b.png", "/photos/c.png"], root="/photos")
    >>> distances, indices = index.kneighbors(images[2:])
    >>> index.paths[indices[0, 0]]
    '/photos/c.png'
    """

    def __init__(self, pipeline, paths, *, root=None, labels=None, class_names=None, settings=None):
        self.pipeline = pipeline
        self.paths = _check_path_list(paths)
        self.root = None if root is None else os.path.abspath(root)
        self.labels = None if labels is None else np.asarray(labels)
        self.class_names = [str(name) for name in (class_names or [])]
        self.settings = dict(settings or {})
        self._check()

    def _check(self):
        if not hasattr(self.pipeline, "kneighbors"):
            raise TypeError(f"pipeline must answer neighbour queries (a RetrievalPipeline); got {self.pipeline!r:.80}.")
        n_gallery = getattr(self.pipeline[-1], "n_samples_fit_", None) if hasattr(self.pipeline, "steps") else None
        if n_gallery is not None and n_gallery != len(self.paths):
            raise ValueError(f"The pipeline indexes {n_gallery} images but {len(self.paths)} paths were given.")
        if self.labels is not None and self.labels.shape != (len(self.paths),):
            raise ValueError(f"labels has shape {self.labels.shape}; give one label per path ({len(self.paths)}).")

    def __len__(self):
        return len(self.paths)

    def __repr__(self):
        return f"ImageIndex({len(self)} images{f' from {self.root}' if self.root else ''})"

    def kneighbors(self, images, n_neighbors=None, return_distance=True):
        """The nearest indexed images of each query image.

        Parameters
        ----------
        images : sequence of paths, PIL images or arrays
            Queries, in any form the pipeline's first step takes.
        n_neighbors : int, default=None
            Neighbours per query; the retriever's ``n_neighbors`` by default.
        return_distance : bool, default=True
            Whether to return the distances as well.

        Returns
        -------
        distances : ndarray of shape (n_queries, n_neighbors)
            Only when ``return_distance=True``.
        indices : ndarray of shape (n_queries, n_neighbors)
            Positions in ``paths`` of the neighbours, nearest first.
        """
        return self.pipeline.kneighbors(images, n_neighbors=n_neighbors, return_distance=return_distance)

    def kneighbors_of(self, ids, n_neighbors=None, return_distance=True):
        """The nearest other indexed images of the indexed images ``ids``.

        Nothing is decoded or embedded: each image is queried with the
        embedding the index stores for it, and left out of its own answer.

        Parameters
        ----------
        ids : array-like of int
            Positions in ``paths``.
        n_neighbors : int, default=None
            Neighbours per image; the retriever's ``n_neighbors`` by default.
        return_distance : bool, default=True
            Whether to return the distances as well.

        Returns
        -------
        distances : ndarray of shape (len(ids), n_neighbors)
            Only when ``return_distance=True``.
        indices : ndarray of shape (len(ids), n_neighbors)
            Positions in ``paths`` of the neighbours, nearest first.
        """
        return self.pipeline[-1].kneighbors_of_gallery(ids, n_neighbors=n_neighbors, return_distance=return_distance)

    def __getstate__(self):
        return {
            "pipeline": self.pipeline,
            "paths": list(self.paths),
            "root": self.root,
            "labels": self.labels,
            "class_names": list(self.class_names),
            "settings": dict(self.settings),
        }

    def __setstate__(self, state):
        if not isinstance(state, dict) or not {"pipeline", "paths"} <= set(state):
            raise ValueError("An ImageIndex needs a pipeline and its paths; this state has neither.")
        self.__init__(
            state["pipeline"],
            state["paths"],
            root=state.get("root"),
            labels=state.get("labels"),
            class_names=state.get("class_names"),
            settings=state.get("settings"),
        )


def load_index(path, root=None):
    """Read an :class:`ImageIndex` written by ``save`` (or ``imgretrieval index``).

    Parameters
    ----------
    path : str or path-like
        The index file.
    root : str or path-like, default=None
        The indexed folder's new place, when it has moved since indexing:
        every path under the index's old root is mapped under ``root``.

    Returns
    -------
    index : ImageIndex
        The index, ready for queries.

    Raises
    ------
    ValueError
        The file is not an image index, is a pickle, or is damaged (see
        :func:`sklearn_imgretrieval.load`).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from sklearn_imgretrieval import ImagePreprocessor, NearestImageRetriever, make_retrieval_pipeline, save
    >>> from sklearn_imgretrieval.indexing import ImageIndex, load_index
    >>> images = np.random.default_rng(0).random((2, 4, 4), dtype=np.float32)
    >>> pipe = make_retrieval_pipeline(ImagePreprocessor(), NearestImageRetriever(n_neighbors=1)).fit(images)
    >>> file = pathlib.Path(tempfile.mkdtemp()) / "photos.idx"
    >>> save(ImageIndex(pipe, ["/old/a.png", "/old/b.png"], root="/old"), file)
    >>> load_index(file, root="/new").paths
    ['/new/a.png', '/new/b.png']
    """
    index = load(path)
    if not isinstance(index, ImageIndex):
        raise ValueError(
            f"{path} holds a {type(index).__name__}, not an image index. Build one with "
            "`imgretrieval index FOLDER -o FILE`, or save an ImageIndex."
        )
    if root is not None:
        if index.root is None:
            raise ValueError(f"{path} does not record the folder it indexed, so root= cannot map its paths.")
        old, new = Path(index.root), Path(os.path.abspath(root))
        index.paths = [str(new / Path(p).relative_to(old)) if Path(p).is_relative_to(old) else p for p in index.paths]
        index.root = str(new)
    return index
