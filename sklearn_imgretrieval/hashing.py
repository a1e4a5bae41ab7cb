"""ImageHasher: perceptual hashes (pHash, dHash, aHash, wHash) as packed uint8 rows.

A perceptual hash shrinks an image to a few grey levels and keeps one bit
per comparison that survives re-encoding, resizing and mild edits, so that
near-duplicate images differ in few bits. The definitions are those of the
``imagehash`` package, the de-facto standard: grayscale, resize with a
Lanczos filter, then

- ``"phash"``: DCT of a ``4h x 4h`` image, its ``h x h`` lowest frequencies
  above their median;
- ``"dhash"``: a ``h x (h + 1)`` image, each pixel brighter than its left
  neighbour;
- ``"ahash"``: a ``h x h`` image, each pixel brighter than the mean;
- ``"whash"``: the Haar wavelet's ``h x h`` approximation (block means) of
  the image at its largest power-of-two scale, less the image's mean,
  above their median.

Images are decoded and shrunk one by one in threads (Pillow releases the
GIL); the transforms and thresholds run on whole batches with NumPy and
``scipy.fft``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Literal

import numpy as np
import scipy.fft
from PIL import Image
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin

from . import _image_io
from ._image_shape import check_image_shape
from ._sklearn_compat import Interval, StrOptions, _fit_context
from .preprocessing import read_image_input

if TYPE_CHECKING:
    from ._typing import Images

__all__ = ["ImageHasher"]

HASH_METHODS = ("phash", "dhash", "ahash", "whash")
# imagehash resizes with Pillow's ANTIALIAS, which is Lanczos.
_RESAMPLE = Image.Resampling.LANCZOS
_DRAFT_PIXELS_PER_BIT = 4
# The largest hash_size. pHash shrinks every image to (4 * hash_size)^2 float64 pixels: 512 KiB
# each at 64, whose codes have 4096 bits (512 bytes a row, 64 times the default's). At 128 the
# codes of a million images alone would take 2 GB, for detail a perceptual hash is meant to
# ignore; at 4096, 2 GiB per image before its DCT.
MAX_HASH_SIZE = 64
_CHUNK = 4096  # images shrunk before their bits are computed: memory follows the chunk,
_CHUNK_BYTES = 32 * 2**20  # at most this much float64 of them: 4096 of the default's 32x32 pHash images
# Pillow's fixed point for 8-bit resampling: 32 bits less 8 for the pixel and 2 for the sign.
_PRECISION_BITS = 22


def check_hash_size(hash_size):
    """A clear error for a ``hash_size`` that is not a power of two, or is over ``MAX_HASH_SIZE``."""
    if hash_size > MAX_HASH_SIZE:
        mib = 8 * (4 * hash_size) ** 2 / 2**20
        raise ValueError(
            f"hash_size={hash_size} is more than {MAX_HASH_SIZE}, the largest hash size: pHash would shrink "
            f"every image to {4 * hash_size}x{4 * hash_size} float64 pixels ({mib:,.0f} MiB per image) for "
            f"{hash_size * hash_size:,}-bit codes. 8 (64 bits) is the usual size; 16 or 32 keep finer detail."
        )
    if hash_size & (hash_size - 1):
        below = 1 << (hash_size.bit_length() - 1)
        raise ValueError(
            f"hash_size={hash_size} is not a power of two. Use {below} ({below * below} bits) or "
            f"{2 * below} ({4 * below * below} bits); 8 (64 bits) is the usual size."
        )


def _shrunk_size(method, hash_size, height, width):
    """(height, width) of the grayscale image a hash is computed from."""
    if method == "phash":
        return (4 * hash_size, 4 * hash_size)
    if method == "dhash":
        return (hash_size, hash_size + 1)
    if method == "ahash":
        return (hash_size, hash_size)
    # whash: the largest power of two that fits in the image, at least hash_size
    return (max(1 << (min(height, width).bit_length() - 1), hash_size),) * 2


def _images_per_chunk(method, hash_size):
    """Images shrunk at a time: ``_CHUNK``, fewer when their pixels would pass ``_CHUNK_BYTES``."""
    # whash's image is its own size while it is shrunk, but hash_size x hash_size once stacked
    height, width = _shrunk_size(method, hash_size, hash_size, hash_size)
    return max(1, min(_CHUNK, _CHUNK_BYTES // (8 * height * width)))


def _gray_pil(img):
    """One-channel image, upright: 'L' as Pillow converts 8-bit images (what
    imagehash hashes), 'F' for images of more than 8 bits per sample, which
    Pillow's conversion to 'L' would clip."""
    img = _image_io.upright(img)
    if img.mode in _image_io.WIDE_MODES:
        return Image.fromarray(_image_io.wide_to_unit(img))
    if img.mode == "L":  # a grayscale file, or a JPEG drafted to grayscale: no copy
        img.load()  # before its file is closed
        return img
    return img.convert("L")


def _gray_array(image):
    """One (h, w[, c]) array as a one-channel PIL image.

    uint8 pixels go through Pillow as a PIL image of them would; other
    numbers become a float image of their luma, at whatever scale they are:
    every hash compares pixels (or coefficients) with each other, their
    mean or their median, so [0, 1] and 0-255 give the same bits up to
    floating-point rounding.
    """
    image = np.asarray(image)
    _image_io.check_array_image(image.shape)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.dtype == np.uint8:
        if image.shape[2] in (1, 2):  # gray (+ alpha)
            return Image.fromarray(np.ascontiguousarray(image[:, :, 0]))
        return Image.fromarray(np.ascontiguousarray(image)).convert("L")
    luma = _image_io.convert_channels(_image_io.scale_to_unit(image), 1)[:, :, 0]
    return Image.fromarray(np.ascontiguousarray(luma, dtype=np.float32))


@lru_cache(maxsize=1024)
def _lanczos_weights(in_size, out_size):
    """(out_size, in_size) weights of Pillow's LANCZOS resampling, in its fixed point
    (integers, held as float64 so that products go through BLAS; every sum of
    products stays far below 2**53, so the arithmetic is exact).

    Computed as Pillow computes them, operation for operation and with the
    same libm ``sin``: each output pixel reads the input pixels within 3 *
    scale of its centre, weighted by a Lanczos-3 kernel stretched by the
    scale, normalised to sum 1 and rounded to ``_PRECISION_BITS`` bits.
    """
    scale = in_size / out_size
    stretch = max(scale, 1.0)
    support = 3.0 * stretch
    inverse = 1.0 / stretch
    weights = np.zeros((out_size, in_size))
    for out in range(out_size):
        centre = (out + 0.5) * scale
        first, stop = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), in_size)
        kernel = [_lanczos((x - centre + 0.5) * inverse) for x in range(first, stop)]
        total = 0.0
        for value in kernel:  # in order, as Pillow adds them (sum() compensates from Python 3.12)
            total += value
        weights[out, first:stop] = [value / total for value in kernel] if total != 0.0 else kernel
    return np.trunc(weights * (1 << _PRECISION_BITS) + np.where(weights < 0, -0.5, 0.5))


def _lanczos(x):
    """Pillow's Lanczos-3 kernel."""
    if not -3.0 <= x < 3.0:
        return 0.0
    return _sinc(x) * _sinc(x / 3.0)


def _sinc(x):
    if x == 0.0:
        return 1.0
    x = x * math.pi
    return math.sin(x) / x


def _lanczos_resize(pixels, height, width):
    """uint8 (h, w) ``pixels`` resized to (height, width) as Pillow's LANCZOS resize does.

    Pillow resizes the rows first, then the columns, each pass rounded to 8
    bits; on 32x32 images from the JPEG reader doing the same with two small
    matrix products spares the 50 us that making a PIL image, resizing it
    and reading it back cost, a fifth of dHash's time per 256x256 photo.
    Images whose height shrinks more than twice as much as their width go
    through Pillow itself (uint8 then), which runs the column pass first
    there (Pillow 13 does; older versions always ran rows first).
    """
    rows, columns = pixels.shape
    if rows - height > 2 * (columns - width) and rows > height:
        return _resized(Image.fromarray(np.ascontiguousarray(pixels)), height, width)
    out = pixels.astype(np.float64)
    if columns != width:
        out = _to_8_bits(out @ _lanczos_weights(columns, width).T)
    if rows != height:
        out = _to_8_bits(_lanczos_weights(rows, height) @ out)
    return out


def _to_8_bits(sums):
    """Fixed-point sums to pixels as Pillow rounds them: nearest, within 0-255 (in place)."""
    sums += 1 << (_PRECISION_BITS - 1)
    sums *= 1.0 / (1 << _PRECISION_BITS)  # a power of two: exact
    np.floor(sums, out=sums)
    return np.minimum(np.maximum(sums, 0.0, out=sums), 255.0, out=sums)


def _resized(img, height, width):
    """The pixels of a PIL image at (height, width)."""
    return np.asarray(img if img.size == (width, height) else img.resize((width, height), _RESAMPLE))


def _shrink(item, method, hash_size, jpeg_draft):
    """Decode one image and shrink it to what its hash is computed from, float64."""
    if _image_io.is_path(item):
        # libjpeg decodes at 1/2, 1/4 or 1/8 scale, grayscale only, as long as 4
        # pixels remain per bit of the grid (pHash's own resolution). Keeping 8
        # changed about 1% of the bits rather than 1-3%, for 15-25% more time
        # on 256x256 photos.
        draft_size = (_DRAFT_PIXELS_PER_BIT * hash_size,) * 2
        gray = _image_io.read_jpeg_gray(item, draft_size) if jpeg_draft else None
        if gray is None:
            with Image.open(item) as img:
                if jpeg_draft and img.format == "JPEG":
                    _image_io.request_draft(img, 1, draft_size, None)
                gray = _gray_pil(img)
    elif isinstance(item, Image.Image):
        gray = _gray_pil(item)
    else:
        gray = _gray_array(item)
    if isinstance(gray, np.ndarray):  # uint8 from the JPEG reader: often at pHash's size already
        height, width = _shrunk_size(method, hash_size, *gray.shape)
        gray = _lanczos_resize(gray, height, width)
    else:
        height, width = _shrunk_size(method, hash_size, gray.height, gray.width)
        gray = _resized(gray, height, width)
    pixels = np.asarray(gray, dtype=np.float64)
    if method != "whash":
        return pixels
    # The Haar approximation at level log2(scale / hash_size) is, up to a
    # constant factor, the mean of each block; imagehash first removes the
    # coarsest approximation, the image's mean.
    block = height // hash_size
    return (pixels - pixels.mean()).reshape(hash_size, block, hash_size, block).mean(axis=(1, 3))


def _bits(shrunk, method, hash_size):
    """(n, hash_size, hash_size) booleans from a batch of shrunk images."""
    n = len(shrunk)
    if method == "phash":
        # Only the hash_size lowest frequencies are kept along each axis.
        coeffs = scipy.fft.dct(shrunk, axis=1)[:, :hash_size, :]
        coeffs = scipy.fft.dct(coeffs, axis=2)[:, :, :hash_size]
        return coeffs > np.median(coeffs.reshape(n, -1), axis=1)[:, None, None]
    if method == "dhash":
        return shrunk[:, :, 1:] > shrunk[:, :, :-1]
    if method == "ahash":
        return shrunk > shrunk.mean(axis=(1, 2), keepdims=True)
    return shrunk > np.median(shrunk.reshape(n, -1), axis=1)[:, None, None]


def pack_bits(bits):
    """Boolean (n, ...) to packed uint8 rows, first bit in the highest bit of the first byte."""
    return np.packbits(bits.reshape(len(bits), -1), axis=1)


class ImageHasher(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Perceptual hashes of images as packed binary codes.

    Each image becomes ``hash_size ** 2`` bits, packed 8 to a byte into a
    uint8 row, the layout that
    :class:`~sklearn_imgretrieval.NearestImageRetriever` indexes with
    ``metric="hamming"`` (distance = number of differing bits). The bits
    are those of the ``imagehash`` package for the same method and size,
    in the same order: a row's hexadecimal digits are ``str(imagehash.phash(image))``.

    Parameters
    ----------
    method : {"phash", "dhash", "ahash", "whash"}, default="phash"
        ``"phash"`` (DCT: the most robust to re-encoding and brightness),
        ``"dhash"`` (horizontal gradients), ``"ahash"`` (mean threshold,
        the fastest and weakest) or ``"whash"`` (Haar wavelet).
    hash_size : int, default=8
        Side of the bit grid: a power of two from 4 to 64; 8 gives 64 bits,
        8 bytes per image.
    jpeg_draft : bool, default=True
        Let libjpeg decode JPEG files at 1/2, 1/4 or 1/8 scale in
        grayscale, keeping at least ``4 * hash_size`` pixels a side (32
        for ``hash_size=8``): 2-4x faster on photos, and the same bits as
        a full decode on 97-99% of the bits (see Notes). ``False``
        decodes at full size, as ``imagehash`` does. Other formats, PIL
        images and arrays are never affected.
    image_shape : tuple or None, default=None
        ``(height, width[, channels])`` of 2-D input rows; when ``None``
        rows are square grayscale or RGB images if their length fits, and
        otherwise images one pixel high.
    n_jobs : int or None, default=None
        Threads decoding and shrinking images; ``-1`` means all cores.
        ``None`` means 1 unless in a ``joblib.parallel_config`` context.

    Attributes
    ----------
    n_features_in_ : int
        Number of features of 2-D input seen during fit (only set for 2-D
        input).
    feature_names_in_ : ndarray of str
        Column names of a DataFrame seen during fit.

    See Also
    --------
    sklearn_imgretrieval.duplicates.find_duplicates : Groups of near-duplicate images,
        from these hashes or from CNN embeddings.
    NearestImageRetriever : Search the codes with ``metric="hamming"``.

    Notes
    -----
    Input is what :class:`~sklearn_imgretrieval.ImagePreprocessor` takes:
    file paths, PIL images, arrays of shape ``(n, h, w[, c])``, lists of
    arrays of any sizes, or 2-D rows. Files and PIL images are turned
    upright by their EXIF orientation (``imagehash`` ignores it) and
    converted to grayscale by Pillow; uint8 arrays are hashed as the PIL
    image of their pixels would be; arrays of any other number type
    (float, uint16, int, bool) are hashed as they are, without rounding,
    at whatever scale: [0, 1] and 0-255 give the same bits up to rounding.
    This is also how the float rows of scikit-learn's estimator checks are
    read.

    The hasher learns nothing: ``fit`` only checks the parameters and the
    input, and ``transform`` works without it.

    Agreement with ``imagehash`` 4.3, measured on the 108 photos of 40 to
    256 pixels of ``tests/test_hashing.py``: the same hash on every photo
    for pHash, dHash and aHash from PIL images and arrays, and on 99% or
    more from JPEG files with ``jpeg_draft=False`` (a DCT coefficient
    within rounding of the median can flip); with JPEG draft decoding,
    97.0-98.4% of the bits (98.3-99.0% on photos of 256x256).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_imgretrieval import ImageHasher
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 256, size=(3, 64, 64), dtype=np.uint8)
    >>> images[1] = np.clip(images[0].astype(int) + 10, 0, 255)  # a brighter copy
    >>> codes = ImageHasher(method="phash", hash_size=8).fit_transform(images)
    >>> codes.shape, codes.dtype
    ((3, 8), dtype('uint8'))
    >>> # bits that differ: the brighter copy is close, the other image is not
    >>> [int(np.unpackbits(codes[0] ^ codes[i]).sum()) for i in (1, 2)]
    [0, 32]
    """

    _parameter_constraints = {
        "method": [StrOptions(set(HASH_METHODS))],
        "hash_size": [Interval(numbers.Integral, 4, None, closed="left")],
        "jpeg_draft": ["boolean"],
        "image_shape": [None, "array-like"],
        "n_jobs": [None, numbers.Integral],
    }

    def __init__(
        self,
        method: Literal["phash", "dhash", "ahash", "whash"] = "phash",
        hash_size: int = 8,
        *,
        jpeg_draft: bool = True,
        image_shape: Sequence[int] | None = None,
        n_jobs: int | None = None,
    ) -> None:
        self.method = method
        self.hash_size = hash_size
        self.jpeg_draft = jpeg_draft
        self.image_shape = image_shape
        self.n_jobs = n_jobs

    def _check_params(self):
        self._validate_params()
        check_hash_size(self.hash_size)
        if self.image_shape is not None:
            check_image_shape(self.image_shape)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Images, y: object = None) -> ImageHasher:
        """Check the parameters and the input; nothing is learnt.

        Parameters
        ----------
        X : sequence of paths, sequence of PIL images, or array-like
            The images; see Notes for accepted layouts.
        y : None
            Ignored.

        Returns
        -------
        self : ImageHasher
            The hasher.
        """
        self._check_params()
        if hasattr(self, "n_features_in_"):
            del self.n_features_in_
        read_image_input(self, X, reset=True, image_shape=self.image_shape)
        return self

    def transform(self, X: Images) -> np.ndarray:
        """Hash each image into a packed uint8 row.

        Parameters
        ----------
        X : sequence of paths, sequence of PIL images, or array-like
            The images; see Notes for accepted layouts.

        Returns
        -------
        codes : ndarray of uint8, shape (n_images, hash_size ** 2 // 8)
            One row of packed bits per image, in the order given.
        """
        return self._hash(X, mirrored=False)

    def _hash(self, X, *, mirrored):
        """Codes of ``X``; with ``mirrored=True`` also those of its mirror images.

        A mirror image's code is computed from the mirrored shrunk image, so
        each image is decoded once.
        """
        self._check_params()
        kind, data = read_image_input(self, X, reset=False, image_shape=self.image_shape)
        items = data if kind == "items" else list(data)
        shrink = partial(_shrink, method=self.method, hash_size=self.hash_size, jpeg_draft=self.jpeg_draft)
        codes = np.empty((len(items), self._n_features_out), dtype=np.uint8)
        mirror_codes = np.empty_like(codes) if mirrored else None
        failures = []
        per_chunk = _images_per_chunk(self.method, self.hash_size)
        for start in range(0, len(items), per_chunk):
            chunk = items[start : start + per_chunk]
            shrunk, failed = _image_io.map_threads(shrink, chunk, self.n_jobs)
            failures += [(start + i, reason) for i, reason in failed]
            if failed:
                continue  # reported below, with every other failure
            shrunk = np.stack(shrunk)
            codes[start : start + len(chunk)] = pack_bits(_bits(shrunk, self.method, self.hash_size))
            if mirrored:
                mirror = np.ascontiguousarray(shrunk[:, :, ::-1])
                mirror_codes[start : start + len(chunk)] = pack_bits(_bits(mirror, self.method, self.hash_size))
        _image_io.raise_for_failures(items, failures, "hash")
        return (codes, mirror_codes) if mirrored else codes

    @property
    def _n_features_out(self):
        return self.hash_size**2 // 8

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.transformer_tags.preserves_dtype = []  # always uint8 codes
        tags.input_tags.allow_nan = False
        return tags
