"""Which types a file may name: what the loader builds without being told.

Trusted without asking: the classes of this library whose bases all come
from this library, scikit-learn or Python itself (their constructors and
``__setstate__`` only store data), scikit-learn's estimators, and plain
data (built-in containers and scalars, NumPy arrays, scalars and random
states). Any other type must be named by the caller in ``trusted``.

Classes that moved keep loading from the files that name their old place
through :data:`RENAMED`.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from ._format import qualified_name

_PACKAGE = __name__.partition(".")[0]
# Top-level packages whose classes may sit among the bases of a trusted class:
# their constructors and __setstate__ only store data.
_PLAIN_BASE_PACKAGES = frozenset({_PACKAGE, "sklearn", "builtins", "abc"})

#: Old full name -> new full name of the classes files may name, for files
#: written before they moved (0.1.0.dev0 and earlier).
RENAMED = {
    f"{_PACKAGE}.indexing.ImageIndex": f"{_PACKAGE}.indexing._image_index.ImageIndex",
    f"{_PACKAGE}.neighbors._exact.ScikitLearnIndex": f"{_PACKAGE}.neighbors._sklearn.ScikitLearnBackend",
    f"{_PACKAGE}.neighbors._faiss.FlatIndex": f"{_PACKAGE}.neighbors._faiss.FaissFlatBackend",
    f"{_PACKAGE}.neighbors._faiss.IVFIndex": f"{_PACKAGE}.neighbors._faiss.FaissIVFBackend",
    f"{_PACKAGE}.neighbors._faiss.HNSWIndex": f"{_PACKAGE}.neighbors._faiss.FaissHNSWBackend",
    f"{_PACKAGE}.neighbors._faiss.IVFPQIndex": f"{_PACKAGE}.neighbors._faiss.FaissIVFPQBackend",
}


def _class_named(name, package):
    """The class ``name`` ("module.Class") defines where it says, if its module is in ``package``.

    Only modules of ``package`` are imported to check, and none whose
    name has a part starting with "_" followed by "_" (``__main__`` runs
    the command line).
    """
    module_name, _, class_name = name.rpartition(".")
    parts = module_name.split(".")
    if parts[0] != package or not class_name.isidentifier():
        return None
    if not all(part.isidentifier() and not part.startswith("__") for part in parts):
        return None
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    cls = vars(module).get(class_name)  # not getattr: no lazy import of a re-exported name
    return cls if isinstance(cls, type) and qualified_name(cls) == name else None


def _plain_bases(cls):
    return all(base.__module__.partition(".")[0] in _PLAIN_BASE_PACKAGES for base in cls.__mro__)


def library_class(name):
    """The class of this library ``name`` stands for (under its old name too), if it is trusted, else None."""
    cls = _class_named(RENAMED.get(name, name), _PACKAGE)
    return cls if cls is not None and _plain_bases(cls) else None


def sklearn_estimator(name):
    """The scikit-learn estimator class ``name`` stands for, if it is one, else None."""
    cls = _class_named(name, "sklearn")
    if cls is None or not _plain_bases(cls):
        return None
    from sklearn.base import BaseEstimator

    return cls if issubclass(cls, BaseEstimator) else None


def type_names(trusted: Sequence[str | type] | str | type | None) -> list[str]:
    """``trusted`` as a list of full type names; refuses anything else."""
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
            names.append(qualified_name(item))
        elif isinstance(item, str):
            names.append(item)
        else:
            raise TypeError(f"trusted must hold type names or types, got {item!r}.")
    return names
