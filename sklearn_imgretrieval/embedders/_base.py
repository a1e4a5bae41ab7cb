"""What every Keras embedder shares.

``KerasEmbedder`` gives its subclasses input validation (2-D rows or 4-D
images, the image-shape rule of ``_image_shape``), a seeded fit loop with a
validation split and early stopping, batched prediction, the choice of
inference runtime (``_inference``: ONNX Runtime or Keras), persistence of
the networks as plain weight arrays next to their inference graph, and
scikit-learn tags. A subclass says which attributes hold Keras models, how
to build them and which network ``transform`` runs; the rest is here.

Keras is imported only to build, train or run a network on Keras: a fitted
embedder loaded from a file keeps its weights aside and rebuilds its
networks on first use of one (``__getattr__``), so an embedder that runs on
ONNX Runtime never imports Keras or TensorFlow.

Randomness never touches global state: every seed comes from
``_seeding``, derived from ``random_state``.
"""

from __future__ import annotations

import math
import numbers
import threading
import warnings
import weakref

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_array, check_is_fitted

from .._batch_size import check_batch_size
from .._dask import is_dask_array, transform_blocks
from .._image_io import warn_unless_unit_range
from .._image_shape import check_image_shape, infer_image_shape
from .._sklearn_compat import Interval, StrOptions, validate_data
from . import _inference
from ._keras import import_keras

_EAGER_STEPS = 32  # training steps below which a fit runs eagerly
_REBUILD_LOCK = threading.RLock()  # two threads using a loaded embedder rebuild its networks once
_SAID_OLDER_FILE = weakref.WeakSet()  # embedders from older files that said so (not in __dict__: transform keeps it)
#: Parameters that files of older versions lack, and the value that gives their behaviour.
_PARAMETERS_ADDED_LATER = {"inference": "auto", "n_jobs": None}


def split_validation(n_samples, validation_fraction, seed):
    """Seeded (train, validation) row indices; validation empty for fraction 0."""
    if validation_fraction == 0:
        return np.arange(n_samples), np.arange(0)
    n_val = math.ceil(n_samples * validation_fraction)
    if n_val < 1 or n_samples - n_val < 1:
        raise ValueError(
            f"validation_fraction={validation_fraction} of {n_samples} samples leaves "
            f"{n_val} for validation and {n_samples - n_val} for training; both need "
            "at least one. Give more samples or set validation_fraction=0 (which "
            "also turns early stopping off)."
        )
    order = np.random.default_rng(seed).permutation(n_samples)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


class KerasEmbedder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Base of the Keras embedders; not an estimator by itself.

    Subclasses set ``_keras_models`` (names of fitted attributes holding Keras
    models) and implement ``_build_models(seed)``, which creates those
    attributes from the fitted shapes (``n_features_in_``, ``image_shape_``)
    and the parameters, ``_keras_embed(x)`` (the embeddings on Keras) and
    ``_inference_network()`` (the same computation as one Keras model, which
    is exported). Weights are not part of the build: persistence stores them
    separately and sets them on a fresh build. Each ``fit`` calls
    ``_start_fitting()`` first and ``_make_inference_graph()`` last.
    """

    _keras_models = ()

    #: Constraints of the training parameters every trained embedder has.
    _parameter_constraints = {
        "latent_dim": [Interval(numbers.Integral, 1, None, closed="left")],
        "epochs": [Interval(numbers.Integral, 1, None, closed="left")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "learning_rate": [Interval(numbers.Real, 0, None, closed="neither")],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="left")],
        "early_stopping": ["boolean"],
        "patience": [Interval(numbers.Integral, 0, None, closed="left")],
        "warm_start": ["boolean"],
        "image_shape": [None, "array-like"],
        "inference": [StrOptions(set(_inference.INFERENCE_OPTIONS))],
        "n_jobs": [None, numbers.Integral],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    @property
    def _requires_image_shape(self):
        """Whether the architecture needs an image shape (conv) or only rows (dense)."""
        return getattr(self, "architecture", "dense") == "conv"

    def _infer_image_shape(self, n_features):
        """(H, W, C) of 2-D rows at fit; subclasses taking any row length override it."""
        return infer_image_shape(n_features, self.image_shape, required=self._requires_image_shape)

    def _check_image_shape(self, shape):
        """Hook for subclasses that accept only some images (channel counts)."""

    # -------------------------------------------------------------- input
    def _validate_input(self, X, *, reset):
        """float32 rows of ``X``, which may be 2-D rows or 4-D (n, H, W, C) images.

        On ``reset`` sets ``n_features_in_`` and ``image_shape_``. Afterwards
        4-D images must have the fitted shape: a 4x16 image has as many
        pixels as an 8x8 one, and must not be read as one. Values outside
        [0, 1] give a warning, not an error: 0-255 pixels are a mistake,
        but features that are not pixels are valid rows for the dense
        autoencoders (and scikit-learn's checks send such rows).
        """
        four_d = getattr(X, "ndim", None) == 4
        if four_d:
            images = np.asarray(X)
            if not reset and self.image_shape_ is not None and images.shape[1:] != tuple(self.image_shape_):
                raise ValueError(
                    f"The images have shape {images.shape[1:]} (height, width, channels) "
                    f"but this embedder was fitted on images of shape {tuple(self.image_shape_)}. "
                    "Resize them the same way (ImagePreprocessor(size=...)) or refit."
                )
            rows = images.reshape(images.shape[0], -1)
        else:
            rows = X
        rows = validate_data(self, rows, reset=reset, dtype=np.float32, ensure_min_samples=1)
        if reset:
            shape = images.shape[1:] if four_d else self._infer_image_shape(rows.shape[1])
            if four_d and self.image_shape is not None and check_image_shape(self.image_shape) != shape:
                raise ValueError(
                    f"image_shape={tuple(self.image_shape)!r} does not match the "
                    f"images given, of shape {shape}. Leave image_shape=None for "
                    "4-D input."
                )
            if shape is not None:
                self._check_image_shape(shape)
            self.image_shape_ = shape
            self._input_ndim = 4 if four_d else 2
        check_batch_size(self.batch_size, self._network_row_values(rows.shape[1]))
        advice = "put ImagePreprocessor first, which scales uint8 images to [0, 1]"
        warn_unless_unit_range(rows, who=type(self).__name__, uint8_advice=advice)
        return rows

    def _network_row_values(self, n_features):
        """Values of one row as the network takes it; networks that resize their input override it."""
        return n_features

    def _as_input_layout(self, rows):
        """Rows back in the layout ``fit`` was given (2-D rows or 4-D images)."""
        if self._input_ndim == 4:
            return rows.reshape((rows.shape[0],) + tuple(self.image_shape_))
        return rows

    def _check_embeddings(self, Z):
        """Validate embeddings given to ``inverse_transform``."""
        Z = check_array(Z, dtype=np.float32)
        if Z.shape[1] != self.latent_dim:
            raise ValueError(
                f"Embeddings have {Z.shape[1]} features but this embedder's latent_dim "
                f"is {self.latent_dim}. Pass the output of transform."
            )
        return Z

    def _check_latent_dim(self, n_features):
        if self.latent_dim > n_features:
            raise ValueError(
                f"latent_dim={self.latent_dim} is larger than the input's "
                f"n_features={n_features}: the embedding would not compress the "
                f"images. Choose latent_dim <= {n_features}."
            )

    # ------------------------------------------------------------ training
    def _start_fitting(self):
        """Before a fit trains anything: check the runtime asked for, forget the old graph."""
        if self.inference == "onnxruntime":
            reason = _inference.export_unavailable_reason()
            if reason is not None:
                raise ValueError(
                    f"inference='onnxruntime' runs an ONNX graph exported at the end of fit, but {reason}. "
                    "Use inference='auto' (ONNX Runtime when it can, else Keras) or inference='keras'."
                )
        if self.__dict__.get("_pending_weights"):
            self._rebuild_networks()  # a loaded embedder: its networks, for a warm start or to be replaced
        self._forget_inference_graph()

    def _forget_inference_graph(self):
        self._onnx_graph = None
        self.__dict__.pop("_graph_from_older_file", None)

    def _make_inference_graph(self):
        """At the end of ``fit``: export the network ``transform`` runs, unless ``inference="keras"``.

        With ``"auto"``, no exporter (another Keras backend, tf2onnx missing)
        leaves inference on Keras silently, and a failed export with a
        warning; with ``"onnxruntime"`` a failed export raises.
        """
        self._forget_inference_graph()
        if self.inference == "keras" or (
            self.inference == "auto" and _inference.export_unavailable_reason() is not None
        ):
            return
        try:
            self._onnx_graph = self._export_inference_graph()
        except _inference.ExportError as exc:
            if self.inference == "onnxruntime":
                raise RuntimeError(
                    f"The fitted network could not be exported for ONNX Runtime: {exc}. Fit with "
                    "inference='auto' or 'keras' to embed on Keras."
                ) from exc
            warnings.warn(
                f"{type(self).__name__} embeds on Keras: its network could not be exported for ONNX Runtime ({exc}).",
                stacklevel=3,
            )

    def _export_inference_graph(self):
        """The ONNX graph of ``_inference_network()``; subclasses may read it from a cache."""
        return _inference.export_graph(self._inference_network(), self._graph_input_shape())

    def _fit_model(self, model, x, y, *, seed, continuing=False, callbacks=()):
        """Train ``model`` (compiled) on ``x`` -> ``y`` and record the history.

        ``y`` may be ``x`` itself (autoencoders), labels, or None when the
        model adds its own loss. Holds out ``validation_fraction`` for early
        stopping with ``patience``, restoring the best weights. When
        ``continuing`` a warm start, the history and epoch count grow.
        ``callbacks`` are extra Keras callbacks (benchmarks use them to
        measure during training).
        """
        keras = import_keras()
        from ._layers import ShuffledBatches

        train, val = split_validation(len(x), self.validation_fraction, seed)

        def targets(x_part, rows):
            if y is None:
                return None
            return x_part if y is x else y[rows]

        x_train = x[train] if len(val) else x
        y_train = targets(x_train, train)
        callbacks = list(callbacks)
        validation_data = None
        if len(val):
            x_val = x[val]
            y_val = targets(x_val, val)
            validation_data = (x_val,) if y_val is None else (x_val, y_val)
            if self.early_stopping:
                callbacks.append(
                    keras.callbacks.EarlyStopping(monitor="val_loss", patience=self.patience, restore_best_weights=True)
                )
        batches = ShuffledBatches(x_train, y_train, self.batch_size, seed)
        # Compiling the training step into a graph costs about a second; a
        # fit of a few steps (small galleries, folds of a grid search) is done
        # sooner step by step. Both run the same operations.
        model.run_eagerly = len(batches) * self.epochs <= _EAGER_STEPS
        history = model.fit(
            batches,
            epochs=self.epochs,
            shuffle=False,  # ShuffledBatches shuffles; Keras's would use the global `random`
            validation_data=validation_data,
            validation_batch_size=self.batch_size,
            callbacks=callbacks,
            verbose=self.verbose,
        ).history
        history = {key: [float(v) for v in values] for key, values in history.items()}
        if continuing:
            for key, values in history.items():
                self.history_.setdefault(key, []).extend(values)
            self.n_iter_ += len(history["loss"])
        else:
            self.history_ = history
            self.n_iter_ = len(history["loss"])

    def _continues_training(self):
        """True when this fit goes on from the networks of the previous fit."""
        return bool(getattr(self, "warm_start", False)) and self.__sklearn_is_fitted__()

    def _predict(self, model, x):
        """``model`` over ``x`` batch by batch, into one preallocated float32 output.

        Only one batch at a time becomes a backend tensor, so memory follows
        the batch, not ``len(x)`` (``model.predict`` converts the whole input
        and keeps every batch's output before concatenating). Every batch has
        ``batch_size`` rows, the last one padded with copies of its last row:
        the backend picks convolution kernels by batch size, so without
        padding an image's embedding would change (by ~1e-7) with the number
        of images it shares a batch with. A model with several outputs gives
        a list of arrays.
        """
        keras = import_keras()
        n_rows, size = len(x), self.batch_size
        outputs = None
        progress = keras.utils.Progbar(n_rows, unit_name="image") if self.verbose else None
        # Always the compiled forward pass, never step by step: the two round
        # differently (by ~1e-7), and an image's embedding must not depend on
        # what the model computed before. A short fit leaves run_eagerly on.
        if model.run_eagerly:
            model.run_eagerly = False
            model.make_predict_function(force=True)
        for start in range(0, n_rows, size):
            stop = min(start + size, n_rows)
            batch = x[start:stop]
            if stop - start < size:
                batch = np.concatenate([batch, np.repeat(batch[-1:], size - (stop - start), axis=0)])
            result = model.predict_on_batch(batch)
            parts = result if isinstance(result, (list, tuple)) else [result]
            if outputs is None:
                outputs = [np.empty((n_rows,) + tuple(part.shape[1:]), dtype=np.float32) for part in parts]
            for out, part in zip(outputs, parts):
                out[start:stop] = np.asarray(part)[: stop - start]
            if progress is not None:
                progress.update(stop)
        return outputs if len(outputs) > 1 else outputs[0]

    # ------------------------------------------------------------ sklearn
    @property
    def _n_features_out(self):
        return self.latent_dim

    def __sklearn_is_fitted__(self):
        # Without touching the networks: a loaded embedder keeps their weights aside until one is used.
        pending = self.__dict__.get("_pending_weights") or {}
        return bool(self._keras_models) and all(name in self.__dict__ or name in pending for name in self._keras_models)

    def transform(self, X: ArrayLike) -> np.ndarray:
        """Embed ``X`` into ``latent_dim`` float32 features.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, H, W, C)
            Images as rows (from ImagePreprocessor) or as a 4-D array. A
            dask array is embedded block by block, lazily.

        Returns
        -------
        embeddings : ndarray of float32, shape (n_samples, latent_dim)
            One embedding per image (a dask array for a dask array).
        """
        check_is_fitted(self)
        if is_dask_array(X):  # a lazy dask array back, block by block
            return transform_blocks(self.transform, X, self._n_features_out)
        rows = self._validate_input(X, reset=False)
        return self._embed(rows)

    # ---------------------------------------------------------- inference
    def _graph_input_shape(self):
        """Shape of one sample the inference network takes: a row; PretrainedCNNEmbedder takes images."""
        return (self.n_features_in_,)

    def _network_input(self, rows):
        return rows.reshape((rows.shape[0], *self._graph_input_shape()))

    def _finish_embeddings(self, embeddings):
        """What ``transform`` does after the network, in NumPy on either runtime."""
        return embeddings

    def _keras_embed(self, x):
        raise NotImplementedError

    def _inference_network(self):
        raise NotImplementedError

    def _embed(self, rows):
        """Embeddings of validated rows, on the runtime ``inference`` picks."""
        x = self._network_input(rows)
        session = self._inference_session()
        if session is None:
            embeddings = self._keras_embed(x)
        else:
            embeddings = _inference.run_graph(session, x, self.batch_size, verbose=self.verbose)
        return self._finish_embeddings(embeddings)

    def _inference_session(self):
        """The ONNX Runtime session ``transform`` uses, or None to run on Keras.

        ``"auto"``: the graph's session when there is a graph and ONNX
        Runtime is installed. ``"onnxruntime"``: always; a missing graph (an
        older file, or a fit with another setting) is exported now.
        ``"keras"``: never.
        """
        inference = self.inference
        if inference not in _inference.INFERENCE_OPTIONS:  # set_params after fit is not validated
            raise ValueError(f"inference must be one of {list(_inference.INFERENCE_OPTIONS)}, got {inference!r}.")
        graph = self.__dict__.get("_onnx_graph")
        if inference == "keras" or (inference == "auto" and (graph is None or not _inference.onnxruntime_installed())):
            if inference == "auto" and self.__dict__.get("_graph_from_older_file") and self not in _SAID_OLDER_FILE:
                _SAID_OLDER_FILE.add(self)
                warnings.warn(
                    f"This {type(self).__name__} was loaded from a file saved before sklearn-imgretrieval stored "
                    "inference graphs, so it embeds on Keras (TensorFlow starts; about half as fast). Save it "
                    "again (sklearn_imgretrieval.save, or joblib.dump for a pickle) to store its graph: the new "
                    "file embeds on ONNX Runtime.",
                    stacklevel=4,
                )
            return None
        if graph is None:
            try:
                graph = self._export_inference_graph()
            except _inference.ExportError as exc:
                raise RuntimeError(
                    f"inference='onnxruntime' runs an ONNX graph of the fitted network, and none could be "
                    f"exported: {exc}. Set inference='auto' or 'keras' to embed on Keras."
                ) from exc
            self._onnx_graph = graph
            self.__dict__.pop("_graph_from_older_file", None)
        return _inference.session_for(
            graph,
            n_jobs=self.n_jobs,
            input_shape=self._graph_input_shape(),
            output_size=self._n_features_out,
            source=f"The inference graph of this {type(self).__name__}",
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        tags.input_tags.allow_nan = False
        return tags

    # -------------------------------------------------------- persistence
    def __getattr__(self, name):
        # Reached only when an attribute is missing: a network of a loaded embedder is built on first use.
        pending = self.__dict__.get("_pending_weights")
        if pending and name in pending:
            self._rebuild_networks()
            return self.__dict__[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _rebuild_networks(self):
        with _REBUILD_LOCK:
            pending = self.__dict__.get("_pending_weights")
            if not pending:
                return  # another thread was first
            self._build_models(seed=0)  # architecture only; the weights follow
            for name, values in pending.items():
                try:
                    self.__dict__[name].set_weights(values)
                except (KeyError, ValueError, TypeError) as exc:
                    for built in pending:
                        self.__dict__.pop(built, None)  # stay as loaded: no half-set networks
                    raise ValueError(
                        f"The stored weights of {type(self).__name__}.{name} do not fit its network ({exc}). The "
                        "file it was loaded from is damaged or was changed after it was written; save the "
                        "embedder again from a good copy, or refit it."
                    ) from exc
            del self._pending_weights

    def __getstate__(self):
        # Networks travel as their weight arrays and are rebuilt on load:
        # this works on every backend and stores each weight once. The
        # inference graph travels beside them, as bytes in a uint8 array.
        if self.__dict__.get("_graph_from_older_file") and self.inference != "keras":
            self._upgrade_older_file()
        state = dict(super().__getstate__())  # a copy: the estimator keeps its models
        state.pop("_graph_from_older_file", None)
        weights = dict(state.pop("_pending_weights", None) or {})
        for name in self._keras_models:
            if name in state:
                weights[name] = [np.asarray(w) for w in state.pop(name).get_weights()]
        state["_keras_weights"] = weights
        return state

    def _upgrade_older_file(self):
        """Saving again an embedder from an older file: export its graph, if this process can."""
        if _inference.export_unavailable_reason() is not None:
            return
        try:
            self._onnx_graph = self._export_inference_graph()
        except _inference.ExportError as exc:
            warnings.warn(f"Saved without an inference graph: {exc}.", stacklevel=4)
        self.__dict__.pop("_graph_from_older_file", None)

    def __setstate__(self, state):
        state = dict(state)
        weights = state.pop("_keras_weights", {})
        older_file = bool(weights) and "_onnx_graph" not in state
        for name, default in _PARAMETERS_ADDED_LATER.items():
            state.setdefault(name, default)  # an estimator saved before they existed
        super().__setstate__(state)
        if weights:
            self._pending_weights = weights  # the networks are built when first used
        if older_file:
            self._onnx_graph = None
            self._graph_from_older_file = True
        elif self.__dict__.get("_onnx_graph") is not None:
            # Refused at load, before any work: a graph is data, and only plain inference graphs are run.
            _inference.check_graph(
                self._onnx_graph,
                input_shape=self._graph_input_shape(),
                output_size=self._n_features_out,
                source=f"The inference graph stored with this {type(self).__name__}",
            )


def positive_int_tuple(value, name, *, allow_empty=False):
    """Validate a tuple of positive ints such as ``hidden_units`` or ``filters``."""
    values = tuple(value)
    if (not values and not allow_empty) or not all(isinstance(v, numbers.Integral) and v > 0 for v in values):
        what = "a tuple" if allow_empty else "a non-empty tuple"
        raise ValueError(f"{name} must be {what} of positive integers, got {value!r}.")
    return tuple(int(v) for v in values)
