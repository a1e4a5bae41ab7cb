"""Writing files without ever losing the user's: temporary file, fsync, rename."""

import contextlib
import os
import tempfile
from pathlib import Path


def check_output_path(path):
    """Fail before any work when ``path`` cannot be written; returns it as a Path."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give a file name to write.")
    folder = path.parent if str(path.parent) else Path(".")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise ValueError(f"Cannot write {path}: {existing} is not a writable folder.")
    return path


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """A file object whose content replaces ``path`` only once completely written.

    The data go to a temporary file in the same folder, are flushed and
    fsynced, then renamed over ``path``: a crash or Ctrl-C at any moment
    leaves either the old file or the new one, never a truncated one.
    """
    path = check_output_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(handle, mode) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)
        raise
