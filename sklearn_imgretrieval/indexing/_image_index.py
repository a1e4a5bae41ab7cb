"""ImageIndex: a fitted retrieval pipeline, the files it indexed, their ids and metadata."""

from __future__ import annotations

import hmac
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from ..duplicates import find_duplicates, find_duplicates_in
from ..persistence import load, load_trusted_pickle, pickle_kind
from ._columns import (
    CategoryColumn,
    StringColumn,
    Table,
    kind_of,
    missing_values,
    numpy_values,
    put,
    python_value,
    take,
)
from ._filters import parse_filter
from ._metadata import read_metadata, unmatched_warning
from ._records import (
    DIGEST_BYTES,
    FILE_COLUMNS,
    check_path_list,
    content_digest,
    file_stats,
    folder_column,
    has_digest,
    open_regular_file,
    path_column,
    records_table,
    stats_table,
)
from ._records import record_files as record_files_of
from ._streaming import Appender

if TYPE_CHECKING:
    from distributed import Client
    from numpy.typing import ArrayLike

    from .._typing import Images, StrPath
    from ..duplicates import Duplicates
    from ..pipeline import RetrievalPipeline


class ImageIndex:
    """A fitted :class:`~sklearn_imgretrieval.RetrievalPipeline`, the images it indexed and what is known of them.

    Every image has an **id**, an int that stays its own for the life of the
    index: through :meth:`update`, removals and saving. Ids are never
    reused; a changed file keeps its id, a new file gets the next one. The
    methods answer with ids (``kneighbors``, ``kneighbors_of``) and take
    ids. Ids equal row positions (``paths[i]``) until a file is removed;
    :meth:`rows_of` turns ids into positions.

    Each image also has **metadata**, recorded from its file's header when
    the index is built (never its pixels): ``path``, ``folder`` (relative to
    ``root``), ``file_size`` (bytes), ``width`` and ``height`` (pixels,
    upright), ``modified`` (the file's time, UTC), ``taken`` and ``camera``
    (EXIF date taken and camera make and model, where the file has them), ``label``
    (its class name), and any columns of your own joined by path
    (:meth:`join_metadata`). ``where=`` filters searches on them, inside the
    search: a query gets ``k`` answers whenever ``k`` images match.

    The state is columns of NumPy arrays (strings as UTF-8 bytes and
    offsets), so :func:`sklearn_imgretrieval.save` stores any number of
    images in a few arrays, without pickle.

    Parameters
    ----------
    pipeline : RetrievalPipeline
        Fitted on the images of ``paths``, in that order.
    paths : list of str or path-like
        The indexed files, one per gallery item; made absolute.
    root : str or path-like, default=None
        The folder that was indexed: ``folder`` is relative to it, and
        :func:`load_index` can map paths under it to the folder's new place.
    labels : array-like of int, default=None
        Class of each image: an index into ``class_names``.
    class_names : list of str, default=None
        Names of the classes (subfolders).
    settings : dict, default=None
        How the index was built (embedder name, image size, ...), as plain
        values, for the record.
    metadata : str, path-like, pandas.DataFrame or dict, default=None
        Columns of your own, joined by path as :meth:`join_metadata` does.
    record_files : bool, default=True
        Read each file's header now to record its metadata (size, time,
        width, height, EXIF, content digest). False records nothing (missing
        values), for paths that are not files here.

    Attributes
    ----------
    paths : sequence of str
        Absolute paths of the indexed images, by row.
    ids : ndarray of int64
        The id of each row.
    columns : list of str
        The columns ``where=`` and :meth:`to_frame` know.
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
    build_index : Index a list of files, streaming them through a pipeline.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_imgretrieval import ImagePreprocessor, NearestImageRetriever, make_retrieval_pipeline
    >>> from sklearn_imgretrieval.indexing import ImageIndex
    >>> images = np.random.default_rng(0).random((3, 4, 4), dtype=np.float32)
    >>> pipe = make_retrieval_pipeline(ImagePreprocessor(), NearestImageRetriever(n_neighbors=1)).fit(images)
    >>> paths = ["/photos/2023/a.png", "/photos/2023/b.png", "/photos/2024/c.png"]
    >>> index = ImageIndex(pipe, paths, root="/photos", record_files=False)
    >>> distances, ids = index.kneighbors(images[2:])
    >>> ids, index.paths[index.rows_of(ids)[0, 0]]
    (array([[2]]), '/photos/2024/c.png')
    >>> index.kneighbors(images[2:], where="folder == '2023'", return_distance=False)
    array([[1]])
    """

    #: Columns every index has, in the order they are shown (``label`` when labelled).
    BUILT_IN_COLUMNS = ("id", "path", "folder", *FILE_COLUMNS, "label")
    #: What the table keeps besides the columns shown: each file's content digest.
    _HIDDEN = ("digest",)

    def __init__(
        self,
        pipeline: RetrievalPipeline,
        paths: Sequence[StrPath],
        *,
        root: StrPath | None = None,
        labels: ArrayLike | None = None,
        class_names: Sequence[str] | None = None,
        settings: dict[str, Any] | None = None,
        metadata: Any = None,
        record_files: bool = True,
    ) -> None:
        paths = check_path_list(paths)
        self.pipeline = pipeline
        self.root = None if root is None else os.path.abspath(root)
        self.labels = None if labels is None else np.asarray(labels)
        self.class_names = [str(name) for name in (class_names or [])]
        self.settings = dict(settings or {})
        self.ids = np.arange(len(paths), dtype=np.int64)
        self._next_id = len(paths)
        records = record_files_of(paths) if record_files else records_table([None] * len(paths))
        self._table = self._new_rows(paths, records)
        self._check()
        if metadata is not None:
            self.join_metadata(metadata)

    # ------------------------------------------------------------ checks
    def _check(self):
        if not hasattr(self.pipeline, "kneighbors"):
            raise TypeError(f"pipeline must answer neighbour queries (a RetrievalPipeline); got {self.pipeline!r:.80}.")
        n_gallery = getattr(self.pipeline[-1], "n_samples_fit_", None) if hasattr(self.pipeline, "steps") else None
        if n_gallery is not None and n_gallery != len(self):
            raise ValueError(f"The pipeline indexes {n_gallery} images but {len(self)} paths were given.")
        if self.labels is not None and self.labels.shape != (len(self),):
            raise ValueError(f"labels has shape {self.labels.shape}; give one label per path ({len(self)}).")
        if self.ids.shape != (len(self),) or self.ids.dtype.kind not in "iu":
            raise ValueError(
                f"An index needs one int id per image; got {self.ids.dtype} ids of shape {self.ids.shape}."
            )
        if len(self) and (
            len(np.unique(self.ids)) != len(self) or self.ids.min() < 0 or self.ids.max() >= self._next_id
        ):
            raise ValueError("The ids of an index are distinct, at least 0 and below its next id.")
        if not isinstance(self._table["path"], StringColumn):
            raise ValueError("The paths of an index are a string column.")
        digest = self._table["digest"]
        if not isinstance(digest, np.ndarray) or digest.dtype != np.uint8 or digest.shape != (len(self), DIGEST_BYTES):
            raise ValueError(f"An index keeps a {DIGEST_BYTES}-byte digest per image.")

    def _new_rows(self, paths, records):
        """The table rows of ``paths``: path, folder and what was recorded of each file."""
        return Table({"path": path_column(paths), "folder": folder_column(paths, self.root), **records.columns})

    def __len__(self):
        return len(self._table["path"])

    def __repr__(self):
        return f"ImageIndex({len(self)} images{f' from {self.root}' if self.root else ''})"

    # --------------------------------------------------- ids and columns
    @property
    def paths(self) -> StringColumn:
        return self._table["path"]

    @property
    def columns(self) -> list[str]:
        shown = [name for name in self.BUILT_IN_COLUMNS if name != "label" or self.labels is not None]
        return shown + self._user_columns()

    def _user_columns(self):
        return [name for name in self._table.names() if name not in self.BUILT_IN_COLUMNS + self._HIDDEN]

    def _column(self, name):
        """A column as stored (a NumPy array, StringColumn or CategoryColumn)."""
        if name == "id":
            return self.ids
        if name == "label":
            if self.labels is None:
                raise KeyError(name)
            codes = self.labels
            if self.class_names and len(codes) and codes.dtype.kind in "iu" and codes.max() < len(self.class_names):
                return CategoryColumn(codes, self.class_names)
            return codes
        if name in self._HIDDEN:
            raise KeyError(name)
        return self._table[name]

    def column(self, name: str) -> np.ndarray:
        """The values of column ``name``, one per row (text as ``str`` objects, None where missing).

        Parameters
        ----------
        name : str
            One of :attr:`columns`.

        Returns
        -------
        values : ndarray of shape (len(index),)
        """
        if name not in self.columns:
            raise KeyError(f"No column {name!r}; the columns are {', '.join(self.columns)}.")
        return numpy_values(self._column(name))

    def column_kinds(self) -> dict[str, str]:
        """Each column's kind: "string", "category", "number", "date" or "bool".

        Returns
        -------
        kinds : dict of str to str
            Column name to kind, for every column of :attr:`columns`.
        """
        return {name: kind_of(self._column(name)) for name in self.columns}

    def rows_of(self, ids: ArrayLike) -> np.ndarray:
        """The row positions (in ``paths``) of the images ``ids``, in the same shape.

        Parameters
        ----------
        ids : array-like of int
            Image ids.

        Returns
        -------
        rows : ndarray of int
            The position of each id, in the shape of ``ids``.

        Raises
        ------
        ValueError
            When an id is not in the index.
        """
        ids = np.asarray(ids)
        if ids.size and (ids.dtype.kind not in "iu" or ids.dtype == bool):
            raise TypeError(f"Image ids are ints; got an array of {ids.dtype}.")
        order = np.argsort(self.ids, kind="stable")
        sorted_ids = self.ids[order]
        found = np.searchsorted(sorted_ids, ids.ravel())
        inside = found < len(sorted_ids)
        known = inside.copy()
        known[inside] = sorted_ids[found[inside]] == ids.ravel()[inside]
        if not known.all():
            unknown = ids.ravel()[~known][:5].tolist()
            raise ValueError(f"No image with id {', '.join(map(str, unknown))} in the index of {len(self)} images.")
        return order[found].reshape(ids.shape)

    def select(self, where: str | ArrayLike | None) -> np.ndarray | None:
        """The boolean mask of the rows that ``where`` selects (None: every row).

        Parameters
        ----------
        where : str, array-like of bool, array-like of int or None
            A filter expression over :attr:`columns` (pandas query syntax:
            ``"folder == 'trip' and taken >= '2023-01-01'"``; see
            docs/metadata-and-filters.md), a boolean mask with one value per
            row, or a list of image ids.

        Returns
        -------
        mask : ndarray of bool of shape (len(index),), or None for ``where=None``.
        """
        if where is None:
            return None
        if isinstance(where, str):
            expression = parse_filter(where, self.column_kinds())
            return expression.evaluate(self._column, len(self))
        chosen = np.asarray(where)
        if chosen.dtype == bool:
            if chosen.shape != (len(self),):
                raise ValueError(
                    f"A boolean where= is a mask over the index's {len(self)} images; got shape {chosen.shape}. "
                    "Give a filter expression or a list of image ids instead."
                )
            return chosen
        if chosen.ndim != 1 or (chosen.size and chosen.dtype.kind not in "iu"):
            raise TypeError(
                "where must be a filter expression (str), a boolean mask over the images, or a list of image ids; "
                f"got an array of {chosen.dtype} with shape {chosen.shape}."
            )
        mask = np.zeros(len(self), dtype=bool)
        mask[self.rows_of(chosen.astype(np.int64))] = True
        return mask

    def metadata(self, ids: ArrayLike, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The metadata of the images ``ids``: one dict per image, of plain Python values.

        Parameters
        ----------
        ids : array-like of int
            Image ids.
        columns : list of str, default=None
            The columns to give; all of :attr:`columns` by default.

        Returns
        -------
        records : list of dict
            ``{column: value}``; dates are ``datetime.datetime``, missing values None.
        """
        names = self.columns if columns is None else list(columns)
        unknown = [name for name in names if name not in self.columns]
        if unknown:
            raise KeyError(f"No column {', '.join(map(repr, unknown))}; the columns are {', '.join(self.columns)}.")
        rows = np.atleast_1d(self.rows_of(ids)).ravel()
        stored = {name: self._column(name) for name in names}
        return [{name: python_value(stored[name], int(row)) for name in names} for row in rows]

    @property
    def metadata_nbytes(self) -> int:
        """Bytes the ids, labels and metadata take in memory (the search index apart)."""
        labels = 0 if self.labels is None else self.labels.nbytes
        return int(self.ids.nbytes + labels + self._table.nbytes)

    # -------------------------------------------------------- user columns
    def join_metadata(self, metadata: Any) -> ImageIndex:
        """Add your own columns, matched to the indexed images by path.

        A column of the same name as one joined before is replaced; images
        without a row get missing values. Types are kept: numbers stay
        numbers, dates dates (a CSV's values are read as whichever they all
        are: whole numbers, decimals, ``true``/``false``, ISO dates, else text).

        Parameters
        ----------
        metadata : str, path-like, pandas.DataFrame or dict
            A CSV file with a header row, a DataFrame (``path`` a column or
            its index) or a dict of equal-length columns. Its ``path`` column
            names each image: absolute, or relative to :attr:`root` (to the
            current folder without one). Rows naming files that are not in
            the index are left out, with a warning.

        Returns
        -------
        self : ImageIndex

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn_imgretrieval import ImagePreprocessor, NearestImageRetriever, make_retrieval_pipeline
        >>> from sklearn_imgretrieval.indexing import ImageIndex
        >>> images = np.random.default_rng(0).random((2, 4, 4), dtype=np.float32)
        >>> pipe = make_retrieval_pipeline(ImagePreprocessor(), NearestImageRetriever(n_neighbors=1)).fit(images)
        >>> index = ImageIndex(pipe, ["/photos/a.png", "/photos/b.png"], root="/photos", record_files=False)
        >>> _ = index.join_metadata({"path": ["b.png", "a.png"], "stars": [5, 3]})
        >>> index.column("stars"), index.select("stars > 4")
        (array([3, 5]), array([False,  True]))
        """
        return self._join(self.read_metadata(metadata, self.root))

    @classmethod
    def read_metadata(cls, metadata, root):
        """``metadata`` read and checked, before any work (what ``join_metadata`` joins).

        Parameters
        ----------
        metadata : str, path-like, pandas.DataFrame or dict
            As for :meth:`join_metadata`.
        root : str, path-like or None
            The indexed folder, which relative paths are relative to.

        Returns
        -------
        read : tuple
            The keys (absolute paths), the columns and a name of the source.
        """
        return read_metadata(metadata, None if root is None else os.path.abspath(root), cls._reserved())

    @classmethod
    def _reserved(cls):
        return set(cls.BUILT_IN_COLUMNS) | set(cls._HIDDEN)

    def _join(self, read):
        keys, columns, source = read
        row_of = {path: row for row, path in enumerate(self.paths)}
        matched = [i for i, key in enumerate(keys) if key in row_of]
        unmatched = [key for key in keys if key not in row_of]
        if unmatched:
            warnings.warn(unmatched_warning(source, unmatched), UserWarning, stacklevel=2)
        rows = np.array([row_of[keys[i]] for i in matched], dtype=np.int64)
        for name in columns.names():
            values = take(columns[name], matched)
            if len(rows) == len(self):  # every image has a row: the column keeps its type (ints stay ints)
                self._table[name] = take(values, np.argsort(rows))
            else:
                self._table[name] = put(missing_values(values, len(self)), rows, values)
        return self

    # ------------------------------------------------------------- search
    def kneighbors(
        self,
        images: Images,
        n_neighbors: int | None = None,
        return_distance: bool = True,
        *,
        where: str | ArrayLike | None = None,
    ) -> tuple[np.ndarray, np.ndarray] | np.ndarray:
        """The nearest indexed images of each query image, by id.

        Parameters
        ----------
        images : sequence of paths, PIL images or arrays
            Queries, in any form the pipeline's first step takes.
        n_neighbors : int, default=None
            Neighbours per query; the retriever's ``n_neighbors`` by default.
        return_distance : bool, default=True
            Whether to return the distances as well.
        where : str, array-like of bool or of int, default=None
            Answer only with these images: a filter expression, a boolean
            mask over the rows or a list of ids (see :meth:`select`). The
            filter runs inside the search, so every query gets
            ``n_neighbors`` answers whenever that many images match.

        Returns
        -------
        distances : ndarray of shape (n_queries, n_neighbors)
            Only when ``return_distance=True``.
        ids : ndarray of shape (n_queries, n_neighbors)
            Ids of the neighbours, nearest first.
        """
        subset = self.select(where)
        found = self.pipeline.kneighbors(
            images, n_neighbors=n_neighbors, return_distance=return_distance, subset=subset
        )
        return self._with_ids(found, return_distance)

    def kneighbors_of(
        self,
        ids: ArrayLike,
        n_neighbors: int | None = None,
        return_distance: bool = True,
        *,
        where: str | ArrayLike | None = None,
    ) -> tuple[np.ndarray, np.ndarray] | np.ndarray:
        """The nearest other indexed images of the indexed images ``ids``.

        Nothing is decoded or embedded: each image is queried with the
        embedding the index stores for it, and left out of its own answer.

        Parameters
        ----------
        ids : array-like of int
            Image ids.
        n_neighbors : int, default=None
            Neighbours per image; the retriever's ``n_neighbors`` by default.
        return_distance : bool, default=True
            Whether to return the distances as well.
        where : str, array-like of bool or of int, default=None
            Answer only with these images, as for :meth:`kneighbors`.

        Returns
        -------
        distances : ndarray of shape (len(ids), n_neighbors)
            Only when ``return_distance=True``.
        ids : ndarray of shape (len(ids), n_neighbors)
            Ids of the neighbours, nearest first.
        """
        rows = np.atleast_1d(self.rows_of(ids)).ravel()
        subset = self.select(where)
        found = self.pipeline[-1].kneighbors_of_gallery(
            rows, n_neighbors=n_neighbors, return_distance=return_distance, subset=subset
        )
        return self._with_ids(found, return_distance)

    def _with_ids(self, found, return_distance):
        if return_distance:
            distances, rows = found
            return distances, self.ids[rows]
        return self.ids[found]

    def find_duplicates(
        self, max_distance: float, *, top_k: int | None = None, where: str | ArrayLike | None = None
    ) -> Duplicates:
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
        where : str, array-like of bool or of int, default=None
            Only these images take part, as for :meth:`kneighbors`.

        Returns
        -------
        duplicates : Duplicates
            Groups, pairs and distances, items named by their paths (in row
            order, the images ``where`` selects).
        """
        retriever = self.pipeline[-1]
        mask = self.select(where)
        rows = np.arange(len(self)) if mask is None else np.flatnonzero(mask)
        if hasattr(retriever, "shards_"):  # sharded: each shard's rows against every shard, on the cluster
            found = find_duplicates_in(retriever, max_distance, top_k=top_k, subset=None if mask is None else rows)
        else:
            embeddings = retriever.gallery_rows(None if mask is None else rows)
            found = find_duplicates(
                embeddings, method="precomputed", max_distance=max_distance, top_k=top_k, metric=retriever.metric
            )
        return replace(found, items=self.paths.take(rows).values())

    # ------------------------------------------------------------ pandas
    def to_frame(self, embeddings: bool = False):
        """The ids and metadata as a pandas DataFrame, one row per image, indexed by id.

        Needs pandas (``pip install pandas``).

        Parameters
        ----------
        embeddings : bool, default=False
            Add a column ``embedding`` with each image's stored embedding (a
            float array per row, as the index holds it).

        Returns
        -------
        frame : pandas.DataFrame
            Text with few distinct values (folder, camera, label, text
            columns of your own) as pandas categoricals, dates as datetimes.
        """
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError("ImageIndex.to_frame needs pandas: pip install pandas") from exc
        data = {}
        for name in self.columns:
            if name == "id":
                continue
            column = self._column(name)
            if isinstance(column, CategoryColumn):
                data[name] = pd.Categorical.from_codes(column.codes, column.categories.tolist())
            elif isinstance(column, np.ndarray) and column.dtype.kind == "M":
                data[name] = column.astype("datetime64[ns]")
            else:
                data[name] = numpy_values(column)
        frame = pd.DataFrame(data, index=pd.Index(self.ids, name="id"))
        if embeddings:
            rows = self.pipeline[-1].gallery_rows()
            frame["embedding"] = list(rows)
        return frame

    # ------------------------------------------------------------- files
    def open_file(self, image_id: int) -> BinaryIO | None:
        """The file of image ``image_id``, open for reading, if it still holds what was indexed; else None.

        The file must be a regular file whose content digest (its size, first
        and last 64 KiB) equals the one recorded when it was indexed. An
        image without a recorded digest (an index from an earlier version,
        until ``imgretrieval index --update``) is never opened. This is what
        makes an index from someone else safe to serve: it cannot name a file
        of yours and have it shown, since it cannot know its content.

        Parameters
        ----------
        image_id : int
            An image id.

        Returns
        -------
        file : binary file object or None
            Positioned at the start; close it (a ``with`` block).
        """
        row = int(self.rows_of([image_id])[0])
        recorded = self._table["digest"][row].tobytes()
        if recorded == bytes(DIGEST_BYTES):
            return None
        fd = open_regular_file(self.paths[row])
        if fd is None:
            return None
        try:
            current = content_digest(fd, os.fstat(fd).st_size)
        except OSError:
            os.close(fd)
            return None
        if not hmac.compare_digest(current, recorded):
            os.close(fd)
            return None
        return os.fdopen(fd, "rb")

    # ------------------------------------------------------------- update
    def update(
        self,
        paths: Sequence[StrPath],
        labels: ArrayLike | None = None,
        class_names: Sequence[str] | None = None,
        *,
        metadata: Any = None,
        chunk_size: int = 256,
        client: Client | None = None,
        checkpoint: StrPath | None = None,
        progress: Callable[[str, int, int], object] | None = None,
    ) -> IndexChanges:
        """Bring the index up to date with ``paths``: embed only new or changed files, drop the others.

        A file is changed when its size or modification time differs from
        when it was embedded; it keeps its id and its columns of your own.
        Files in the index but not in ``paths`` leave it; new files get new
        ids. The pipeline's embedding steps are used as they are, so new and
        old embeddings compare. Images whose metadata was not recorded (an
        index from an earlier version) get it now, from their headers.

        Parameters
        ----------
        paths : list of str or path-like
            Every image the index should hold now (for example a folder's
            listing from :func:`~sklearn_imgretrieval.datasets.load_image_folder`).
        labels : array-like of int, default=None
            Class of each path, an index into ``class_names``.
        class_names : list of str, default=None
            Names of those classes; new names are appended to the index's.
        metadata : str, path-like, pandas.DataFrame or dict, default=None
            Columns of your own to join afterwards (:meth:`join_metadata`).
        chunk_size, client, checkpoint, progress
            As for :func:`build_index`.

        Returns
        -------
        changes : IndexChanges
            The files added, changed, removed, and skipped as unreadable.
        """
        paths, labels = _check_inputs(paths, labels, class_names)
        joined = None if metadata is None else self.read_metadata(metadata, self.root)
        stats = file_stats(paths)
        position = {path: i for i, path in enumerate(self.paths)}
        stored = self._stats()
        wanted = set(paths)
        removed = [path for path in self.paths if path not in wanted]
        changed = [p for p, stat in zip(paths, stats) if p in position and stored[position[p]] != stat]
        added = [p for p in paths if p not in position]
        # A changed file keeps its id and the columns of your own; it is embedded again as a new row.
        kept_ids = {p: int(self.ids[position[p]]) for p in changed}
        kept_columns = self._table.take([position[p] for p in changed]).columns
        user = {name: kept_columns[name] for name in self._user_columns()}
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
        todo_paths = [paths[i] for i in todo]
        ids = np.array([kept_ids.get(path, -1) for path in todo_paths], dtype=np.int64)
        changed_at = {path: i for i, path in enumerate(changed)}
        carried = _carried_columns(user, [changed_at.get(path, -1) for path in todo_paths])
        skipped = Appender(self, checkpoint, progress).add(
            todo_paths,
            None if labels is None else labels[todo],
            ids=ids,
            carried=carried,
            chunk_size=chunk_size,
            client=client,
        )
        self._record_unrecorded()
        if joined is not None:
            self._join(joined)
        skipped_paths = {path for path, _ in skipped}
        return IndexChanges(
            added=[p for p in added if p not in skipped_paths],
            changed=[p for p in changed if p not in skipped_paths],
            removed=removed,
            skipped=skipped,
        )

    def _stats(self):
        """``[size, mtime_ns]`` of each row as recorded (None when not recorded)."""
        sizes, times = self._table["file_size"], self._table["modified"]
        known = ~(np.isnan(sizes.astype(np.float64)) | np.isnat(times))
        nanoseconds = times.astype("datetime64[ns]").view(np.int64)
        return [
            [int(size), int(time)] if ok else None
            for size, time, ok in zip(sizes.tolist(), nanoseconds.tolist(), known.tolist())
        ]

    def _record_unrecorded(self):
        """Record the files of rows without a digest (an earlier version's index), from their headers."""
        rows = np.flatnonzero(~has_digest(self._table["digest"]))
        if not len(rows):
            return
        records = record_files_of(self.paths.take(rows).tolist())
        for name in records.names():
            self._table[name] = put(self._table[name], rows, records[name])

    def _drop(self, positions):
        keep = np.ones(len(self), dtype=bool)
        keep[positions] = False
        self._table = self._table.take(keep)
        self.ids = self.ids[keep]
        if self.labels is not None:
            self.labels = self.labels[keep]

    def _add_rows(self, table, ids, labels):
        """Append rows (their embeddings are already in the retriever); ids of -1 get new ids."""
        ids = np.asarray(ids, dtype=np.int64).copy()
        new = ids < 0
        ids[new] = np.arange(self._next_id, self._next_id + new.sum())
        self._next_id += int(new.sum())
        self._table = self._table.append(table)
        self.ids = np.concatenate([self.ids, ids])
        if labels is not None:
            self.labels = np.concatenate([self.labels, labels]) if self.labels is not None else np.asarray(labels)

    def _move_root(self, new_root):
        """Name every path under the recorded root under ``new_root`` instead."""
        old, new = Path(self.root), Path(os.path.abspath(new_root))
        moved = [str(new / Path(p).relative_to(old)) if Path(p).is_relative_to(old) else p for p in self.paths]
        self._table["path"] = path_column(moved)
        self.root = str(new)

    # ---------------------------------------------------------- pickling
    def __getstate__(self):
        return {
            "layout": _LAYOUT,
            "pipeline": self.pipeline,
            "ids": self.ids,
            "next_id": int(self._next_id),
            "root": self.root,
            "labels": self.labels,
            "class_names": list(self.class_names),
            "settings": dict(self.settings),
            "columns": self._table.state(),
        }

    def __setstate__(self, state):
        if not isinstance(state, dict) or "pipeline" not in state or not {"paths", "columns"} & set(state):
            raise ValueError("An ImageIndex needs a pipeline and its paths; this state has neither.")
        if "columns" not in state:  # the layout of file format 1: lists of paths and of [size, mtime_ns]
            state = _state_from_lists(state)
        elif state.get("layout") != _LAYOUT:
            raise ValueError(f"This ImageIndex state has layout {state.get('layout')!r}; this version reads {_LAYOUT}.")
        self.pipeline = state["pipeline"]
        self.root = state.get("root")
        self.labels = None if state.get("labels") is None else np.asarray(state["labels"])
        self.class_names = [str(name) for name in (state.get("class_names") or [])]
        self.settings = dict(state.get("settings") or {})
        self.ids = np.asarray(state["ids"])
        self._next_id = int(state["next_id"])
        self._table = Table.from_state(state["columns"])
        missing = [name for name in ("path", "folder", *FILE_COLUMNS, *self._HIDDEN) if name not in self._table]
        if missing:
            raise ValueError(f"This ImageIndex state lacks the columns {', '.join(missing)}.")
        self._check()


#: Layout of ImageIndex.__getstate__ (file format 2: columns of arrays).
_LAYOUT = 2


def _state_from_lists(state):
    """An earlier version's state (paths and file_stats as lists) in today's layout; nothing recorded but stats."""
    paths = check_path_list(state["paths"])
    stats = state.get("file_stats") or [None] * len(paths)
    if len(stats) != len(paths):
        raise ValueError(f"{len(stats)} file_stats for {len(paths)} paths; give one per path.")
    root = state.get("root")
    records = records_table([None] * len(paths))
    for name, column in stats_table(stats).columns.items():
        records[name] = column
    table = Table({"path": path_column(paths), "folder": folder_column(paths, root), **records.columns})
    return {
        **state,
        "layout": _LAYOUT,
        "ids": np.arange(len(paths), dtype=np.int64),
        "next_id": len(paths),
        "columns": table.state(),
    }


def _carried_columns(user, sources):
    """The user's columns for the rows to add: row ``sources[i]`` of ``user``'s columns, missing where -1."""
    if not user or all(source < 0 for source in sources):
        return None
    sources = np.asarray(sources, dtype=np.int64)
    carried = {}
    for name, column in user.items():
        values = missing_values(column, len(sources))
        present = np.flatnonzero(sources >= 0)
        carried[name] = put(values, present, take(column, sources[present]))
    return Table(carried)


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
    >>> list(load_index(file, root="/new").paths)
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
        index._move_root(root)
    return index


def _check_inputs(paths, labels, class_names):
    paths = check_path_list(paths)
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


def select_files(
    paths: Sequence[StrPath],
    where: str,
    *,
    root: StrPath | None = None,
    labels: ArrayLike | None = None,
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """Which of ``paths`` a filter expression selects, from the metadata an index would record for them.

    The same columns and the same expression language as ``ImageIndex``'s
    ``where=`` (``id`` apart), read from the files' headers, never their
    pixels: for work on a folder that is not indexed, such as
    ``imgretrieval dedupe FOLDER --where ...``.

    Parameters
    ----------
    paths : list of str or path-like
        Image files.
    where : str
        A filter expression.
    root : str or path-like, default=None
        The folder ``folder`` is relative to.
    labels : array-like of int, default=None
        Class of each file, an index into ``class_names``: the ``label`` column.
    class_names : list of str, default=None
        Names of the classes.

    Returns
    -------
    mask : ndarray of bool of shape (len(paths),)
    """
    paths = check_path_list(paths)
    root = None if root is None else os.path.abspath(root)
    columns = {"path": path_column(paths), "folder": folder_column(paths, root), **record_files_of(paths).columns}
    if labels is not None:
        columns["label"] = CategoryColumn(np.asarray(labels), [str(name) for name in class_names or []])
    columns = {name: column for name, column in columns.items() if name not in ImageIndex._HIDDEN}
    expression = parse_filter(where, {name: kind_of(column) for name, column in columns.items()})
    return expression.evaluate(columns.__getitem__, len(paths))
