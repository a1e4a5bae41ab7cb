"""Pickles: how they are recognised, the one message that refuses them, and
reading one the user trusts (``convert_pickle`` rewrites it safely)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._typing import StrPath

# First bytes of the compressed files joblib writes.
_JOBLIB_COMPRESSED = (
    b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda",  # zlib
    b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x5d\x00\x00", b"\x04\x22\x4d\x18",  # gzip, bz2, xz, lzma, lz4
)  # fmt: skip


def pickle_kind(path):
    """``"a pickle (joblib) file"`` or ``"a compressed joblib (pickle) file"`` if ``path``
    starts like one, else None.

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
    """Why a pickle is not loaded, and how a user who trusts it converts it (the one message)."""
    path = os.fspath(path)
    return (
        f"{path} is {kind}. Loading a pickle can run any code its author put in it, so "
        "sklearn-imgretrieval does not load pickles. If you made this file (an earlier version wrote "
        "indexes as pickles) or trust where it came from, convert it once to the safe format: "
        f"imgretrieval query {path} --trust-pickle --convert-to converted.idx, or in Python "
        f"sklearn_imgretrieval.persistence.convert_pickle({path!r}, 'converted.skops')."
    )


def load_trusted_pickle(path: StrPath) -> Any:
    """Unpickle a file the user trusts.

    Parameters
    ----------
    path : str or path-like
        A pickle or joblib file. Unpickling runs any code its author chose:
        only for files you made or trust.

    Returns
    -------
    obj : object
        What the file holds.
    """
    import joblib

    try:
        return joblib.load(path)
    except Exception as exc:  # any unpickling failure means: not a file of ours
        raise ValueError(f"{path} could not be unpickled ({type(exc).__name__}: {exc}).") from exc
