"""ImagePreprocessor: files, PIL images or arrays to float32 rows."""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike
from PIL import Image
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from . import _image_io
from ._dask import is_dask_array, transform_blocks
from ._image_shape import check_image_shape, image_shape_of_rows, rows_to_images
from ._sklearn_compat import StrOptions, _fit_context, output_container, validate_data

if TYPE_CHECKING:
    from ._typing import Images

__all__ = ["ImagePreprocessor"]

_CHANNEL_NAMES = {1: ("gray",), 3: ("r", "g", "b")}
# Kept as given by validate_data, so that _image_io's scaling rule sees the real type
# (an int64 0-255 row is scaled like uint8; float32 comes first: anything else is cast to it).
_PIXEL_DTYPES = [np.float32, np.float64, np.float16, np.uint8, np.uint16, np.bool_, np.int8, np.int16, np.int32]
_PIXEL_DTYPES += [np.int64, np.uint32, np.uint64]


def _check_size(size):
    if size is None:
        return None
    try:
        height, width = size
    except (TypeError, ValueError):
        height = width = None
    if not all(isinstance(d, numbers.Integral) and d > 0 for d in (height, width)):
        raise ValueError(f"size must be None or a pair (height, width) of positive integers, got {size!r}.")
    return (int(height), int(width))


def _check_pixel_count(height, width, channels):
    """Refuse an output image larger than Pillow lets a file be (its decompression-bomb limit)."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and height * width > limit:
        gib = height * width * channels * 4 / 2**30
        raise ValueError(
            f"Images of {height}x{width} would have {height * width:,} pixels: {gib:,.1f} GiB of float32 "
            f"per image ({channels} channel{'s' if channels > 1 else ''}), above Pillow's limit of "
            f"{limit:,} pixels (PIL.Image.MAX_IMAGE_PIXELS). Choose a smaller size; retrieval rarely "
            "needs more than 512x512."
        )


def _batch_pixels(images, *, scale):
    """``check_pixels`` (or ``scale_to_unit``) of a whole batch, with the error about the batch."""
    try:
        return _image_io.scale_to_unit(images) if scale else _image_io.check_pixels(images)
    except ValueError as exc:
        raise ValueError(f"Cannot use these images: {exc}.") from None


def _is_image_item(item):
    if _image_io.is_path(item) or isinstance(item, Image.Image):
        return True
    return isinstance(item, np.ndarray) and item.ndim in (2, 3)


class ImagePreprocessor(TransformerMixin, BaseEstimator):
    """Decode, crop, resize and scale images into float32 rows.

    The first step of a retrieval pipeline: it turns whatever holds the
    images into the 2-D float32 array that scikit-learn steps expect, one row
    of ``H * W * C`` values in [0, 1] per image, in (height, width, channel)
    order.

    Parameters
    ----------
    size : tuple (height, width) or None, default=None
        Resize every image to this size. ``None`` keeps the size, which then
        must be the same for every image.
    color_mode : {"keep", "grayscale", "rgb"}, default="keep"
        Output channels. ``"keep"`` gives 1 channel when every fitted image is
        grayscale and 3 (RGB) otherwise; alpha is always dropped.
    crop : {None, "center"}, default=None
        ``"center"`` crops the largest centred square before resizing, so that
        the aspect ratio is kept.
    flatten : bool, default=True
        ``True`` returns ``(n, H * W * C)`` rows; ``False`` returns
        ``(n, H, W, C)`` images.
    image_shape : tuple or None, default=None
        ``(height, width[, channels])`` of 2-D input rows. When ``None``, rows
        are taken as square images with 1 or 3 channels if their length fits,
        and otherwise as images one pixel high.
    n_jobs : int or None, default=None
        Threads used to decode files and resize images; ``-1`` means all
        cores. ``None`` means 1 unless in a ``joblib.parallel_config``
        context.

    Attributes
    ----------
    image_shape_ : tuple (H, W, C)
        Shape of each image that ``transform`` returns.
    n_features_in_ : int
        Number of features of 2-D input seen during fit (only set for 2-D
        input).
    feature_names_in_ : ndarray of str
        Column names of a DataFrame seen during fit.

    See Also
    --------
    sklearn_imgretrieval.datasets.load_image_folder : Paths and labels of a
        folder of images, one subfolder per class.

    Notes
    -----
    Accepted inputs: a sequence of file paths (JPEG, PNG 8/16 bit, BMP, GIF,
    WebP, TIFF; EXIF orientation is applied), a sequence of PIL images, one
    array of shape ``(n, h, w)`` or ``(n, h, w, c)``, a list of arrays of
    different sizes (with ``size`` set), or a 2-D array of flattened images.
    An unreadable file raises a ``ValueError`` naming every failing file:
    the output always has one row per input image.

    Pixels are scaled by a rule of their type; their values only decide
    whether they are accepted:

    - uint8 is divided by 255 and uint16 by 65535; bool becomes 0 or 1;
    - every other integer type (int64, as ``np.array`` makes from Python
      ints, int8, int16, int32, uint32, uint64) must hold 8-bit values,
      0 to 255, and is divided by 255; other values raise a ``ValueError``
      (cast 16-bit data to uint16 first);
    - floats are passed through unchanged, as float32; NaN, infinity and
      values beyond float32's range raise a ``ValueError``, and values
      outside [0, 1] by more than 0.25 (0-255 pixels stored as floats, or
      [-1, 1]) give a ``UserWarning`` with the fix: a warning, not an
      error, since rows of other features are valid input too;
    - in files, 8-bit modes are divided by 255, 16-bit modes by 65535, and
      32-bit integer images (Pillow mode ``I``) by 65535 when their values
      fit 16 bits (otherwise they are refused); float images (mode ``F``)
      are passed through.

    Large files cost memory in proportion to the output size: JPEGs are
    decoded at a reduced scale when ``size`` is much smaller, and any image
    much larger than ``size`` is shrunk by an integer factor on its 8-bit
    pixels before it becomes float. A ``size`` with more pixels than
    ``PIL.Image.MAX_IMAGE_PIXELS`` is refused at ``fit``, with the memory
    each image would need.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_imgretrieval import ImagePreprocessor
    >>> images = np.random.default_rng(0).integers(0, 256, size=(4, 32, 48, 3), dtype=np.uint8)
    >>> pre = ImagePreprocessor(size=(16, 16), color_mode="grayscale", crop="center")
    >>> rows = pre.fit_transform(images)
    >>> rows.shape, rows.dtype, pre.image_shape_
    ((4, 256), dtype('float32'), (16, 16, 1))
    """

    _parameter_constraints = {
        "size": [None, "array-like"],
        "color_mode": [StrOptions({"keep", "grayscale", "rgb"})],
        "crop": [None, StrOptions({"center"})],
        "flatten": ["boolean"],
        "image_shape": [None, "array-like"],
        "n_jobs": [None, numbers.Integral],
    }

    def __init__(
        self,
        size: Sequence[int] | None = None,
        color_mode: Literal["keep", "grayscale", "rgb"] = "keep",
        crop: Literal["center"] | None = None,
        flatten: bool = True,
        image_shape: Sequence[int] | None = None,
        n_jobs: int | None = None,
    ) -> None:
        self.size = size
        self.color_mode = color_mode
        self.crop = crop
        self.flatten = flatten
        self.image_shape = image_shape
        self.n_jobs = n_jobs

    # ------------------------------------------------------------------ input
    def _read_input(self, X, *, reset):
        return read_image_input(self, X, reset=reset, image_shape=self.image_shape)

    # -------------------------------------------------------------- sklearn
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Images, y: object = None) -> ImagePreprocessor:
        """Learn the output image shape from the images in ``X``.

        Parameters
        ----------
        X : sequence of paths, sequence of PIL images, or array-like
            The images; see the class docstring for accepted layouts.
        y : None
            Ignored.

        Returns
        -------
        self : ImagePreprocessor
            The fitted preprocessor.
        """
        size = _check_size(self.size)
        if self.image_shape is not None:
            check_image_shape(self.image_shape)
        if hasattr(self, "n_features_in_"):
            del self.n_features_in_
        kind, data = self._read_input(X, reset=True)
        if kind == "array":
            _batch_pixels(data, scale=False)
            headers = [data.shape[1:3] + (1 if data.shape[3] in (1, 2) else 3,)]
        else:
            headers, failures = _image_io.map_threads(_image_io.read_header, data, self.n_jobs)
            _image_io.raise_for_failures(data, failures, "read")
        if size is None:
            first = headers[0][:2]
            for item, header in zip(data if kind == "items" else [data], headers):
                if header[:2] != first:
                    raise ValueError(
                        "Images have different sizes: the first is "
                        f"{first[0]}x{first[1]} but {_image_io.describe(item)} is "
                        f"{header[0]}x{header[1]} (height x width). Set "
                        "size=(height, width) to resize every image to one size."
                    )
        channels = {"grayscale": 1, "rgb": 3}.get(self.color_mode, max(header[2] for header in headers))
        height, width = _image_io.output_size(headers[0][0], headers[0][1], size, self.crop)
        if size is not None:
            _check_pixel_count(height, width, channels)
        self.image_shape_ = (height, width, channels)
        return self

    def transform(self, X: Images) -> np.ndarray:
        """Turn images into float32 rows (or images with ``flatten=False``).

        Parameters
        ----------
        X : sequence of paths, sequence of PIL images, or array-like
            The images; see the class docstring for accepted layouts. A
            dask array of numbers is transformed block by block, lazily
            (``flatten=True`` only).

        Returns
        -------
        X_out : ndarray of float32, shape (n, H * W * C) or (n, H, W, C)
            One row (or image) per input image, in the same order (a dask
            array for a dask array).
        """
        check_is_fitted(self)
        if not self.flatten and output_container(self) != "default":
            raise ValueError(
                f"flatten=False gives 4-D images, which a {output_container(self)} DataFrame cannot hold. Use "
                "flatten=True (one column per pixel) with set_output, or set_output(transform='default')."
            )
        if is_dask_array(X) and self.flatten:
            return transform_blocks(self.transform, X, int(np.prod(self.image_shape_)))
        size = _check_size(self.size)
        height, width, channels = self.image_shape_
        if size is not None:  # set_params after fit must not get past the limit fit checked
            _check_pixel_count(*size, channels)
        kind, data = self._read_input(X, reset=False)
        for array in [data] if kind == "array" else [item for item in data if isinstance(item, np.ndarray)]:
            advice = "pass them as uint8, which is scaled to [0, 1]"
            if _image_io.warn_unless_unit_range(array, who="ImagePreprocessor", uint8_advice=advice):
                break
        if kind == "array" and size is None and self.crop is None:
            if data.shape[1:3] != (height, width):
                raise ValueError(
                    f"The images are {data.shape[1]}x{data.shape[2]} but the "
                    f"preprocessor was fitted on {height}x{width} (height x "
                    "width). Set size=(height, width) to resize, or pass images "
                    "of the fitted size."
                )
            images = _image_io.convert_channels(_batch_pixels(data, scale=True), channels)
            # Never hand back a view of the caller's array.
            images = np.array(images, dtype=np.float32, copy=np.shares_memory(images, data))
        else:
            items = list(data) if kind == "array" else data
            images = _image_io.read_images(
                items, shape=self.image_shape_, size=size, crop=self.crop, n_jobs=self.n_jobs
            )
        if self.flatten:
            return images.reshape(images.shape[0], -1)
        return images

    def get_feature_names_out(self, input_features: ArrayLike | None = None) -> np.ndarray:
        """Names of the output pixels, ``pixel_<row>_<col>_<channel>``.

        Parameters
        ----------
        input_features : None
            Ignored: output features are pixels of the resized images.

        Returns
        -------
        feature_names_out : ndarray of str
            One name per output column, in row-major (row, col, channel) order.
        """
        check_is_fitted(self, "image_shape_")
        height, width, channels = self.image_shape_
        names = _CHANNEL_NAMES[channels]
        return np.asarray(
            [f"pixel_{r}_{c}_{ch}" for r in range(height) for c in range(width) for ch in names],
            dtype=object,
        )

    @property
    def _fitted_from_any_sample(self):
        # Fitting learns only the output shape: size (or the common size) and
        # channels. Any sample gives the same, except that color_mode="keep"
        # takes the channels of the images fitted.
        return self.color_mode != "keep"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        tags.input_tags.allow_nan = False
        return tags


def _is_sequence_of_objects(X):
    """A 1-D array or pandas Series of paths or images (not of numbers)."""
    dtype_kind = getattr(getattr(X, "dtype", None), "kind", "")
    return getattr(X, "ndim", None) == 1 and dtype_kind in "OUS"


def read_image_input(estimator, X, *, reset, image_shape=None):
    """Sort ``X`` into ``("array", (n, h, w, c) batch)`` or ``("items", list)``.

    What every estimator that takes images accepts: a sequence of paths, PIL
    images or (h, w[, c]) arrays, one 3-D or 4-D array, or 2-D rows. 2-D
    numbers go through ``validate_data`` on ``estimator`` (so feature counts
    and names are checked as for any scikit-learn transformer) and are
    unflattened with ``image_shape``.
    """
    if isinstance(X, (str, os.PathLike, Image.Image)):
        raise TypeError(
            f"Expected a sequence of images, got a single {type(X).__name__}. Wrap it in a list: transform([image])."
        )
    # Any sequence that is not an array (a list, a tuple, an index's column of paths) holds items.
    if (isinstance(X, Sequence) and not isinstance(X, (bytes, bytearray))) or _is_sequence_of_objects(X):
        items = list(X)
        if not items:
            raise ValueError("No images given: X is empty. Pass at least one image.")
        if any(isinstance(item, (bytes, np.bytes_)) for item in items):
            raise TypeError(
                "X holds bytes; file paths must be str or pathlib.Path. Decode them first, for "
                "example [os.fsdecode(p) for p in X]."
            )
        is_image = [_is_image_item(item) for item in items]
        if all(is_image):
            is_path = [_image_io.is_path(item) for item in items]
            if any(is_path) and not all(is_path):
                raise TypeError("X mixes file paths with in-memory images; pass one kind.")
            return "items", items
        if any(is_image):
            bad = items[is_image.index(False)]
            raise TypeError(
                "Every element of X must be a file path, a PIL image or an "
                f"(h, w[, c]) array; found {type(bad).__name__} {bad!r:.60}."
            )
        # Otherwise nested numbers, handled as an array below.
    if not sp.issparse(X):
        ndim = getattr(X, "ndim", None)
        arr = None if ndim == 2 else np.asarray(X)
        if arr is not None and arr.ndim != 2:
            return "array", check_image_array(arr)
    rows = validate_data(estimator, X, reset=reset, dtype=_PIXEL_DTYPES, ensure_min_samples=1)
    shape = image_shape_of_rows(rows.shape[1], image_shape)
    _check_batch_pixel_count(*shape[:2])
    return "array", rows_to_images(rows, shape)


def _check_batch_pixel_count(height, width):
    try:
        _image_io.check_pixel_count(height, width)
    except ValueError as exc:
        raise ValueError(f"Cannot use these images: {exc}.") from None


def check_image_array(arr):
    """A 3-D or 4-D array of images as ``(n, h, w, c)``, or a ValueError saying what is wrong."""
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"Image arrays must hold numbers; got dtype {arr.dtype}.")
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4:
        raise ValueError(
            f"Expected images as a 2-D array of flattened rows, a 3-D array "
            f"(n_images, height, width) or a 4-D array (n_images, height, "
            f"width, channels); got an array with {arr.ndim} dimension(s) of "
            f"shape {arr.shape}. Reshape your data to one of those layouts"
            + (" (one flattened image: X.reshape(1, -1))." if arr.ndim == 1 else ".")
        )
    if arr.shape[0] == 0 or 0 in arr.shape[1:]:
        raise ValueError(f"No images given: the array has shape {arr.shape}.")
    if arr.shape[3] not in (1, 2, 3, 4):
        raise ValueError(
            f"Images must have 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA) "
            f"channels; got {arr.shape[3]} in an array of shape {arr.shape}."
        )
    _check_batch_pixel_count(arr.shape[1], arr.shape[2])
    return arr
