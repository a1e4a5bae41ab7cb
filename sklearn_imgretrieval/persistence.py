"""Model files that load without running code: ``save`` and ``load``.

A pickle (and so a ``joblib`` file) names functions that unpickling calls,
so loading one can run any code its author chose. The files written here
are skops files (``skops.io``, the format scikit-learn's documentation
recommends for untrusted models): a zip archive of JSON that describes the
objects and ``.npy`` arrays read without pickle. Keras networks travel as
their weight arrays (the estimators' ``__getstate__``) and are rebuilt from
the estimator's parameters on load.

One extra member, ``sklearn_imgretrieval.json``, records the format and its
version, the library version and the saved object's type. ``load`` checks
it first, then lets skops build only types it trusts: skops's own list
(scikit-learn estimators, NumPy and SciPy types), the classes this library
defines, and the types the caller names in ``trusted``.
"""

from __future__ import annotations

import importlib
import json
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._files import atomic_write, check_output_path
from ._version import __version__

if TYPE_CHECKING:
    from ._typing import StrPath

__all__ = ["load", "save"]

FORMAT = "sklearn-imgretrieval"
#: Version of the file layout; ``load`` refuses files of a later version.
FORMAT_VERSION = 1
HEADER = "sklearn_imgretrieval.json"
_HEADER_MAX_BYTES = 64 * 1024
_PACKAGE = __name__.partition(".")[0]
# Top-level packages whose classes may sit among the bases of a trusted class
# of ours: their constructors and __setstate__ only store data.
_PLAIN_BASE_PACKAGES = frozenset({_PACKAGE, "sklearn", "builtins", "abc"})
# First bytes of the compressed files joblib writes.
_JOBLIB_COMPRESSED = (
    b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda",  # zlib
    b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x5d\x00\x00", b"\x04\x22\x4d\x18",  # gzip, bz2, xz, lzma, lz4
)  # fmt: skip


def _qualified_name(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


# ------------------------------------------------------------------ saving
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

    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "type": _qualified_name(type(obj)),
    }
    with atomic_write(path, "w+b") as file:
        try:
            skops.io.dump(obj, file)
        except TypeError as exc:  # skops's UnsupportedTypeException
            raise TypeError(f"Cannot save {type(obj).__name__} in the safe format: {exc}") from exc
        with zipfile.ZipFile(file, "a") as archive:
            archive.writestr(HEADER, json.dumps(header))


# ----------------------------------------------------------------- loading
def pickle_kind(path):
    """``"a pickle"`` or ``"a compressed joblib file"`` if ``path`` starts like one, else None.

    Pickles of protocol 2 and later start with the PROTO opcode; joblib
    writes those, compressed or not.
    """
    with open(path, "rb") as file:
        head = file.read(8)
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "a pickle (joblib) file"
    if head.startswith(_JOBLIB_COMPRESSED):
        return "a compressed joblib (pickle) file"
    return None


def pickle_refusal(path, kind):
    """Why a pickle is not loaded, and how a user who trusts it converts it."""
    return (
        f"{path} is {kind}. Loading a pickle can run any code its author put in it, so "
        "sklearn-imgretrieval does not load pickles. If you made this file yourself or trust "
        "where it came from, convert it once to the safe format: "
        f"sklearn_imgretrieval.save(joblib.load({os.fspath(path)!r}), 'model.skops')."
    )


def _damaged(path, exc):
    return ValueError(
        f"{path} could not be read: it is damaged (truncated, or changed after it was "
        f"written) or was not written by sklearn_imgretrieval.save ({type(exc).__name__}: {exc})."
    )


def _read_header(path):
    """The checked header of a file written by ``save``; refuses anything else.

    Reads only the zip directory and the header member, so a pickle, a
    foreign zip or a file from a newer version is refused before any object
    is built.
    """
    path = Path(os.fspath(path))
    if not path.exists():
        raise FileNotFoundError(f"No file at {path}.")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give the file written by save.")
    kind = pickle_kind(path)
    if kind is not None:
        raise ValueError(pickle_refusal(path, kind))
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            info = next((member for member in members if member.filename == HEADER), None)
            stored = info is not None and info.compress_type == zipfile.ZIP_STORED
            raw = archive.read(HEADER) if stored and info.file_size <= _HEADER_MAX_BYTES else None
    except Exception as exc:  # BadZipFile, EOFError, ... whatever a damaged archive raises
        raise _damaged(path, exc) from exc
    if info is None:
        origin = "skops.io.dump" if any(member.filename == "schema.json" for member in members) else "another program"
        raise ValueError(
            f"{path} was not written by sklearn_imgretrieval.save: it has no {HEADER} (it looks written by {origin})."
        )
    # save stores every member uncompressed: a compressed one was put there by someone
    # else, and could be a zip bomb.
    compressed = [member.filename for member in members if member.compress_type != zipfile.ZIP_STORED]
    if compressed or raw is None:
        raise _damaged(path, ValueError(f"members {compressed[:3] or [HEADER]} are not as save writes them"))
    try:
        header = json.loads(raw)
    except ValueError as exc:  # not UTF-8, not JSON
        raise _damaged(path, exc) from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path} was not written by sklearn_imgretrieval.save: its {HEADER} is not ours.")
    version = header.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _damaged(path, ValueError(f"format_version {version!r} is not a positive integer"))
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by sklearn-imgretrieval {header.get('library_version', '(unknown)')} in "
            f"file format {version}; this is version {__version__}, which reads formats up to "
            f"{FORMAT_VERSION}. Upgrade: pip install --upgrade sklearn-imgretrieval."
        )
    if not isinstance(header.get("type"), str) or not isinstance(header.get("library_version"), str):
        raise _damaged(path, ValueError(f"{HEADER} lacks the type or library version"))
    return header


def _is_library_class(name):
    """Whether ``name`` ("module.Class") is a class this library defines whose
    bases all come from this library, scikit-learn or Python itself.

    Only modules of this package are imported to check, and none whose
    name starts with "__" (``__main__`` runs the command line).
    """
    module_name, _, class_name = name.rpartition(".")
    parts = module_name.split(".")
    if parts[0] != _PACKAGE or not class_name.isidentifier():
        return False
    if not all(part.isidentifier() and not part.startswith("__") for part in parts):
        return False
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return False
    cls = vars(module).get(class_name)  # not getattr: no lazy import of a re-exported name
    return (
        isinstance(cls, type)
        and _qualified_name(cls) == name
        and all(base.__module__.partition(".")[0] in _PLAIN_BASE_PACKAGES for base in cls.__mro__)
    )


def _type_names(trusted):
    if trusted is None:
        return []
    if isinstance(trusted, (str, type)):
        trusted = [trusted]
    if isinstance(trusted, bool) or not hasattr(trusted, "__iter__"):
        raise TypeError(
            f"trusted must be a list of type names (or types), got {trusted!r}. List the "
            "types the error message names, after checking you trust them."
        )
    names = []
    for item in trusted:
        if isinstance(item, type):
            names.append(_qualified_name(item))
        elif isinstance(item, str):
            names.append(item)
        else:
            raise TypeError(f"trusted must hold type names or types, got {item!r}.")
    return names


def load(path: StrPath, trusted: Sequence[str | type] | None = None) -> Any:
    """Load an object written by :func:`save`, running no code from the file.

    The header is checked first: a pickle or joblib file is refused (with
    how to convert it if you trust it), as is a file of a newer format or
    one that is damaged. The objects in the file are then checked against
    the trusted types: skops's defaults (scikit-learn estimators, NumPy
    and SciPy types), the classes of this library, and ``trusted``. Any
    other type is refused with its name before anything is built.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save`.
    trusted : list of str or type, default=None
        More types to build, by full name (``"mypackage.module.MyTransformer"``)
        or as the type itself: the classes of your own steps in a pipeline.
        Name only types you know; loading builds them from the file's data.

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
    header = _read_header(path)
    names = _type_names(trusted)
    import skops.io

    try:
        untrusted = skops.io.get_untrusted_types(file=path)
    except Exception as exc:  # whatever a damaged file makes skops raise
        raise _damaged(path, exc) from exc
    refused = [name for name in untrusted if name not in names and not _is_library_class(name)]
    if refused:
        raise ValueError(
            f"{path} holds objects of types that are not trusted: {', '.join(refused)}. Building "
            "them runs their code with the file's data. If you made this file or trust where it "
            "came from and know these types, pass them: "
            f"load({os.fspath(path)!r}, trusted={refused!r})."
        )
    try:
        obj = skops.io.load(path, trusted=list(untrusted))
    except Exception as exc:  # whatever a damaged file makes skops or __setstate__ raise
        raise _damaged(path, exc) from exc
    if _qualified_name(type(obj)) != header["type"]:
        raise _damaged(path, ValueError(f"the header says {header['type']}, the file holds {type(obj).__name__}"))
    return obj
