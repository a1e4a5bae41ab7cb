"""Writing files so that the user's old file survives any failure.

Every file the library writes (model files, index files, pictures) goes
through :func:`atomic_write`: the bytes go to a temporary file beside the
target, are flushed to disk, and only then renamed over the target. A crash,
a full disk, Ctrl-C or SIGKILL at any moment leaves either the old file or
the new one, never a truncated mix. :func:`check_output_path` runs before
any long work, so that a path that cannot be written is reported first.
"""

import os
import secrets
import stat
from contextlib import contextmanager, suppress
from pathlib import Path

__all__ = ["atomic_write", "check_output_path"]


def _nearest_existing(path):
    """The absolute ``path`` or its closest ancestor that exists (the root at least)."""
    return next(candidate for candidate in (path, *path.parents) if candidate.exists())


def check_output_path(path):
    """Check that ``path`` can be written, before any work is done for it.

    The target must not be a folder, must not be a read-only file, and its
    folder must exist or be creatable, and be writable.

    Parameters
    ----------
    path : str or path-like
        The file about to be written.

    Returns
    -------
    path : pathlib.Path
        ``path`` as a ``Path``.

    Raises
    ------
    OSError
        ``IsADirectoryError``, ``NotADirectoryError`` or ``PermissionError``
        with a message that names the path and what to do.
    """
    path = Path(os.fspath(path))
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give the name of a file to write, such as {path / 'out'}.")
    if path.exists() and not os.access(path, os.W_OK):
        raise PermissionError(f"{path} is read-only; choose another file name or make it writable.")
    folder = path.absolute().parent
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise NotADirectoryError(f"Cannot write {path}: {existing} is a file, not a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        action = "write in" if existing == folder else f"create {folder} in"
        raise PermissionError(f"Cannot write {path}: no permission to {action} {existing}.")
    return path


def _fsync_folder(folder):
    """Make a rename durable: fsync the folder where the OS allows it."""
    with suppress(OSError):  # not supported on Windows and some file systems
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextmanager
def atomic_write(path, mode="wb"):
    """Open a temporary file that replaces ``path`` when the block succeeds.

    The temporary file is created in the target's folder (a rename within
    one file system is atomic), flushed and fsynced before ``os.replace``
    puts it in place. If the block raises (KeyboardInterrupt included), the
    temporary file is removed and ``path`` is untouched. A symbolic link is
    followed, so the file it points to is replaced and the link kept; an
    existing file keeps its permissions, a new one gets the umask's.

    Parameters
    ----------
    path : str or path-like
        The file to write. Missing parent folders are created.
    mode : str, default="wb"
        A writing mode of :func:`open`: ``"wb"``, ``"w+b"`` (read back while
        writing) or a text mode (UTF-8).

    Yields
    ------
    file : file object
        The temporary file, open in ``mode``.
    """
    if "w" not in mode:
        raise ValueError(f"atomic_write writes a new file: mode must contain 'w', got {mode!r}.")
    target = Path(os.path.realpath(os.fspath(path)))
    check_output_path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    # O_EXCL: never reuse a file someone else made; 0o666 lets the umask decide.
    fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        if target.exists():
            os.chmod(temporary, stat.S_IMODE(target.stat().st_mode))
        os.replace(temporary, target)
    except BaseException:
        with suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_folder(target.parent)
