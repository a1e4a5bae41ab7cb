"""ImageIndex: a fitted retrieval pipeline and the files it indexed."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..duplicates import find_duplicates, find_duplicates_in
from ..persistence import load, load_trusted_pickle, pickle_kind
from ._records import _check_path_list, _stat, file_stats
from ._streaming import Appender

if TYPE_CHECKING:
    from distributed import Client
    from numpy.typing import ArrayLike

    from .._typing import Images, StrPath
    from ..duplicates import Duplicates
    from ..pipeline import RetrievalPipeline


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
    file_stats : list, default=None
        ``[size, mtime_ns]`` of each file when it was embedded, which
        :meth:`update` compares to find changed files.

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
    file_stats : list
        ``[size, mtime_ns]`` of each file when it was embedded (``None`` when
        not recorded).

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

    def __init__(
        self,
        pipeline: RetrievalPipeline,
        paths: Sequence[StrPath],
        *,
        root: StrPath | None = None,
        labels: ArrayLike | None = None,
        class_names: Sequence[str] | None = None,
        settings: dict[str, Any] | None = None,
        file_stats: list[Any] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.paths = _check_path_list(paths)
        self.root = None if root is None else os.path.abspath(root)
        self.labels = None if labels is None else np.asarray(labels)
        self.class_names = [str(name) for name in (class_names or [])]
        self.settings = dict(settings or {})
        self.file_stats = [None] * len(self.paths) if file_stats is None else [_stat(s) for s in file_stats]
        self._check()

    def _check(self):
        if not hasattr(self.pipeline, "kneighbors"):
            raise TypeError(f"pipeline must answer neighbour queries (a RetrievalPipeline); got {self.pipeline!r:.80}.")
        n_gallery = getattr(self.pipeline[-1], "n_samples_fit_", None) if hasattr(self.pipeline, "steps") else None
        if n_gallery is not None and n_gallery != len(self.paths):
            raise ValueError(f"The pipeline indexes {n_gallery} images but {len(self.paths)} paths were given.")
        if self.labels is not None and self.labels.shape != (len(self.paths),):
            raise ValueError(f"labels has shape {self.labels.shape}; give one label per path ({len(self.paths)}).")
        if len(self.file_stats) != len(self.paths):
            raise ValueError(f"{len(self.file_stats)} file_stats for {len(self.paths)} paths; give one per path.")

    def __len__(self):
        return len(self.paths)

    def __repr__(self):
        return f"ImageIndex({len(self)} images{f' from {self.root}' if self.root else ''})"

    def kneighbors(
        self, images: Images, n_neighbors: int | None = None, return_distance: bool = True
    ) -> tuple[np.ndarray, np.ndarray] | np.ndarray:
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

    def kneighbors_of(
        self, ids: ArrayLike, n_neighbors: int | None = None, return_distance: bool = True
    ) -> tuple[np.ndarray, np.ndarray] | np.ndarray:
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

    def find_duplicates(self, max_distance: float, *, top_k: int | None = None) -> Duplicates:
        """Groups of near-duplicate indexed images, from the stored embeddings.

        Nothing is decoded or embedded: the embeddings the index stores are
        compared with the retriever's metric (an approximate index stores
        approximations of them).

        Parameters
        ----------
        max_distance : float
            Pairs at this distance or closer are duplicates, in the
            retriever's metric. No default: it depends on the embedder. For
            ``imgretrieval index``'s EfficientNet-Lite0 features at 224 pixels,
            0.15 cosine distance: on the bundled photos, edited copies were a
            median 0.014 to 0.074 from their original (crop, half size,
            brightness, mirror, JPEG 25, 5 degree rotation; at most 0.29) and
            different photos at least 0.44 apart.
        top_k : int, default=None
            Keep at most each image's ``top_k`` nearest duplicates.

        Returns
        -------
        duplicates : Duplicates
            Groups, pairs and distances, items named by their paths.
        """
        retriever = self.pipeline[-1]
        if hasattr(retriever, "shards_"):  # sharded: each shard's rows against every shard, on the cluster
            found = find_duplicates_in(retriever, max_distance, top_k=top_k)
        else:
            embeddings = retriever.gallery_rows()
            found = find_duplicates(
                embeddings, method="precomputed", max_distance=max_distance, top_k=top_k, metric=retriever.metric
            )
        return replace(found, items=np.asarray(self.paths, dtype=object))

    def update(
        self,
        paths: Sequence[StrPath],
        labels: ArrayLike | None = None,
        class_names: Sequence[str] | None = None,
        *,
        chunk_size: int = 256,
        client: Client | None = None,
        checkpoint: StrPath | None = None,
        progress: Callable[[str, int, int], object] | None = None,
    ) -> IndexChanges:
        """Bring the index up to date with ``paths``: embed only new or changed files, drop the others.

        A file is changed when its size or modification time differs from
        when it was embedded; files in the index but not in ``paths`` leave
        it. The pipeline's embedding steps are used as they are, so new and
        old embeddings compare.

        Parameters
        ----------
        paths : list of str or path-like
            Every image the index should hold now (for example a folder's
            listing from :func:`~sklearn_imgretrieval.datasets.load_image_folder`).
        labels : array-like of int, default=None
            Class of each path, an index into ``class_names``.
        class_names : list of str, default=None
            Names of those classes; new names are appended to the index's.
        chunk_size, client, checkpoint, progress
            As for :func:`build_index`.

        Returns
        -------
        changes : IndexChanges
            The files added, changed, removed, and skipped as unreadable.
        """
        paths, labels = _check_inputs(paths, labels, class_names)
        stats = file_stats(paths)
        position = {path: i for i, path in enumerate(self.paths)}
        wanted = set(paths)
        removed = [path for path in self.paths if path not in wanted]
        changed = [p for p, stat in zip(paths, stats) if p in position and self.file_stats[position[p]] != stat]
        added = [p for p in paths if p not in position]
        gone = sorted(position[p] for p in removed + changed)
        if gone:
            self.pipeline[-1].remove(gone)
            self._drop(gone)
        if labels is not None:
            names = self.class_names + [name for name in class_names or [] if name not in self.class_names]
            # _check_inputs made labels int codes into class_names, which labels require
            labels = np.asarray([names.index(class_names[label]) for label in labels])  # type: ignore[index, union-attr]
            self.class_names = names
        changed_set = set(changed)
        todo = [i for i, path in enumerate(paths) if path not in position or path in changed_set]
        skipped = Appender(self, checkpoint, progress).add(
            [paths[i] for i in todo],
            None if labels is None else labels[todo],
            [stats[i] for i in todo],
            chunk_size=chunk_size,
            client=client,
        )
        skipped_paths = {path for path, _ in skipped}
        return IndexChanges(
            added=[p for p in added if p not in skipped_paths],
            changed=[p for p in changed if p not in skipped_paths],
            removed=removed,
            skipped=skipped,
        )

    def _drop(self, positions):
        keep = np.setdiff1d(np.arange(len(self.paths)), positions)
        self.paths = [self.paths[i] for i in keep]
        self.file_stats = [self.file_stats[i] for i in keep]
        if self.labels is not None:
            self.labels = self.labels[keep]

    def __getstate__(self):
        return {
            "pipeline": self.pipeline,
            "paths": list(self.paths),
            "root": self.root,
            "labels": self.labels,
            "class_names": list(self.class_names),
            "settings": dict(self.settings),
            "file_stats": [None if stat is None else list(stat) for stat in self.file_stats],
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
            file_stats=state.get("file_stats"),
        )


#: ``format`` of the dictionaries that earlier versions pickled as index files.
PICKLED_INDEX_FORMAT = "sklearn-imgretrieval-index"


def _index_from_pickle(path):
    """The ImageIndex in a pickle the user trusts: an ImageIndex, or an earlier version's index dict."""
    content = load_trusted_pickle(path)
    if isinstance(content, dict) and content.get("format") == PICKLED_INDEX_FORMAT and "pipeline" in content:
        return ImageIndex(
            content["pipeline"],
            content.get("paths", []),
            labels=content.get("labels"),
            class_names=content.get("class_names"),
            settings={"embedder": content.get("embedder")},
        )
    return content


def load_index(
    path: StrPath,
    root: StrPath | None = None,
    trusted: Sequence[str | type] | None = None,
    *,
    trust_pickle: bool = False,
    client: Client | None = None,
) -> ImageIndex:
    """Read an :class:`ImageIndex` written by ``save`` (or ``imgretrieval index``).

    Parameters
    ----------
    path : str or path-like
        The index file.
    root : str or path-like, default=None
        The indexed folder's new place, when it has moved since indexing:
        every path under the index's old root is mapped under ``root``.
    trusted : list of str, default=None
        Types from other packages that the pipeline holds and you trust, as
        for :func:`sklearn_imgretrieval.load`.
    trust_pickle : bool, default=False
        Read ``path`` even when it is a pickle, as earlier versions wrote
        index files. Unpickling runs any code the file's author chose: only
        for a file you made or trust; save it again to convert it once.
    client : dask.distributed.Client, default=None
        For a sharded index: put its shards onto this cluster's workers,
        which read them from beside ``path`` (a folder every worker sees).

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
    if trust_pickle and pickle_kind(path):
        index = _index_from_pickle(path)
    else:
        index = load(path, trusted=trusted, client=client)
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


def _check_inputs(paths, labels, class_names):
    paths = _check_path_list(paths)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(paths),):
            raise ValueError(f"labels has shape {labels.shape}; give one label per path ({len(paths)}).")
        if class_names is not None and len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise ValueError(f"labels must index class_names, which has {len(class_names)} names.")
    return paths, labels


@dataclass
class IndexChanges:
    """What :meth:`ImageIndex.update` did.

    Attributes
    ----------
    added, changed, removed : list of str
        Files embedded for the first time, embedded again, and dropped.
    skipped : list of (str, str)
        Files that could not be read, with the reason; they are not in the index.
    """

    added: list = field(default_factory=list)
    changed: list = field(default_factory=list)
    removed: list = field(default_factory=list)
    skipped: list = field(default_factory=list)

    def __str__(self):
        parts = [f"{len(self.added)} added", f"{len(self.changed)} changed", f"{len(self.removed)} removed"]
        if self.skipped:
            parts.append(f"{len(self.skipped)} unreadable skipped")
        return ", ".join(parts)
