"""The file format's header: what it records, its versions, and the checks
that run before any object in a file is built."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

from .._version import __version__
from ._pickles import pickle_kind, pickle_refusal

FORMAT = "sklearn-imgretrieval"
#: Version of the file layout; ``load`` refuses files of a later version.
#: 2: an ImageIndex stores ids, metadata and paths as arrays (0.1).
FORMAT_VERSION = 2
HEADER = "sklearn_imgretrieval.json"
_HEADER_MAX_BYTES = 64 * 1024


def header_for(obj):
    """The header written with ``obj``."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "type": qualified_name(type(obj)),
    }


def qualified_name(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


def damaged(path, exc):
    """The error of a file that cannot be read."""
    return ValueError(
        f"{path} could not be read: it is damaged (truncated, or changed after it was "
        f"written) or was not written by sklearn_imgretrieval.save ({type(exc).__name__}: {exc})."
    )


def read_header(path):
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
        raise damaged(path, exc) from exc
    if info is None:
        origin = "skops.io.dump" if any(member.filename == "schema.json" for member in members) else "another program"
        raise ValueError(
            f"{path} was not written by sklearn_imgretrieval.save: it has no {HEADER} (it looks written by {origin})."
        )
    # save stores every member uncompressed: a compressed one was put there by someone
    # else, and could be a zip bomb.
    compressed = [member.filename for member in members if member.compress_type != zipfile.ZIP_STORED]
    if compressed or raw is None:
        raise damaged(path, ValueError(f"members {compressed[:3] or [HEADER]} are not as save writes them"))
    try:
        header = json.loads(raw)
    except ValueError as exc:  # not UTF-8, not JSON
        raise damaged(path, exc) from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path} was not written by sklearn_imgretrieval.save: its {HEADER} is not ours.")
    version = header.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise damaged(path, ValueError(f"format_version {version!r} is not a positive integer"))
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by sklearn-imgretrieval {header.get('library_version', '(unknown)')} in "
            f"file format {version}; this is version {__version__}, which reads formats up to "
            f"{FORMAT_VERSION}. Upgrade: pip install --upgrade sklearn-imgretrieval."
        )
    if not isinstance(header.get("type"), str) or not isinstance(header.get("library_version"), str):
        raise damaged(path, ValueError(f"{HEADER} lacks the type or library version"))
    return header
