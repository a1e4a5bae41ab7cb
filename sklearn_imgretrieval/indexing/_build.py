"""build_index: a new index of a list of files, streamed through a pipeline."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import clone
from sklearn.utils import check_random_state

from .._image_io import skipped_files_message
from ..pipeline import _is_fitted
from ._image_index import ImageIndex, _check_inputs, load_index
from ._streaming import Appender

if TYPE_CHECKING:
    from distributed import Client
    from numpy.typing import ArrayLike

    from .._typing import RandomState, StrPath
    from ..pipeline import RetrievalPipeline


def build_index(
    paths: Sequence[StrPath],
    pipeline: RetrievalPipeline,
    *,
    labels: ArrayLike | None = None,
    class_names: Sequence[str] | None = None,
    root: StrPath | None = None,
    settings: dict[str, Any] | None = None,
    metadata: Any = None,
    chunk_size: int = 256,
    fit_sample: int | None = None,
    random_state: RandomState = None,
    client: Client | None = None,
    checkpoint: StrPath | None = None,
    trusted: Sequence[str | type] | None = None,
    progress: Callable[[str, int, int], object] | None = None,
    shards: int | None = None,
) -> ImageIndex:
    """Index image files by streaming them through a retrieval pipeline, chunk by chunk.

    Each chunk of ``chunk_size`` files is decoded, embedded and added to the
    search index (``partial_fit``), so memory follows the chunk and the index,
    never the number of files. Unreadable files are skipped with a warning.
    Each file's metadata (size, time, width, height, EXIF date taken and
    camera, a digest of its content) is read from its header in the same
    pass, and each image gets an id (see :class:`ImageIndex`).
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
    metadata : str, path-like, pandas.DataFrame or dict, default=None
        Columns of your own, joined by path once the files are indexed
        (see :meth:`ImageIndex.join_metadata`): a CSV file, a DataFrame or a
        dict of columns, each with a ``path`` column.
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
    shards : int, default=None
        Split the index into this many shards
        (:class:`~sklearn_imgretrieval.ShardedRetriever` around the
        pipeline's retriever), held on ``client``'s workers when a client
        is given. Saving the index writes one file per shard beside it.

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
    joined = None if metadata is None else ImageIndex.read_metadata(metadata, root)
    settings = dict(settings or {})
    if checkpoint is not None and Path(checkpoint).exists():
        resumed = _resume(checkpoint, settings, root, trusted, client)
        if resumed is not None:
            resumed.update(
                paths,
                labels,
                class_names,
                metadata=metadata,
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
        retriever = clone(retriever)
    if shards is not None:
        from ..neighbors import ShardedRetriever

        retriever = ShardedRetriever(retriever, n_shards=shards, client=client)
    pipeline.steps[-1] = (name, retriever)
    _fit_front_steps(pipeline, paths, fit_sample, random_state, progress)
    _prepare_retriever(pipeline[-1], len(paths))
    index = ImageIndex(pipeline, [], root=root, class_names=class_names, settings=settings)
    index.labels = None if labels is None else np.empty(0, dtype=np.int64)
    skipped = Appender(index, checkpoint, progress).add(paths, labels, chunk_size=chunk_size, client=client)
    if skipped:
        warnings.warn(skipped_files_message(skipped), UserWarning, stacklevel=2)
    if not len(index):
        raise ValueError(f"None of the {len(paths)} files could be read as an image; nothing was indexed.")
    if joined is not None:
        index._join(joined)
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

    Returns
    -------
    context : context manager
        Gives a ``dask.distributed.Client``, or None when neither
        ``address`` nor ``n_workers`` is given.

    Examples
    --------
    Guard a script that starts a local cluster with
    ``if __name__ == "__main__":``, as for any code that starts processes::

        with dask_client(n_workers=2) as client:
            index = build_index(paths, pipeline, client=client)
    """
    if address is None and n_workers is None:
        return contextlib.nullcontext()
    from .._dask import dask_client as connect

    return connect(address, n_workers, timeout=timeout)


def _resume(checkpoint, settings, root, trusted, client=None):
    """The index saved in ``checkpoint`` if it is a run with these settings, else None."""
    try:
        index = load_index(checkpoint, trusted=trusted, client=client)
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
    from .._image_io import map_threads
    from ..datasets import _is_readable_image

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
    if not _is_fitted(retriever):
        retriever.set_params(**retriever.params_for_gallery(n_files))
