"""Writing files so that the user's old file survives any failure.

Every file the library writes (model files, index files, pictures) goes
through :func:`atomic_write`: the bytes go to a temporary file beside the
target, are flushed to disk, and only then renamed over the target. A crash,
a full disk, Ctrl-C or SIGKILL at any moment leaves either the old file or
the new one, never a truncated mix. :func:`check_outputs` runs before any
long work: a path that cannot be written, or that names a file the work
reads, is reported first.
"""

import os
import secrets
import stat
from contextlib import contextmanager, suppress
from pathlib import Path

__all__ = ["atomic_write", "check_output_path", "check_outputs"]


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


def _same_file(a, b):
    """Whether paths ``a`` and ``b`` name one file (links followed; hard links too, where both exist)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return os.path.realpath(a) == os.path.realpath(b)


def _inside(path, folder):
    path, folder = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return path == folder or folder in path.parents


def check_outputs(outputs, *, reads=(), scans=(), scanned_suffixes=()):
    """Check every output of a command before it starts: writable, and never one of its inputs.

    An output is refused when it names a file the command reads, or a file
    with one of ``scanned_suffixes`` inside a folder it scans (writing there
    would replace a photo, or add a file the next scan reads as one).

    Parameters
    ----------
    outputs : iterable of (str, path) or None
        ``(what, path)`` of each file the command will write, such as
        ``("--csv", "pairs.csv")``; ``None`` entries and paths are skipped.
    reads : iterable of path
        Files the command reads.
    scans : iterable of path
        Folders whose files the command reads.
    scanned_suffixes : iterable of str
        Lower-case suffixes (``".jpg"``) of the files read in ``scans``.

    Raises
    ------
    ValueError
        One line naming the output and the input it would replace.
    OSError
        As :func:`check_output_path`.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> (folder / "cat.jpg").write_bytes(b"...")
    3
    >>> check_outputs([("--plot", folder / "cat.jpg")], reads=[folder / "cat.jpg"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: --plot ...cat.jpg is ...cat.jpg, which this command reads: choose another file name; ...
    """
    reads, scans, suffixes = list(reads), [s for s in scans if s is not None], tuple(scanned_suffixes)
    for what, path in (output for output in outputs if output is not None and output[1] is not None):
        for source in reads:
            if source is not None and _same_file(path, source):
                raise ValueError(
                    f"{what} {path} is {source}, which this command reads: choose another file name; "
                    "nothing was written."
                )
        for folder in scans:
            if Path(path).suffix.lower() in suffixes and _inside(path, folder):
                raise ValueError(
                    f"{what} {path} is an image file inside {folder}, which this command reads: write it "
                    "outside that folder; nothing was written."
                )
        check_output_path(path)


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
