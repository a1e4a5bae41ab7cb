"""Image indexes: a fitted retrieval pipeline with the files it indexed, built by streaming.

:func:`build_index` streams files through a pipeline chunk by chunk (decode,
embed, add to the search index), so memory follows the chunk, not the
folder; with a Dask client the chunks are embedded on the cluster's workers.
:meth:`ImageIndex.update` embeds only new or changed files and drops deleted
ones. A checkpoint file makes an interrupted run resumable. ``imgretrieval
index`` calls these functions and writes the :class:`ImageIndex` with
:func:`sklearn_imgretrieval.save`; :func:`load_index` reads it back without
building any object the file could use to run code.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import clone
from sklearn.utils import check_random_state

from .duplicates import find_duplicates
from .persistence import load, save
from .pipeline import _is_fitted

if TYPE_CHECKING:
    from distributed import Client
    from numpy.typing import ArrayLike

    from ._typing import Images, RandomState, StrPath
    from .duplicates import Duplicates
    from .pipeline import RetrievalPipeline

__all__ = ["ImageIndex", "IndexChanges", "build_index", "dask_client", "load_index"]

_CHECKPOINT_SECONDS = 60  # how often an interrupted run's progress is saved


def file_stats(paths):
    """``[size, modification time in ns]`` of each file, ``None`` for a file that is gone."""
    stats = []
    for path in paths:
        try:
            info = os.stat(path)
        except OSError:
            stats.append(None)
        else:
            stats.append([int(info.st_size), int(info.st_mtime_ns)])
    return stats


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
        skipped = _Appender(self, checkpoint, progress).add(
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


def load_index(path: StrPath, root: StrPath | None = None, trusted: Sequence[str | type] | None = None) -> ImageIndex:
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
    index = load(path, trusted=trusted)
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


def _stat(stat):
    """A stored ``[size, mtime_ns]`` as a pair of ints (or None)."""
    if stat is None:
        return None
    size, mtime = stat
    return [int(size), int(mtime)]


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


def build_index(
    paths: Sequence[StrPath],
    pipeline: RetrievalPipeline,
    *,
    labels: ArrayLike | None = None,
    class_names: Sequence[str] | None = None,
    root: StrPath | None = None,
    settings: dict[str, Any] | None = None,
    chunk_size: int = 256,
    fit_sample: int | None = None,
    random_state: RandomState = None,
    client: Client | None = None,
    checkpoint: StrPath | None = None,
    trusted: Sequence[str | type] | None = None,
    progress: Callable[[str, int, int], object] | None = None,
) -> ImageIndex:
    """Index image files by streaming them through a retrieval pipeline, chunk by chunk.

    Each chunk of ``chunk_size`` files is decoded, embedded and added to the
    search index (``partial_fit``), so memory follows the chunk and the index,
    never the number of files. Unreadable files are skipped with a warning.
    Steps before the retriever that are not fitted are fitted first: on a
    few images when their fit learns only the images' shape
    (``ImagePreprocessor``, ``PretrainedCNNEmbedder``), on a random sample
    of ``fit_sample`` images when they learn from the data (PCA, an
    autoencoder). An IVF retriever with ``n_cells="auto"`` gets its cells
    from the number of files, and is trained on enough rows for them.

    Parameters
    ----------
    paths : list of str or path-like
        The image files, in the order of their gallery indices.
    pipeline : RetrievalPipeline
        Steps that decode and embed, ending in a retriever. It is used as
        given (not copied) and becomes the index's pipeline; its retriever
        starts empty (a fitted one is replaced by an unfitted clone).
    labels : array-like of int, default=None
        Class of each file, an index into ``class_names``.
    class_names : list of str, default=None
        Names of the classes.
    root : str or path-like, default=None
        The folder the files come from, recorded for :func:`load_index`'s
        ``root=``.
    settings : dict, default=None
        How the index is built, recorded; a checkpoint resumes only a run
        with the same settings.
    chunk_size : int, default=256
        Files decoded and embedded at a time.
    fit_sample : int, default=None
        Images to fit the steps that learn from data on; required when one
        is not fitted yet.
    random_state : int, RandomState instance or None, default=None
        Picks the ``fit_sample`` images.
    client : dask.distributed.Client, default=None
        Embed the chunks on this Dask cluster: each worker receives the
        fitted steps once, decodes and embeds whole chunks, and the
        embeddings are added here in file order. See
        :func:`sklearn_imgretrieval.indexing.dask_client`.
    checkpoint : str or path-like, default=None
        A file where progress is saved every minute and on Ctrl-C. When it
        exists, holds a run with the same settings and root, the run
        continues from it instead of starting over. Delete it once the
        index is saved.
    trusted : list of str, default=None
        Types from other packages in ``pipeline``, trusted when a checkpoint
        is read back (see :func:`sklearn_imgretrieval.load`).
    progress : callable, default=None
        Called as ``progress(stage, done, total)`` with stage ``"fitting"``
        or ``"embedding"`` as work is done.

    Returns
    -------
    index : ImageIndex
        The index of every readable file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> from sklearn_imgretrieval import ImagePreprocessor, NearestImageRetriever, make_retrieval_pipeline
    >>> from sklearn_imgretrieval.indexing import build_index
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> for i in range(5):
    ...     Image.new("RGB", (16, 16), (50 * i, 0, 0)).save(folder / f"{i}.png")
    >>> pipe = make_retrieval_pipeline(ImagePreprocessor(size=(8, 8), color_mode="rgb"), NearestImageRetriever())
    >>> index = build_index(sorted(folder.glob("*.png")), pipe, chunk_size=2, root=folder)
    >>> len(index), index.pipeline[-1].n_samples_fit_
    (5, 5)
    """
    paths, labels = _check_inputs(paths, labels, class_names)
    settings = dict(settings or {})
    if checkpoint is not None and Path(checkpoint).exists():
        resumed = _resume(checkpoint, settings, root, trusted)
        if resumed is not None:
            resumed.update(
                paths,
                labels,
                class_names,
                chunk_size=chunk_size,
                client=client,
                checkpoint=checkpoint,
                progress=progress,
            )
            return resumed
    if not paths:
        raise ValueError("No image files given: paths is empty.")
    name, retriever = pipeline.steps[-1]
    if _is_fitted(retriever):
        pipeline.steps[-1] = (name, clone(retriever))
    _fit_front_steps(pipeline, paths, fit_sample, random_state, progress)
    _prepare_retriever(pipeline[-1], len(paths))
    index = ImageIndex(pipeline, [], root=root, class_names=class_names, settings=settings)
    index.labels = None if labels is None else np.empty(0, dtype=np.int64)
    skipped = _Appender(index, checkpoint, progress).add(
        paths, labels, file_stats(paths), chunk_size=chunk_size, client=client
    )
    if skipped:
        listed = "; ".join(f"{path} ({reason})" for path, reason in skipped[:10])
        more = f"; and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        warnings.warn(f"Skipped {len(skipped)} unreadable image file(s): {listed}{more}", UserWarning, stacklevel=2)
    if not index.paths:
        raise ValueError(f"None of the {len(paths)} files could be read as an image; nothing was indexed.")
    return index


def dask_client(
    address: str | None = None, n_workers: int | None = None, *, timeout: float = 10
) -> contextlib.AbstractContextManager[Client | None]:
    """A context manager giving a Dask client for :func:`build_index` (``None`` to embed here).

    Parameters
    ----------
    address : str, default=None
        A running scheduler, such as ``"tcp://10.0.0.5:8786"``; left running on exit.
    n_workers : int, default=None
        Start a local cluster of this many worker processes (spawned, one
        thread each), closed on exit.
    timeout : float, default=10
        Seconds to wait for the scheduler before a ``ConnectionError`` that
        names its address.

    Examples
    --------
    Guard a script that starts a local cluster with
    ``if __name__ == "__main__":``, as for any code that starts processes::

        with dask_client(n_workers=2) as client:
            index = build_index(paths, pipeline, client=client)
    """
    if address is None and n_workers is None:
        return contextlib.nullcontext()
    from ._dask import dask_client as connect

    return connect(address, n_workers, timeout=timeout)


def _resume(checkpoint, settings, root, trusted):
    """The index saved in ``checkpoint`` if it is a run with these settings, else None."""
    try:
        index = load_index(checkpoint, trusted=trusted)
    except ValueError as exc:
        warnings.warn(f"Ignoring the checkpoint {checkpoint}, which cannot be read ({exc}).", UserWarning, stacklevel=3)
        return None
    same_root = (index.root is None and root is None) or (root is not None and index.root == os.path.abspath(root))
    if index.settings != settings or not same_root:
        warnings.warn(
            f"Ignoring the checkpoint {checkpoint}: it comes from a run with other settings; starting over.",
            UserWarning,
            stacklevel=3,
        )
        return None
    return index


def _fit_front_steps(pipeline, paths, fit_sample, random_state, progress):
    """Fit the steps before the retriever that are not fitted yet, in order."""
    unfitted = [
        (name, step)
        for name, step in pipeline.steps[:-1]
        if step is not None and step != "passthrough" and not _is_fitted(step)
    ]
    if not unfitted:
        return
    learning = [name for name, step in unfitted if not getattr(step, "_fitted_from_any_sample", False)]
    if learning and fit_sample is None:
        raise ValueError(
            f"Step(s) {', '.join(learning)} learn from the images they are fitted on and are not fitted: "
            "pass fit_sample=N to fit them on a random sample of N images first (imgretrieval index "
            "--fit-sample N), or fit them yourself (pipeline[:-1].fit(sample))."
        )
    from ._image_io import map_threads
    from .datasets import _is_readable_image

    if learning:
        n_sample = min(fit_sample, len(paths))
        chosen = np.sort(check_random_state(random_state).choice(len(paths), n_sample, replace=False))
        sample = [paths[i] for i in chosen]
    else:
        sample = paths[:8]  # the steps learn only the images' shape
    reasons, _ = map_threads(_is_readable_image, sample, -1)
    sample = [path for path, reason in zip(sample, reasons) if reason is None]
    if not sample:
        raise ValueError(f"None of the {len(reasons)} files picked to fit the pipeline could be read as an image.")
    if progress is not None:
        progress("fitting", 0, len(sample))
    data = sample
    for _, step in pipeline.steps[:-1]:
        if step is None or step == "passthrough":
            continue
        if not _is_fitted(step):
            step.fit(data)
        data = step.transform(data)
    if progress is not None:
        progress("fitting", len(sample), len(sample))


def _prepare_retriever(retriever, n_files):
    """Fix an unfitted retriever's "auto" settings for the whole gallery, not for its first chunk."""
    if not _is_fitted(retriever) and hasattr(retriever, "params_for_gallery"):
        retriever.set_params(**retriever.params_for_gallery(n_files))


def _rows_to_train(retriever, n_files):
    """Rows to gather before the first fit: what the retriever's training needs (1 for exact search)."""
    return retriever.rows_to_train(n_files) if hasattr(retriever, "rows_to_train") else 1


def embed_files(steps, paths):
    """Decode and embed ``paths`` with the fitted ``steps``; skip the unreadable ones.

    Returns the embeddings of the readable files, their positions in
    ``paths`` and ``(path, reason)`` of the others. The whole chunk goes
    through at once; only when a file fails are the files decoded one by one
    to find it.
    """
    try:
        return steps.transform(paths), np.arange(len(paths)), []
    except ValueError as whole:
        first = steps[0]
        readable, failures = [], []
        for i, path in enumerate(paths):
            try:
                first.transform([path])
            except (ValueError, OSError) as exc:
                failures.append((os.fspath(path), _reason_for(path, exc)))
            else:
                readable.append(i)
        if not failures:
            raise whole  # not a file's fault
        if not readable:
            return None, np.arange(0), failures
        return steps.transform([paths[i] for i in readable]), np.asarray(readable), failures


def _reason_for(path, error):
    """The line of a decoding error that names ``path`` (``"  path: reason"``), else the whole message."""
    prefix = f"{os.fspath(path)}: "
    for line in str(error).splitlines():
        if line.strip().startswith(prefix):
            return line.strip()[len(prefix) :]
    return str(error)


class _Appender:
    """Adds streamed embeddings to an index, in order, saving checkpoints."""

    def __init__(self, index, checkpoint, progress):
        self.index = index
        self.checkpoint = checkpoint
        self.progress = progress
        self._saved_at = time.monotonic()

    def add(self, paths, labels, stats, *, chunk_size, client):
        """Embed ``paths`` chunk by chunk and add them; returns the skipped files."""
        retriever = self.index.pipeline[-1]
        steps = self.index.pipeline[:-1]
        first_rows = 1 if _is_fitted(retriever) else _rows_to_train(retriever, len(paths))
        buffered, skipped = [], []
        done = 0
        if self.progress is not None:
            self.progress("embedding", 0, len(paths))
        try:
            for start, (embeddings, kept, failures) in _chunks_embedded(steps, paths, chunk_size, client):
                chunk = range(start, min(start + chunk_size, len(paths)))
                if failures and len(failures) == len(chunk) and not os.path.isdir(os.path.dirname(paths[start])):
                    raise FileNotFoundError(
                        f"The folder of {paths[start]} is gone: none of its {len(chunk)} files could be read."
                    )
                skipped.extend(failures)
                if len(kept):
                    rows = [chunk[i] for i in kept]
                    buffered.append((embeddings, rows))
                    if sum(len(r) for _, r in buffered) >= first_rows or _is_fitted(retriever):
                        self._flush(buffered, paths, labels, stats)
                        buffered = []
                done = chunk[-1] + 1
                if self.progress is not None:
                    self.progress("embedding", done, len(paths))
                self._maybe_checkpoint()
            if buffered:
                self._flush(buffered, paths, labels, stats)
        except KeyboardInterrupt:
            self._maybe_checkpoint(now=True)
            raise
        return skipped

    def _flush(self, buffered, paths, labels, stats):
        embeddings = np.concatenate([part for part, _ in buffered])
        rows = [row for _, part in buffered for row in part]
        index = self.index
        y = None if labels is None else labels[rows]
        index.pipeline[-1].partial_fit(embeddings, y)
        index.paths.extend(paths[row] for row in rows)
        index.file_stats.extend(stats[row] for row in rows)
        if y is not None:
            index.labels = np.concatenate([index.labels, y]) if index.labels is not None else np.asarray(y)

    def _maybe_checkpoint(self, now=False):
        if self.checkpoint is None or not self.index.paths:
            return
        if now or time.monotonic() - self._saved_at >= _CHECKPOINT_SECONDS:
            save(self.index, self.checkpoint)
            self._saved_at = time.monotonic()


def _chunks_embedded(steps, paths, chunk_size, client):
    """``(start, embed_files(...))`` for each chunk, in file order, here or on Dask."""
    if client is not None:
        from ._dask import embed_on_cluster

        yield from embed_on_cluster(client, embed_files, steps, paths, chunk_size)
        return
    for start in range(0, len(paths), chunk_size):
        yield start, embed_files(steps, paths[start : start + chunk_size])
