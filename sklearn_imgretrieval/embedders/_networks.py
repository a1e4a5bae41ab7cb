"""Pure builders of the encoder and decoder stacks the embedders train.

Every network takes and gives 2-D rows (the layout between pipeline steps);
convolutional stacks reshape to ``image_shape`` inside the model, so that
``predict`` needs no reshaping outside it. Every weight initialiser is
seeded from ``seed``, so that a build is a function of its arguments alone.
"""

import math

from ._keras import import_keras
from ._seeding import SeededInitializers

keras = import_keras()  # this module is imported only when a network is built
layers = keras.layers


def _dense(units, init, activation=None, name=None):
    return layers.Dense(units, activation=activation, kernel_initializer=init(), name=name)


def conv_grid(image_shape, n_strided):
    """(h, w) of the feature map after ``n_strided`` stride-2 "same" convolutions."""
    height, width = image_shape[:2]
    return math.ceil(height / 2**n_strided), math.ceil(width / 2**n_strided)


def build_encoder(
    n_features,
    latent_dim,
    *,
    architecture,
    hidden_units=(),
    filters=(),
    image_shape=None,
    n_heads=1,
    seed=0,
    name="encoder",
):
    """Rows -> ``n_heads`` linear outputs of size ``latent_dim``.

    ``architecture="conv"`` first reshapes the row to ``image_shape`` and
    applies ``Conv2D(f, 3, strides=2, relu)`` for each of ``filters`` (each
    halves the image); both architectures then apply ``Dense(units, relu)``
    for each of ``hidden_units`` and end in linear heads. The VAE asks for
    two heads (mean and log-variance).
    """
    init = SeededInitializers(seed)
    inputs = keras.Input((n_features,), name="rows")
    x = inputs
    if architecture == "conv":
        x = layers.Reshape(tuple(image_shape))(x)
        for f in filters:
            x = layers.Conv2D(f, 3, strides=2, padding="same", activation="relu", kernel_initializer=init())(x)
        x = layers.Flatten()(x)
    for units in hidden_units:
        x = _dense(units, init, "relu")(x)
    heads = [_dense(latent_dim, init, name=f"latent_{i}") for i in range(n_heads)]
    outputs = [head(x) for head in heads]
    return keras.Model(inputs, outputs[0] if n_heads == 1 else outputs, name=name)


def build_decoder(
    latent_dim,
    n_features,
    *,
    architecture,
    hidden_units=(),
    filters=(),
    image_shape=None,
    output_activation="sigmoid",
    seed=1,
    name="decoder",
):
    """Embeddings -> rows, mirroring :func:`build_encoder`.

    ``Dense(units, relu)`` for each of ``reversed(hidden_units)``; the dense
    decoder ends in a dense layer of ``n_features``. The conv decoder expands
    to the encoder's last feature map and mirrors each strided convolution
    with a ``Conv2DTranspose(3, strides=2)`` back to the channel count the
    convolution started from, so that the last one gives the image's
    channels (through ``output_activation``); a padding row or column that
    odd image sizes add is cropped. Mirroring keeps the decoder as cheap as
    the encoder: no wide layer runs at full resolution.
    """
    init = SeededInitializers(seed)
    inputs = keras.Input((latent_dim,), name="embeddings")
    x = inputs
    for units in reversed(hidden_units):
        x = _dense(units, init, "relu")(x)
    if architecture == "conv":
        height, width, channels = image_shape
        grid_h, grid_w = conv_grid(image_shape, len(filters))
        x = _dense(grid_h * grid_w * filters[-1], init, "relu")(x)
        x = layers.Reshape((grid_h, grid_w, filters[-1]))(x)
        targets = (channels,) + tuple(filters[:-1])  # the input channels of each encoder conv
        for i, f in enumerate(reversed(targets)):
            last = i == len(targets) - 1
            x = layers.Conv2DTranspose(
                f,
                3,
                strides=2,
                padding="same",
                activation=output_activation if last else "relu",
                kernel_initializer=init(),
            )(x)
        extra_h, extra_w = grid_h * 2 ** len(filters) - height, grid_w * 2 ** len(filters) - width
        if extra_h or extra_w:
            x = layers.Cropping2D(((0, extra_h), (0, extra_w)))(x)
        outputs = layers.Flatten()(x)
    else:
        outputs = _dense(n_features, init, output_activation)(x)
    return keras.Model(inputs, outputs, name=name)


def build_conv_trunk(image_shape, latent_dim, *, filters, hidden_units=(), pooling="flatten", seed=0, name="trunk"):
    """Images -> features, for self-supervised training.

    Each of ``filters`` is a stride-2 3x3 convolution with batch
    normalisation and ReLU (batch normalisation over the two views of a
    contrastive batch is what SimCLR relies on); the last feature map is
    flattened (``"flatten"``, keeping where things are) or averaged
    (``"avg"``), then ``Dense(units)`` + batch normalisation + ReLU for each of
    ``hidden_units`` and a linear ``Dense(latent_dim)``; with
    ``latent_dim=None`` the features end at the last hidden layer (or the
    flattened or averaged feature map).
    """
    init = SeededInitializers(seed)
    inputs = keras.Input(tuple(image_shape), name="views")
    x = inputs
    for f in filters:
        x = layers.Conv2D(f, 3, strides=2, padding="same", use_bias=False, kernel_initializer=init())(x)
        x = layers.BatchNormalization(momentum=0.9)(x)
        x = layers.ReLU()(x)
    x = layers.Flatten()(x) if pooling == "flatten" else layers.GlobalAveragePooling2D()(x)
    for units in hidden_units:
        x = _dense(units, init)(x)
        x = layers.BatchNormalization(momentum=0.9)(x)
        x = layers.ReLU()(x)
    if latent_dim is not None:
        x = _dense(latent_dim, init, name="latent")(x)
    return keras.Model(inputs, x, name=name)


def build_mlp(n_inputs, units, *, seed=0, name="mlp"):
    """Rows -> ``Dense(u, relu)`` for each of ``units`` but the last, then a linear ``Dense(units[-1])``."""
    init = SeededInitializers(seed)
    inputs = keras.Input((n_inputs,), name="features")
    x = inputs
    for u in units[:-1]:
        x = _dense(u, init, "relu")(x)
    return keras.Model(inputs, _dense(units[-1], init)(x), name=name)
