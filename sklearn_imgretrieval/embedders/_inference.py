"""The inference runtime: a fitted network exported to ONNX and run by ONNX Runtime, or Keras.

Keras trains; inference runs where it is cheapest. At the end of ``fit``
(``inference="auto"`` or ``"onnxruntime"``) the network behind ``transform``
is exported to one ONNX graph (fp32, opset 15) with tf2onnx and checked
against Keras on a few random images; ``transform`` then runs it with ONNX
Runtime, and a file saved from the estimator carries it, so a process that
loads the file embeds without importing Keras or TensorFlow. The embedders
call this module; nothing outside the ``embedders`` package knows which
runtime ran.

Measured on a 2-core machine (see benchmarks/bench_inference.py): export
of a small autoencoder's encoder 0.07-0.25 s, of an EfficientNet-Lite0
embedder 2.8-4.9 s; merging a fine-tuned head onto a backbone's graph
0.12 s. So ``fit`` exports every network, except that the graph of a
pretrained backbone with ImageNet weights is cached on disk (beside the
converted weights, ``_lite0._cache_dirs``) and read back by later fits.

The state an estimator saves (``KerasEmbedder.__getstate__``), for readers
of model files:

``_keras_weights``
    dict: name of a network attribute (``encoder_``, ``embedder_``, ...) ->
    list of its weight arrays, in ``get_weights`` order.
``_onnx_graph``
    1-D uint8 array: the bytes of a serialised ONNX ``ModelProto``, or None
    when no graph could be made (``inference="keras"``, or no exporter on
    the Keras backend). It has one float32 input of shape
    ``(batch, *input_shape)``, where ``input_shape`` is ``image_shape_``
    for PretrainedCNNEmbedder and ``(n_features_in_,)`` for the others, a
    symbolic batch dimension, and one float32 output of shape
    ``(batch, n_features_out)``: the embeddings before the last step
    ``transform`` does in NumPy (ContrastiveEmbedder's L2 normalisation
    when ``normalize=True``). Files saved before graphs existed lack the key.
    Only the domains ``""``/``"ai.onnx"`` and ``"ai.onnx.ml"`` appear.

Safety: a graph from a file is data. :func:`check_graph` runs before ONNX
Runtime sees one and refuses graphs whose nodes or opset imports name any
other operator domain (a custom domain would need a custom-op library,
which is code; ``com.microsoft``, ONNX Runtime's built-in contrib
operators, is refused too, since the exporter never writes it and the
standard set is the smaller surface), graphs with external-data tensors
(each names a file ONNX Runtime would read), graphs with training
information or model-local functions, and graphs whose input or output
does not match the estimator's shapes. No custom-op library is ever
registered. ONNX Runtime has no switch that turns external data off at run
time; its maintainers advise checking for it before loading
(microsoft/onnxruntime#7548).
"""

import hashlib
import importlib.util
import json
import logging
import os
import threading
import warnings
import weakref
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .._files import atomic_write
from .._parallel import local_threads
from ._keras import import_keras, tensorflow_info_dropped
from ._onnx_format import FLOAT, read_graph_summary

__all__ = [
    "ExportError",
    "INFERENCE_OPTIONS",
    "cached_graph",
    "chain_graphs",
    "check_graph",
    "export_graph",
    "export_unavailable_reason",
    "run_graph",
    "session_for",
]

INFERENCE_OPTIONS = ("auto", "onnxruntime", "keras")
#: Operator domains a graph may use: the ONNX standard and its ML operators.
ALLOWED_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
#: ONNX opset of exported graphs: ONNX Runtime runs it from version 1.11 on.
OPSET = 15
#: Bumped when exported graphs change, so that cached files of an older layout are not read.
GRAPH_FORMAT = 1
#: Largest difference allowed between ONNX Runtime and Keras, relative to the output's scale.
_AGREEMENT = 1e-4
_VERIFY_IMAGES = 3

_SESSIONS = weakref.WeakValueDictionary()  # (graph digest, threads) -> session, while a graph array holds it
# (id of a graph array, threads) -> (weak reference to the array, session): found without hashing the
# graph again, and kept outside the estimator, whose transform must not change its __dict__
_BY_GRAPH = {}
_SESSIONS_LOCK = threading.Lock()
_EXPORT_LOCK = threading.Lock()  # tf2onnx's logger is process-wide


class ExportError(RuntimeError):
    """The fitted network could not be exported to an ONNX graph here."""


# ------------------------------------------------------------------ checks
def _describe(dims, elem_type=FLOAT):
    shape = "(" + ", ".join("batch" if d is None else str(d) for d in dims) + ")"
    return shape if elem_type == FLOAT else f"{shape} of element type {elem_type}"


def check_graph(graph, *, input_shape, output_size, source="the inference graph"):
    """Refuse a graph that is not a plain inference graph of the expected shapes.

    Parameters
    ----------
    graph : bytes-like
        A serialised ONNX model.
    input_shape : tuple of int
        Shape of one input sample.
    output_size : int
        Size of one embedding.
    source : str
        Where the graph came from, for the error message.

    Raises
    ------
    ValueError
        Naming what is wrong: custom operator domains, external data,
        training information or local functions, wrong inputs or outputs,
        or bytes that are not an ONNX model.
    """
    try:
        summary = read_graph_summary(graph)
    except ValueError as exc:
        raise ValueError(f"{source} is not a readable ONNX graph ({exc}); the file is damaged.") from None
    remedy = (
        "Graphs written by sklearn-imgretrieval use only the standard ONNX operators and keep their weights inside; "
        "this one was made or changed elsewhere, so it is not loaded. If you trust the file, refit the embedder "
        "or set inference='keras' before calling transform."
    )
    custom = sorted(summary.domains - ALLOWED_DOMAINS)
    if custom:
        raise ValueError(
            f"{source} uses operators of the domain(s) {custom}, which need code outside the ONNX standard "
            f"(a custom-op library) to run. {remedy}"
        )
    if summary.external_data:
        raise ValueError(
            f"{source} has {summary.external_data} tensor(s) whose data are in external files, which ONNX "
            f"Runtime would open and read. {remedy}"
        )
    if summary.refused:
        refused = " and ".join(summary.refused)
        raise ValueError(f"{source} holds {refused}, which an inference graph has no use for. {remedy}")
    expected_in, expected_out = [None, *input_shape], [None, output_size]
    if summary.n_graphs != 1 or summary.inputs != [(FLOAT, expected_in)] or summary.outputs != [(FLOAT, expected_out)]:
        found = "; ".join(
            f"{what} " + (", ".join(_describe(dims, elem_type) for elem_type, dims in infos) or "none")
            for what, infos in (("inputs", summary.inputs), ("outputs", summary.outputs))
        )
        raise ValueError(
            f"{source} does not fit this estimator: it should take one float32 input of shape "
            f"{_describe(expected_in)} and give one float32 output of shape {_describe(expected_out)}, "
            f"but has {found}. The graph and the estimator's fitted attributes come from different fits; "
            "refit the embedder."
        )


# ----------------------------------------------------------------- export
def export_unavailable_reason():
    """Why no graph can be exported in this process, or None when one can.

    Imports Keras (the exporter needs the backend Keras runs on).
    """
    missing = [name for name in ("onnxruntime", "tf2onnx") if importlib.util.find_spec(name) is None]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        return f"{' and '.join(missing)} {verb} not installed (pip install {' '.join(missing)})"
    backend = import_keras().config.backend()
    if backend != "tensorflow":
        return (
            f"Keras runs on {backend}, and this library exports graphs from the TensorFlow backend only "
            "(KERAS_BACKEND=tensorflow)"
        )
    return None


class _SkippedOptimizerPasses(logging.Filter):
    # tf2onnx logs a warning with a traceback when one of its optimiser passes fails on a graph
    # (MobileNetV3's scalar biases) and goes on without it; the graph is checked after export.
    def filter(self, record):
        return not str(record.msg).startswith("Failed to apply")


@contextmanager
def _quiet_tf2onnx():
    logger = logging.getLogger("tf2onnx.optimizer")  # where the record is made: filters do not see children's
    skipped = _SkippedOptimizerPasses()
    logger.addFilter(skipped)
    try:
        yield
    finally:
        logger.removeFilter(skipped)


def export_graph(network, input_shape):
    """Export ``network`` (a Keras model on float32 inputs) to an ONNX graph.

    Parameters
    ----------
    network : keras.Model
        Takes ``(batch, *input_shape)`` float32, gives one 2-D output.
    input_shape : tuple of int

    Returns
    -------
    graph : ndarray of uint8
        The serialised ONNX model, checked against ``network``.

    Raises
    ------
    ExportError
        When the exporter is not available or the graph disagrees with Keras.
    """
    reason = export_unavailable_reason()
    if reason is not None:
        raise ExportError(reason)
    # The exporter works on the backend's own functions: the one place the package imports TensorFlow by name.
    import tensorflow as tf
    import tf2onnx

    spec = [tf.TensorSpec((None, *input_shape), tf.float32, name="input")]
    function = tf.function(lambda x: network(x, training=False))
    with _EXPORT_LOCK, _quiet_tf2onnx(), tensorflow_info_dropped():
        try:
            model, _ = tf2onnx.convert.from_function(function, input_signature=spec, opset=OPSET)
        except Exception as exc:  # whatever tf2onnx raises on a layer it cannot convert
            raise ExportError(f"tf2onnx could not convert the network ({type(exc).__name__}: {exc})") from exc
    graph = np.frombuffer(model.SerializeToString(), dtype=np.uint8).copy()
    verify_graph(graph, lambda x: network(x, training=False), input_shape)
    return graph


def chain_graphs(first, second):
    """One graph feeding ``first``'s output into ``second``'s input (a backbone, then a head)."""
    import onnx  # a dependency of tf2onnx, needed only here
    import onnx.compose

    a = onnx.load_from_string(first.tobytes())
    b = onnx.compose.add_prefix(onnx.load_from_string(second.tobytes()), "head/")
    merged = onnx.compose.merge_models(a, b, io_map=[(a.graph.output[0].name, b.graph.input[0].name)])
    return np.frombuffer(merged.SerializeToString(), dtype=np.uint8).copy()


def verify_graph(graph, keras_function, input_shape):
    """Raise ExportError unless ``graph`` computes what ``keras_function`` does on a few random inputs."""
    x = np.random.default_rng(0).random((_VERIFY_IMAGES, *input_shape), dtype=np.float32)
    expected = np.asarray(keras_function(x), dtype=np.float32)
    try:
        session = _new_session(graph, n_threads=1)
        found = session.run(None, {session.get_inputs()[0].name: x})[0]
    except Exception as exc:  # ONNX Runtime refusing the graph: a wrong export, as a wrong answer is
        raise ExportError(f"ONNX Runtime cannot run the exported graph ({type(exc).__name__}: {exc})") from exc
    finite = np.abs(expected[np.isfinite(expected)])
    tolerance = _AGREEMENT * max(1.0, float(finite.max()) if finite.size else 1.0)
    # a diverged network gives NaN or inf on both runtimes: that is agreement too
    if found.shape == expected.shape and np.isclose(found, expected, rtol=0, atol=tolerance, equal_nan=True).all():
        return
    with np.errstate(invalid="ignore"):
        difference = float(np.nanmax(np.abs(found - expected))) if found.shape == expected.shape else np.inf
    raise ExportError(
        f"the exported graph does not compute what the Keras network does (largest difference "
        f"{difference:.3g}, allowed {tolerance:.3g})"
    )


# ------------------------------------------------------------ disk cache
def _owned_here(path):
    # The temporary cache folder is shared by every user of the machine: only our own files are read.
    return not hasattr(os, "getuid") or path.stat().st_uid == os.getuid()


def cached_graph(name, key, export, verify, *, input_shape, output_size):
    """A graph read from the disk cache, or exported and cached.

    Parameters
    ----------
    name : str
        Start of the cached file's name (the backbone).
    key : dict
        Everything that defines the graph (JSON-serialisable); its digest
        names the file.
    export : callable
        ``export()`` makes the graph when no cached file is usable.
    verify : callable
        ``verify(graph)`` raises ExportError when a cached graph does not
        compute what the network does; it is exported again then.
    input_shape, output_size
        What the graph must take and give.
    """
    from ._lite0 import _cache_dirs  # the folders of the converted ImageNet weights

    digest = hashlib.sha256(json.dumps({"format": GRAPH_FORMAT, **key}, sort_keys=True).encode()).hexdigest()
    filename = f"{name}_{digest[:20]}.onnx"
    for folder in _cache_dirs():
        path = Path(folder) / filename
        try:
            if not path.is_file() or not _owned_here(path):
                continue
            graph = np.fromfile(path, dtype=np.uint8)
            check_graph(graph, input_shape=input_shape, output_size=output_size, source=str(path))
            verify(graph)
            return graph
        except (OSError, ValueError, ExportError) as exc:
            warnings.warn(f"The cached inference graph {path} is not usable ({exc}); exporting it again.", stacklevel=3)
    graph = export()
    for folder in _cache_dirs():
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
            with atomic_write(Path(folder) / filename) as file:
                file.write(graph.tobytes())
            break
        except OSError:
            continue  # the next folder; without any, the graph is exported again next time
    return graph


# ---------------------------------------------------------------- running
def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError(
            "inference='onnxruntime' needs ONNX Runtime: pip install onnxruntime (or set inference='keras')."
        ) from exc
    return onnxruntime


def onnxruntime_installed():
    return importlib.util.find_spec("onnxruntime") is not None


def _new_session(graph, n_threads):
    onnxruntime = _import_onnxruntime()
    options = onnxruntime.SessionOptions()  # the default optimisation level: ORT_ENABLE_ALL
    options.intra_op_num_threads = n_threads
    return onnxruntime.InferenceSession(graph.tobytes(), options, providers=["CPUExecutionProvider"])


def threads_for(n_jobs):
    """ONNX Runtime's intra-op threads for an estimator's ``n_jobs``; 0 is its default (one per core)."""
    return 0 if n_jobs is None else local_threads(n_jobs)


def session_for(graph, *, n_jobs, input_shape, output_size, source="the inference graph"):
    """The ONNX Runtime session of ``graph`` (a uint8 array), built once per process.

    A session lives as long as some graph array with its bytes does.
    ``graph`` is checked (:func:`check_graph`) before ONNX Runtime parses it.
    """
    threads = threads_for(n_jobs)
    key = (id(graph), threads)
    with _SESSIONS_LOCK:
        entry = _BY_GRAPH.get(key)
    if entry is not None and entry[0]() is graph:
        return entry[1]
    digest = (hashlib.sha256(graph).hexdigest(), threads)
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(digest)
    if session is None:
        check_graph(graph, input_shape=input_shape, output_size=output_size, source=source)
        session = _new_session(graph, threads)
        with _SESSIONS_LOCK:
            session = _SESSIONS.setdefault(digest, session)

    def forget(reference, key=key):
        with _SESSIONS_LOCK:
            if _BY_GRAPH.get(key, (None,))[0] is reference:
                del _BY_GRAPH[key]

    with _SESSIONS_LOCK:
        _BY_GRAPH[key] = (weakref.ref(graph, forget), session)
    return session


def run_graph(session, x, batch_size, *, verbose=0):
    """Run ``session`` over ``x`` batch by batch, into one preallocated float32 output.

    ONNX Runtime gives an image the same embedding whatever else is in its
    batch (checked in tests/test_inference.py), so unlike Keras the last
    batch is not padded.
    """
    name = session.get_inputs()[0].name
    n_rows = len(x)
    out = None
    starts = range(0, n_rows, batch_size)
    if verbose:
        from tqdm.auto import tqdm

        starts = tqdm(starts, total=len(starts), unit="batch")
    for start in starts:
        batch = np.ascontiguousarray(x[start : start + batch_size], dtype=np.float32)
        result = session.run(None, {name: batch})[0]
        if out is None:
            out = np.empty((n_rows, *result.shape[1:]), dtype=np.float32)
        out[start : start + len(batch)] = result
    return out
