"""Image geometry of flattened rows.

Between pipeline steps images travel as 2-D float32 rows of length H*W*C in
row-major (height, width, channel) order. These helpers decide which
(H, W, C) a row holds, the same way for every estimator, and never guess
silently: a square image with 1 or 3 channels is the only inference made
(s*s and 3*s*s are never both true), anything else needs ``image_shape``.
One of its sides may be -1, worked out from the row length as
``numpy.reshape`` does: ``(1, -1)`` takes rows of any length as images one
pixel high.
"""

import math
import numbers

import numpy as np


def _square_side(n):
    side = math.isqrt(n)
    return side if side * side == n else None


def check_image_shape(image_shape, *, name="image_shape"):
    """Validate a user's ``(H, W)`` or ``(H, W, C)`` and return ``(H, W, C)``.

    One entry may be -1 (the rows' length decides it, see ``infer_image_shape``).
    """
    try:
        dims = tuple(image_shape)
    except TypeError:
        dims = None

    def is_side(d):
        return isinstance(d, numbers.Integral) and not isinstance(d, bool) and (d > 0 or d == -1)

    if dims is None or len(dims) not in (2, 3) or not all(map(is_side, dims)) or dims.count(-1) > 1:
        raise ValueError(
            f"{name} must be a tuple (height, width) or (height, width, channels) "
            f"of positive integers, one of which may be -1 (worked out from the row length, "
            f"as numpy.reshape does), got {image_shape!r}."
        )
    if len(dims) == 2:
        dims = dims + (1,)
    return tuple(int(d) for d in dims)


def infer_image_shape(n_features, image_shape=None, *, required=True):
    """Return the ``(H, W, C)`` that rows of ``n_features`` values hold.

    Parameters
    ----------
    n_features : int
        Length of one row.
    image_shape : tuple or None
        The user's setting; wins when given and must match ``n_features``.
    required : bool
        With ``required=True`` a row that is not a square 1- or 3-channel
        image raises; otherwise ``None`` is returned.
    """
    if image_shape is not None:
        shape = check_image_shape(image_shape)
        known = abs(math.prod(shape))
        if -1 in shape and n_features % known == 0:
            shape = tuple(n_features // known if d == -1 else d for d in shape)
        if -1 in shape or math.prod(shape) != n_features:
            holds = f"a multiple of {known}" if -1 in shape else known
            raise ValueError(
                f"image_shape={tuple(image_shape)!r} holds {holds} values "
                f"per image but the input has {n_features} features per row. Set "
                "image_shape to the (height, width, channels) of the images the "
                "rows were flattened from."
            )
        return shape
    side = _square_side(n_features)
    if side is not None:
        return (side, side, 1)
    if n_features % 3 == 0:
        side = _square_side(n_features // 3)
        if side is not None:
            return (side, side, 3)
    if required:
        raise ValueError(
            f"Cannot tell the image shape of rows with {n_features} features: they "
            "are neither a square grayscale image (s*s) nor a square RGB image "
            "(3*s*s). Set image_shape=(height, width, channels) (one side may be -1, "
            "as in numpy.reshape: (1, -1) for rows that are strips one pixel high), "
            "or pass a 4-D array of shape (n_images, height, width, channels)."
        )
    return None


def image_shape_of_rows(n_features, image_shape=None):
    """Like ``infer_image_shape``, but any row length works: a row that is not
    a square image is taken as a strip one pixel high, ``(1, n_features, 1)``.

    For estimators that accept any scikit-learn input as images.
    """
    shape = infer_image_shape(n_features, image_shape, required=False)
    return (1, n_features, 1) if shape is None else shape


def rows_to_images(X, image_shape):
    """View 2-D rows as a 4-D ``(n, H, W, C)`` batch (no copy)."""
    return np.reshape(X, (X.shape[0],) + tuple(image_shape))
