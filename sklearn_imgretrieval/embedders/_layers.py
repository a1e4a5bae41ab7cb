"""The Keras layers this package defines, and the batches it trains on.

Defining a Keras subclass needs Keras, so this module is imported only
when a network is built or trained; the estimators' modules import it
inside their functions, and a fitted embedder that runs on ONNX Runtime
never does. The random views of contrastive training live in
``_augmentation`` for the same reason.
"""

import math

import numpy as np

from ._keras import import_keras

keras = import_keras()
ops = keras.ops

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


class ShuffledBatches(keras.utils.PyDataset):
    """Mini-batches of ``(x, y)`` in a new seeded order every epoch.

    Keras's own ``shuffle=True`` draws from the backend's global seed; this
    keeps the order a function of ``random_state`` alone.
    """

    def __init__(self, x, y, batch_size, seed):
        super().__init__()
        self._x = x
        self._y = y
        self._batch_size = batch_size
        self._rng = np.random.default_rng(seed)
        self._order = self._rng.permutation(len(x))

    def __len__(self):
        return math.ceil(len(self._x) / self._batch_size)

    def __getitem__(self, index):
        rows = self._order[index * self._batch_size : (index + 1) * self._batch_size]
        rows = np.sort(rows)  # contiguous-ish reads; the batch's order does not matter
        x = self._x[rows]
        if self._y is None:
            return (x,)
        return x, (x if self._y is self._x else self._y[rows])

    def on_epoch_end(self):
        self._order = self._rng.permutation(len(self._x))


@keras.saving.register_keras_serializable(package="sklearn_imgretrieval")
class ImageNetPixels(keras.layers.Layer):
    """[0, 1] images with 1 or 3 channels to the pixels a backbone expects.

    Modes: ``"0-255"`` (networks with their own preprocessing layers),
    ``"symmetric"`` ([-1, 1]), ``"torch"`` (ImageNet mean and standard
    deviation) and ``"caffe"`` (BGR, 0-255 minus the ImageNet mean).
    """

    def __init__(self, mode, **kwargs):
        super().__init__(**kwargs)
        self.mode = mode

    def call(self, images):
        if images.shape[-1] == 1:
            images = ops.repeat(images, 3, axis=-1)
        if self.mode == "0-255":
            return images * 255.0
        if self.mode == "symmetric":
            return images * 2.0 - 1.0
        if self.mode == "torch":
            return (images - np.array(_IMAGENET_MEAN, "float32")) / np.array(_IMAGENET_STD, "float32")
        return ops.flip(images, axis=-1) * 255.0 - np.array(_CAFFE_BGR_MEAN, "float32")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (3,)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="sklearn_imgretrieval")
class GeneralizedMeanPooling2D(keras.layers.Layer):
    """Generalised-mean (GeM) pooling: ``mean(x ** p) ** (1 / p)`` per channel.

    p = 1 is average pooling and large p approaches max pooling; p = 3 is
    the usual choice for retrieval (Radenovic et al., 2018).
    """

    def __init__(self, p=3.0, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.p = p
        self.epsilon = epsilon

    def call(self, features):
        clipped = ops.maximum(features, self.epsilon)  # fractional powers need x > 0
        return ops.power(ops.mean(ops.power(clipped, self.p), axis=(1, 2)), 1.0 / self.p)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "p": self.p, "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="sklearn_imgretrieval")
class GaussianSampling(keras.layers.Layer):
    """Draw ``z = mean + exp(log_var / 2) * eps`` and add ``beta * KL`` to the losses.

    The KL divergence of the posterior from the standard normal prior is
    added with ``add_loss``, which Keras sums into the training loss on every
    backend. ``eps`` comes from the layer's own seeded generator.
    """

    def __init__(self, beta, seed, **kwargs):
        super().__init__(**kwargs)
        self.beta = beta
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        mean, log_var = inputs
        kl = -0.5 * ops.sum(1.0 + log_var - ops.square(mean) - ops.exp(log_var), axis=-1)
        self.add_loss(self.beta * ops.mean(kl))
        eps = keras.random.normal(ops.shape(mean), seed=self.seed_generator)
        return mean + ops.exp(0.5 * log_var) * eps

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "seed": self.seed}


def nt_xent(projections, temperature):
    """The NT-Xent loss of SimCLR on ``2n`` projections: rows ``i`` and ``i + n`` are two views of one image.

    Each view's positive is the other view of its image, its negatives are
    the other ``2n - 2`` views; cosine similarities divided by
    ``temperature`` are the logits of a softmax cross-entropy.
    """
    z = projections / ops.sqrt(ops.maximum(ops.sum(ops.square(projections), axis=1, keepdims=True), 1e-12))
    n_views = ops.shape(z)[0]
    logits = ops.matmul(z, ops.transpose(z)) / temperature
    logits = logits - 1e9 * ops.eye(n_views, dtype=logits.dtype)  # a view is not its own positive
    positive = ops.sum(z * ops.roll(z, n_views // 2, axis=0), axis=1) / temperature
    return ops.mean(ops.logsumexp(logits, axis=1) - positive)


@keras.saving.register_keras_serializable(package="sklearn_imgretrieval")
class NTXentLoss(keras.layers.Layer):
    """Adds :func:`nt_xent` of its input to the model's losses; passes the input on."""

    def __init__(self, temperature, **kwargs):
        super().__init__(**kwargs)
        self.temperature = temperature

    def call(self, projections):
        self.add_loss(nt_xent(projections, self.temperature))
        return projections

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}
