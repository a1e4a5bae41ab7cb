"""``save`` and ``load``: model files that load without running code."""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .._files import atomic_write, check_output_path, check_outputs
from ._context import loading, remove_stale_parts, saving
from ._format import HEADER, damaged, header_for, qualified_name, read_header
from ._pickles import load_trusted_pickle
from ._reader import PROTOCOL, NotReadHere, SchemaReader, UntrustedTypes, read_schema
from ._trust import library_class, type_names

if TYPE_CHECKING:
    from .._typing import StrPath

_PACKAGE = __name__.partition(".")[0]


def _code_parameters(obj):
    """``"Class.param=value"`` for every parameter of this library's estimators
    inside ``obj`` that holds code (a function, a Keras model) rather than data."""
    found, seen, pending = [], set(), [obj]
    while pending:
        item = pending.pop()
        if id(item) in seen or isinstance(item, (str, bytes, int, float, np.ndarray)):
            continue
        seen.add(id(item))
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)
        elif hasattr(item, "get_params") or type(item).__module__.startswith(_PACKAGE):
            ours = type(item).__module__.startswith(_PACKAGE)
            if ours and hasattr(item, "get_params"):
                for name, value in item.get_params(deep=False).items():
                    if callable(value) and not isinstance(value, type) and not hasattr(value, "get_params"):
                        found.append(f"{type(item).__name__}.{name}={value!r:.60}")
            pending.extend(getattr(item, "__dict__", {}).values())
    return found


def save(obj: object, path: StrPath) -> None:
    """Save a fitted estimator, pipeline or image index to a file that loads without running code.

    The file is a skops archive with a small header of this library (format
    version, library version, type). It is written to a temporary file in
    the same folder and renamed over ``path`` only when complete, so an
    existing file at ``path`` survives any failure.

    Parameters
    ----------
    obj : object
        A fitted estimator or pipeline of this library or of scikit-learn,
        or a :class:`~sklearn_imgretrieval.indexing.ImageIndex`.
    path : str or path-like
        The file to write (by convention ``.skops``; ``.idx`` for indexes).

    Raises
    ------
    TypeError
        When ``obj`` holds code instead of data: a function as
        ``NearestImageRetriever(metric=...)``, a Keras model or function as
        ``PretrainedCNNEmbedder(backbone=...)``, or an object skops cannot
        store.
    OSError
        When ``path`` cannot be written (checked before anything is done).

    See Also
    --------
    load : Read the file back.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from sklearn_imgretrieval import NearestImageRetriever, load, save
    >>> retriever = NearestImageRetriever(n_neighbors=1, algorithm="brute").fit(np.eye(3))
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "retriever.skops"
    >>> save(retriever, path)
    >>> load(path).kneighbors([[0.9, 0.1, 0.0]], return_distance=False)
    array([[0]])
    """
    code = _code_parameters(obj)
    if code:
        raise TypeError(
            f"Cannot save {type(obj).__name__} in the safe format: {'; '.join(code)} "
            "holds code, not data, and a file that names code to run is not safe to load. "
            "Give these parameters by name (a metric such as 'cosine', a backbone from "
            "PretrainedCNNEmbedder.BACKBONES). A pickle (joblib.dump) can store code, but "
            "load it only yourself: it is not safe to share."
        )
    check_output_path(path)
    import skops.io

    # Parts saved to files of their own (the shards of a sharded retriever) are written
    # first, under new names; the main file is replaced last, then the old parts go.
    with saving(path) as parts, atomic_write(path, "w+b") as file:
        try:
            skops.io.dump(obj, file)
        except TypeError as exc:  # skops's UnsupportedTypeException
            raise TypeError(f"Cannot save {type(obj).__name__} in the safe format: {exc}") from exc
        with zipfile.ZipFile(file, "a") as archive:
            archive.writestr(HEADER, json.dumps(header_for(obj)))
    remove_stale_parts(path, parts.names)


def _untrusted_error(path, refused):
    return ValueError(
        f"{path} holds objects of types that are not trusted: {', '.join(refused)}. Building "
        "them runs their code with the file's data. If you made this file or trust where it "
        "came from and know these types, pass them: "
        f"load({os.fspath(path)!r}, trusted={refused!r})."
    )


def _load_here(path, names):
    """The object in ``path``, built by this library's reader; NotReadHere for other node kinds."""
    archive, schema = read_schema(path)
    with archive:
        if not isinstance(schema, dict) or schema.get("protocol") != PROTOCOL:
            raise NotReadHere(f"protocol {schema.get('protocol') if isinstance(schema, dict) else None}")
        reader = SchemaReader(archive, path, names)
        refused = reader.untrusted(schema)
        if refused:
            raise UntrustedTypes(refused)
        return reader.build(schema)


def _load_with_skops(path, names):
    """The object in ``path``, built by skops (node kinds this library does not write)."""
    import skops.io

    untrusted = skops.io.get_untrusted_types(file=path)
    refused = [name for name in untrusted if name not in names and library_class(name) is None]
    if refused:
        raise UntrustedTypes(refused)
    return skops.io.load(path, trusted=list(untrusted))


def load(path: StrPath, trusted: Sequence[str | type] | None = None, *, client: Any = None) -> Any:
    """Load an object written by :func:`save`, running no code from the file.

    The header is checked first: a pickle or joblib file is refused (with
    how to convert it if you trust it), as is a file of a newer format or
    one that is damaged. The objects in the file are then checked against
    the trusted types: the classes of this library, scikit-learn's
    estimators, plain data (containers, NumPy arrays), and ``trusted``.
    Any other type is refused with its name before anything is built.
    Files of this library are read without importing skops; anything else
    skops wrote is read by skops, with the same rules.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save`.
    trusted : list of str or type, default=None
        More types to build, by full name (``"mypackage.module.MyTransformer"``)
        or as the type itself: the classes of your own steps in a pipeline.
        Name only types you know; loading builds them from the file's data.
    client : dask.distributed.Client, default=None
        Where the shards of a sharded retriever in the file go: onto this
        cluster's workers (which read them from the same path: a folder
        every worker sees); None loads them in this process.

    Returns
    -------
    obj : object
        The saved estimator, pipeline or index.

    Raises
    ------
    ValueError
        The file is a pickle, is damaged, is from a newer format, or holds
        types that are not trusted; the message says which and what to do.
    OSError
        There is no file at ``path``.

    See Also
    --------
    save : Write such a file.
    sklearn_imgretrieval.indexing.load_index : Load an image index.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from sklearn.decomposition import PCA
    >>> from sklearn_imgretrieval import load, save
    >>> pca = PCA(2).fit(np.random.default_rng(0).random((10, 4)))
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "pca.skops"
    >>> save(pca, path)
    >>> np.array_equal(load(path).components_, pca.components_)
    True
    """
    header = read_header(path)
    names = type_names(trusted)
    try:
        with loading(path, client):
            try:
                obj = _load_here(path, names)
            except NotReadHere:
                obj = _load_with_skops(path, names)
    except UntrustedTypes as exc:
        raise _untrusted_error(path, exc.names) from None
    except Exception as exc:  # whatever a damaged file makes the reader, skops or __setstate__ raise
        raise damaged(path, exc) from exc
    if qualified_name(type(obj)) != header["type"] and library_class(header["type"]) is not type(obj):
        raise damaged(path, ValueError(f"the header says {header['type']}, the file holds {type(obj).__name__}"))
    return obj


def convert_pickle(source: StrPath, destination: StrPath) -> Any:
    """Rewrite a pickle you trust in the safe format, once.

    Parameters
    ----------
    source : str or path-like
        A pickle or joblib file of a fitted estimator or pipeline. It is
        unpickled, which runs any code its author chose: only for files you
        made or trust. (An index file of an earlier version is converted by
        ``load_index(path, trust_pickle=True)`` and ``save``.)
    destination : str or path-like
        The safe file to write (``.skops``; ``.idx`` for an index); it may
        not be ``source``, which is left as it is.

    Returns
    -------
    obj : object
        The object, as :func:`~sklearn_imgretrieval.load` will read it back.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> import joblib
    >>> from sklearn.decomposition import PCA
    >>> from sklearn_imgretrieval import load
    >>> from sklearn_imgretrieval.persistence import convert_pickle
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = joblib.dump(PCA(1).fit([[0.0, 1.0], [1.0, 0.0]]), folder / "pca.joblib")
    >>> convert_pickle(folder / "pca.joblib", folder / "pca.skops")
    PCA(n_components=1)
    >>> load(folder / "pca.skops").n_components_
    1
    """
    check_outputs([("destination", destination)], reads=[source])
    obj = load_trusted_pickle(source)
    save(obj, destination)
    return obj
