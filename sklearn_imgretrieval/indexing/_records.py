"""What an index records about each file, read from its header and never its pixels.

For every file: its size and modification time (which ``update`` compares to
find changed files), its width and height (upright, as EXIF orientation
turns it), the EXIF date taken and camera (make and model) where present, and a digest
of its content: BLAKE2b of its size, its first and its last 64 KiB. The
digest lets ``serve`` show a file only while it still holds what was
indexed; whoever made an index cannot know those bytes of someone else's
private photos, so an index from elsewhere cannot make the server show them.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import stat

import numpy as np
from PIL import Image

from .._image_io import exif_camera_and_taken, map_threads, read_header
from ._columns import CategoryColumn, StringColumn, Table

#: Bytes read at each end of a file for its digest.
DIGEST_SPAN = 64 * 1024
DIGEST_BYTES = 16
_NO_DIGEST = bytes(DIGEST_BYTES)  # what a row without a recorded digest holds
_CAMERA_MAX_CHARS = 200  # EXIF strings are data from the file: kept short
#: The columns recorded for every file, in the order they are shown.
FILE_COLUMNS = ("file_size", "modified", "width", "height", "taken", "camera")


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


def content_digest(fd, size):
    """The digest of the open file ``fd`` of ``size`` bytes: its size, first and last 64 KiB."""
    digest = hashlib.blake2b(size.to_bytes(8, "little"), digest_size=DIGEST_BYTES)
    digest.update(os.pread(fd, DIGEST_SPAN, 0))
    if size > DIGEST_SPAN:
        digest.update(os.pread(fd, DIGEST_SPAN, max(DIGEST_SPAN, size - DIGEST_SPAN)))
    return digest.digest()


def open_regular_file(path):
    """An fd of ``path`` opened for reading if it is a regular file, else None.

    Opened without blocking, so that a FIFO or device named by an index does
    not hang the caller, and checked on the open file, not on its name.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except (OSError, ValueError):  # ValueError: a NUL in the name
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def _exif_date(text):
    """An EXIF date ("2023:06:01 14:05:09") as datetime64[s], NaT when absent or malformed."""
    if not isinstance(text, str):
        return np.datetime64("NaT", "s")
    try:
        taken = datetime.datetime.strptime(text.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return np.datetime64("NaT", "s")
    return np.datetime64(taken, "s")


def read_record(path):
    """The facts recorded about one file, as a dict (OSError/ValueError when it cannot be read)."""
    fd = open_regular_file(path)
    if fd is None:
        raise OSError(f"{path} is not a regular file that can be read")
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        digest = content_digest(fd, int(info.st_size))
        with Image.open(file) as image:  # reads the header only
            height, width, _ = read_header(image)
            camera, taken = exif_camera_and_taken(image)
    taken = _exif_date(taken)
    camera = camera[:_CAMERA_MAX_CHARS] if camera else None
    return {
        "file_size": int(info.st_size),
        "modified": np.datetime64(int(info.st_mtime_ns), "ns"),
        "width": width,
        "height": height,
        "taken": taken,
        "camera": camera,
        "digest": digest,
    }


def record_files(paths, n_jobs=None):
    """A :class:`Table` of what is recorded about each file (missing values for one that cannot be read)."""
    records, _ = map_threads(read_record, list(paths), n_jobs)
    return records_table(records)


def records_table(records):
    """The table of a list of :func:`read_record` dicts (None: a file not recorded)."""

    def column(name, missing, dtype):
        return np.array([missing if record is None else record[name] for record in records], dtype=dtype)

    table = Table(
        {
            "file_size": column("file_size", np.nan, np.float64),
            "modified": column("modified", np.datetime64("NaT"), "datetime64[ns]"),
            "width": column("width", np.nan, np.float64),
            "height": column("height", np.nan, np.float64),
            "taken": column("taken", np.datetime64("NaT"), "datetime64[s]"),
            "camera": CategoryColumn.from_values([None if record is None else record["camera"] for record in records]),
            "digest": np.frombuffer(
                b"".join(_NO_DIGEST if record is None else record["digest"] for record in records), dtype=np.uint8
            ).reshape(len(records), DIGEST_BYTES),
        }
    )
    if all(record is not None for record in records):  # whole numbers stay whole when none is missing
        for name in ("file_size", "width", "height"):
            table[name] = table[name].astype(np.int64)
    return table


def stats_table(stats):
    """The size and time columns of ``[size, mtime_ns]`` pairs (None: unknown), as earlier versions stored them."""
    return Table(
        {
            "file_size": np.array([np.nan if s is None else s[0] for s in stats], dtype=np.float64),
            "modified": np.array(
                [np.datetime64("NaT") if s is None else np.datetime64(int(s[1]), "ns") for s in stats],
                dtype="datetime64[ns]",
            ),
        }
    )


def folder_column(paths, root):
    """Each path's folder relative to ``root`` ("" at its top); the absolute folder when outside it or rootless."""
    folders = []
    for path in paths:
        parent = os.path.dirname(path)
        if root is not None and (parent == root or parent.startswith(root.rstrip(os.sep) + os.sep)):
            relative = os.path.relpath(parent, root)
            parent = "" if relative == "." else relative.replace(os.sep, "/")
        folders.append(parent)
    return CategoryColumn.from_values(folders)


def path_column(paths):
    return StringColumn.from_strings(paths)


def has_digest(digests):
    """Which rows of a digest column hold a recorded digest."""
    return digests.any(axis=1)


def check_path_list(paths):
    if isinstance(paths, (str, bytes, os.PathLike)) or not hasattr(paths, "__len__"):
        raise TypeError(f"paths must be a list of file paths, one per indexed image; got {type(paths).__name__}.")
    if not all(isinstance(p, (str, os.PathLike)) for p in paths):
        raise TypeError("paths must hold str or path-like file names.")
    return [os.path.abspath(p) for p in paths]
