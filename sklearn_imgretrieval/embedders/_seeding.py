"""Every seed a Keras embedder uses, derived from its ``random_state``.

A fit draws one integer from ``random_state`` and derives every other seed
from it here: the weights of each network, the batch order, the noise of a
sampling layer. Nothing reads or sets a process-global seed (Python's
``random``, NumPy's global state, the backend's), so fits running in
threads next to each other stay independent and reproducible.
"""

import math

import numpy as np
from sklearn.utils import check_random_state

from ._keras import import_keras

MAX_SEED = 2**31 - 1


def seed_from(random_state):
    """An int seed drawn from ``random_state`` (None, int or RandomState)."""
    return int(check_random_state(random_state).randint(MAX_SEED))


def spawn_seeds(seed, n):
    """``n`` independent int seeds derived from ``seed`` (NumPy's SeedSequence)."""
    children = np.random.SeedSequence(seed).spawn(n)
    return [int(child.generate_state(1)[0] % MAX_SEED) for child in children]


class SeededInitializers:
    """A fresh seeded Glorot-uniform initialiser per call, one per layer.

    Keras layers built without a seed draw one from Python's global
    ``random``; giving every layer its own seeded initialiser keeps a build a
    function of ``seed`` alone.
    """

    def __init__(self, seed):
        self._rng = np.random.default_rng(seed)

    def __call__(self):
        keras = import_keras()
        return keras.initializers.GlorotUniform(seed=int(self._rng.integers(MAX_SEED)))


def reseed_weights(model, seed):
    """Redraw every kernel of ``model`` (weights with 2 or more axes) from ``seed``.

    For networks whose layers cannot be given seeded initialisers
    (``keras.applications``): Glorot-uniform draws from a NumPy generator
    replace the kernels, so random weights follow ``random_state`` without
    touching global state. Vectors (biases, batch-norm statistics) keep the
    constants they were built with.
    """
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape = tuple(variable.shape)
        if len(shape) < 2:
            continue
        receptive_field = math.prod(shape[:-2])
        fan_in, fan_out = shape[-2] * receptive_field, shape[-1] * receptive_field
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        variable.assign(rng.uniform(-limit, limit, size=shape).astype(variable.dtype))
