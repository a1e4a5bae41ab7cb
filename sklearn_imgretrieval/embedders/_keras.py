"""The one place the embedders import Keras (and so TensorFlow).

Every module of this package gets Keras from :func:`import_keras`, and only
when a network is built, trained or run on Keras: a fitted embedder whose
inference graph runs on ONNX Runtime never imports it.

TensorFlow 2.21 writes start-up notices from C++ straight to file
descriptor 2 on every import, whatever ``TF_CPP_MIN_LOG_LEVEL`` says::

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:... port.cc:153] oneDNN custom operations are on. You may see slightly ...

and, unless ``TF_CPP_MIN_LOG_LEVEL`` is 1 or more, which instructions the
CPU has (``cpu_feature_guard.cc``, two lines). They say nothing a user can
act on, so ``import_keras`` points descriptor 2 at a temporary file during
the import and then writes every other line to the real one, in order:
TensorFlow's warnings and errors, Python's warnings, anything else. No
environment variable is set (``TF_ENABLE_ONEDNN_OPTS=0`` would also change
the numbers), and nothing stays changed after the import.

Exporting a network to ONNX runs TensorFlow's graph optimiser, which logs
INFO lines (``devices.cc``, ``single_machine.cc``) on every export;
:func:`tensorflow_info_dropped` drops TensorFlow's INFO lines, and only
those, for the length of an export. Other threads' writes to stderr during
either stretch come out at its end.
"""

import os
import re
import sys
import tempfile
import threading
from contextlib import contextmanager

__all__ = ["import_keras", "tensorflow_info_dropped"]

# The start of an INFO line of TensorFlow's C++ logging, up to the source file's name: abseil's
# format (2.18 on: I, month and day, time, thread) or TensorFlow's own before it (2.16-2.17:
# date, time, "I" and the file's folder).
_INFO_START = rb"(?:I\d{4} [\d:.]+ +\d+ |\d{4}-\d\d-\d\d [\d:.]+: I (?:[\w.]+/)*)"
# The start-up notices dropped, each a whole line (TensorFlow 2.16-2.21).
_NOTICES = re.compile(
    rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|" + _INFO_START + rb"port\.cc:\d+\] oneDNN custom operations are on\. .*"
    rb"|" + _INFO_START + rb"cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized .*"
)
# The second line of the CPU-feature notice, dropped only right after its first.
_CPU_FEATURES_CONTINUED = re.compile(rb"To enable the following instructions: .*")
# Any INFO line of TensorFlow's C++ logging.
_INFO = re.compile(_INFO_START + rb"[\w.]+:\d+\] .*")

_STDERR_LOCK = threading.RLock()  # descriptor 2 is the process's: one redirection at a time


def without_start_up_notices(text):
    """``text`` (bytes written to stderr) without TensorFlow's start-up notices (at import)."""
    kept, after_cpu_notice = [], False
    for line in text.splitlines(keepends=True):
        content = line.rstrip(b"\r\n")
        if _NOTICES.fullmatch(content):
            after_cpu_notice = b"cpu_feature_guard" in content
            continue
        if after_cpu_notice and _CPU_FEATURES_CONTINUED.fullmatch(content):
            after_cpu_notice = False
            continue
        after_cpu_notice = False
        kept.append(line)
    return b"".join(kept)


def _flush_stderr():
    if sys.stderr is not None:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):  # closed or detached: nothing buffered to lose
            pass


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def without_info(text):
    """``text`` without TensorFlow's INFO lines (during an export)."""
    return b"".join(line for line in text.splitlines(keepends=True) if not _INFO.fullmatch(line.rstrip(b"\r\n")))


@contextmanager
def _stderr_filtered(keep):
    """Descriptor 2 goes to a temporary file inside the block; ``keep(text)`` of it is written back."""
    try:
        real_stderr = os.dup(2)
    except OSError:  # no descriptor 2 (pythonw on Windows): nothing is printed anyway
        yield
        return
    try:
        with tempfile.TemporaryFile() as captured:  # a file, not a pipe: a long error cannot block the import
            _flush_stderr()
            os.dup2(captured.fileno(), 2)
            try:
                yield
            finally:
                _flush_stderr()
                os.dup2(real_stderr, 2)
                captured.seek(0)
                _write_all(2, keep(captured.read()))
    finally:
        os.close(real_stderr)


def import_keras():
    """The ``keras`` module, imported without TensorFlow's start-up notices.

    Returns
    -------
    keras : module
        Keras 3, on the backend it is configured for.

    Raises
    ------
    ImportError
        When Keras or its backend is not installed; the message says what
        to install.
    """
    keras = sys.modules.get("keras")
    if keras is not None and not getattr(getattr(keras, "__spec__", None), "_initializing", False):
        return keras  # imported, and not half-way through an import in another thread
    with _STDERR_LOCK:
        try:
            with _stderr_filtered(without_start_up_notices):
                import keras
        except ImportError as exc:
            raise ImportError(
                f"Training an embedder, or running one on Keras, needs Keras 3 and its backend ({exc}). "
                "Install them with pip install keras tensorflow-cpu (tensorflow on macOS and ARM), or "
                "run a fitted embedder that holds an inference graph with inference='onnxruntime'."
            ) from exc
    return keras


@contextmanager
def tensorflow_info_dropped():
    """TensorFlow's INFO lines are dropped from stderr inside the block; everything else is kept."""
    with _STDERR_LOCK, _stderr_filtered(without_info):
        yield
