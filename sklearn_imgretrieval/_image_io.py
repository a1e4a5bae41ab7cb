"""Decoding files, PIL images and arrays into float32 image batches.

Everything here works on one image at a time and is called from a thread
pool: Pillow releases the GIL while it decodes and resizes, so threads scale
on the cores without copying pixels between processes.

Images come out as float32 ``(H, W, C)`` arrays with ``C`` either 1
(grayscale) or 3 (RGB); alpha is dropped, as Pillow's ``convert`` does.
Integer pixels are scaled to [0, 1] by the rule of :func:`scale_to_unit`,
finite floats are passed through, and anything else is refused.

Memory follows the output size, not the file's pixel count: JPEG files are
decoded at 1/2, 1/4 or 1/8 scale when the target is that small (``draft``),
and any image much larger than its target is first shrunk by an integer
factor (``Image.reduce``) on its stored pixels, before it is rotated,
converted or turned into floats.
"""

import functools
import math
import os
import struct
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

from ._parallel import local_threads

#: File name extensions taken as images when walking a folder.
IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
)  # fmt: skip

# Pillow modes that hold one intensity per pixel (alpha, if any, is dropped).
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
# Modes with more than 8 bits per sample: read as numbers, not converted by Pillow
# (Pillow's I -> L conversion clips instead of scaling). Mode I is how Pillow
# opens 16-bit files in some formats and versions: its values must fit 16 bits.
WIDE_MODES = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": 1}
# Modes whose pixels Image.reduce averages correctly (not palette indices, not 1-bit).
_REDUCIBLE_MODES = frozenset({"L", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "I", "F"})
# EXIF orientation -> the transposition that displays the image upright.
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# EXIF orientations that swap width and height.
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION = 0x0112
# JPEG markers and segment headers read_jpeg_gray looks for.
_JPEG_START = b"\xff\xd8"
_START_OF_SCAN, _APP1, _APP2 = 0xDA, 0xE1, 0xE2
_MARKERS_WITHOUT_LENGTH = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-RST7
_EXIF_HEADER, _XMP_HEADER, _MPF_HEADER = b"Exif\x00\x00", b"http://ns.adobe.com/xap/1.0/", b"MPF\x00"
# Shrink by Image.reduce down to no less than this many times the target, so the
# final resampling still has several source pixels per output pixel.
_REDUCING_GAP = 2
# Failing files listed in one error message; the rest are counted.
_MAX_LISTED_FAILURES = 20
_MAX_LISTED_SKIPPED = 10  # files named in a warning about skipped files
# ITU-R 601-2 luma, the weights Pillow uses for RGB -> L.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_RESAMPLE = Image.Resampling.BILINEAR


def is_path(item):
    return isinstance(item, (str, os.PathLike))


def describe(item):
    """Short name of an input item for error messages."""
    if is_path(item):
        return os.fspath(item)
    if isinstance(item, Image.Image):
        return f"PIL image {item.mode} {item.width}x{item.height}"
    return f"array of shape {np.shape(item)}"


def natural_channels(mode):
    """1 for grayscale Pillow modes, 3 for everything in colour."""
    return 1 if mode in _GRAY_MODES else 3


def upright(img):
    """``img`` turned upright by its EXIF orientation; the image itself, not a copy, if it is already."""
    orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    return img.transpose(_ORIENTATION_TRANSPOSE[orientation]) if orientation in _ORIENTATION_TRANSPOSE else img


def _oriented_size(img):
    """(height, width) of ``img`` once its EXIF orientation is applied."""
    width, height = img.size
    orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    if orientation in _TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    return height, width


def check_pixel_count(height, width):
    """Refuse images of more pixels than Pillow lets a file have, before any copy or conversion.

    Pillow warns about a file of more than ``PIL.Image.MAX_IMAGE_PIXELS``
    pixels (and refuses twice that, as a decompression bomb); arrays get
    the same limit, so that a (n, 100000, 100000) array, which NumPy can
    hold as a broadcast view of one value, is refused instead of becoming
    37 GiB of float32 per image.
    """
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and height * width > limit:
        raise ValueError(
            f"{height}x{width} pixels ({height * width:,}) are more than PIL.Image.MAX_IMAGE_PIXELS "
            f"({limit:,}), the limit Pillow sets for image files, and would take "
            f"{height * width * 4 / 2**30:,.1f} GiB per channel as float32; shrink the images first "
            "(or raise PIL.Image.MAX_IMAGE_PIXELS if you mean it)"
        )


def check_array_image(shape):
    """Refuse an (h, w[, c]) array that is empty, too large or has a channel count no image has."""
    channels = 1 if len(shape) == 2 else shape[2]
    if 0 in shape[:2]:
        raise ValueError("is empty")
    if channels not in (1, 2, 3, 4):
        raise ValueError(f"has {channels} channels; images have 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA)")
    check_pixel_count(shape[0], shape[1])


def read_header(item):
    """(height, width, channels) of an item, decoding as little as possible."""
    if is_path(item):
        with Image.open(item) as img:
            return _oriented_size(img) + (natural_channels(img.mode),)
    if isinstance(item, Image.Image):
        return _oriented_size(item) + (natural_channels(item.mode),)
    shape = np.shape(item)
    check_array_image(shape)
    if len(shape) == 2:
        return shape + (1,)
    return shape[:2] + (1 if shape[2] in (1, 2) else 3,)


#: EXIF tags: camera make, model and the file's date (IFD0), the Exif IFD's pointer, and in that IFD
#: the dates the photo was taken and digitized.
_EXIF_MAKE, _EXIF_MODEL, _EXIF_DATETIME, _EXIF_IFD = 0x010F, 0x0110, 0x0132, 0x8769
_EXIF_TAKEN, _EXIF_DIGITIZED = 0x9003, 0x9004


def _exif_text(value):
    """An EXIF ASCII value as clean text (None when absent or blank)."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", "").strip()
    return value or None


#: The luminance quantization table of the JPEG standard (Annex K), which encoders scale by quality.
_JPEG_LUMINANCE_SUM = sum(
    (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
     14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
     49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)
)  # fmt: skip


def _jpeg_quality(img):
    """The quality (1-100) a JPEG was saved at, from its luminance table as libjpeg scales it; None if not a JPEG."""
    tables = getattr(img, "quantization", None)
    if not tables or 0 not in tables:
        return None
    scale = 100 * sum(tables[0]) / _JPEG_LUMINANCE_SUM  # libjpeg: 5000 / q below 50, 200 - 2q above
    quality = 5000 / scale if scale > 100 else (200 - scale) / 2
    return int(round(min(100.0, max(1.0, quality))))


def exif_camera_and_taken(img):
    """The camera and the date taken that an open image's EXIF records, each None when absent.

    The camera is the make and model (``"Google Pixel 7"``); the date, as
    EXIF writes it (``"YYYY:MM:DD HH:MM:SS"``), is when the photo was taken,
    else digitized, else the file's own date. The one reading of both: an
    index's ``taken`` and ``camera`` columns and dedupe's ``--keep original``
    agree about every file.
    """
    exif = img.getexif()
    details = exif.get_ifd(_EXIF_IFD)
    camera = " ".join(filter(None, (_exif_text(exif.get(_EXIF_MAKE)), _exif_text(exif.get(_EXIF_MODEL)))))
    dates = (details.get(_EXIF_TAKEN), details.get(_EXIF_DIGITIZED), exif.get(_EXIF_DATETIME))
    taken = next(filter(None, map(_exif_text, dates)), None)
    return camera or None, taken


def read_facts(path):
    """What a file's header says about the image in it, without decoding pixels.

    Returns a dict: ``height``, ``width`` (upright), ``format`` (Pillow's
    name, such as ``"JPEG"``), ``camera`` (EXIF make and model, or None),
    ``taken`` (EXIF date and time taken, ``"YYYY:MM:DD HH:MM:SS"``, or None)
    and ``quality`` (a JPEG's estimated quality, 1-100, else None).
    """
    with Image.open(path) as img:
        height, width = _oriented_size(img)
        camera, taken = exif_camera_and_taken(img)
        return {
            "height": height,
            "width": width,
            "format": img.format,
            "camera": camera or None,
            "taken": taken,
            "quality": _jpeg_quality(img),
        }


def output_size(height, width, size, crop):
    """(H, W) an image of ``height x width`` becomes after crop and resize."""
    if size is not None:
        return tuple(size)
    if crop == "center":
        side = min(height, width)
        return (side, side)
    return (height, width)


def _crop_box(width, height, crop):
    if crop != "center":
        return (0, 0, width, height)
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return (left, top, left + side, top + side)


def _crop_and_resize(img, box, target):
    """Crop to ``box`` (left, top, right, bottom), then resize to ``target`` (H, W).

    Cropping first keeps pixels outside the box out of the resampling filter.
    """
    if box != (0, 0, img.width, img.height):
        img = img.crop(box)
    if (img.height, img.width) != tuple(target):
        img = img.resize(target[::-1], _RESAMPLE)
    return img


def _draft_request(width, height, orientation, size, crop):
    """(W, H) to ask ``draft`` for, so that the decoded image still covers ``size`` (H, W).

    ``draft`` picks the largest reduction that keeps the image at least as
    large as the requested size, so the request is the smallest decoded size
    whose crop still covers the target.
    """
    target_h, target_w = size
    if orientation in _TRANSPOSING_ORIENTATIONS:
        target_h, target_w = target_w, target_h
    if crop == "center":
        side = min(width, height)
        longest = max(target_h, target_w)
        return (math.ceil(width * longest / side), math.ceil(height * longest / side))
    return (target_w, target_h)


def request_draft(img, channels, size, crop):
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the target is that small."""
    orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    img.draft("L" if channels == 1 else None, _draft_request(*img.size, orientation, size, crop))


def _draft_scale(width, height, request):
    """The reduction Pillow's ``draft`` picks: the largest of 8, 4, 2 and 1 that
    keeps a ``width`` x ``height`` JPEG at least as large as ``request`` (W, H)."""
    fits = min(width // request[0], height // request[1])
    return next((scale for scale in (8, 4, 2) if fits >= scale), 1)


def _plain_jpeg_exif(data):
    """The EXIF segment of a JPEG file's bytes (empty without one).

    ``None`` when the header holds what only Pillow reads as it does: an
    XMP packet (Pillow also looks for the orientation there), a
    multi-picture index (Pillow opens MPO files as another format), or a
    header that does not end in image data.
    """
    exif = b""
    offset = 2
    while offset + 4 <= len(data) and data[offset] == 0xFF:
        marker = data[offset + 1]
        if marker == 0xFF:  # a fill byte before the marker
            offset += 1
            continue
        if marker == _START_OF_SCAN:
            return exif
        if marker in _MARKERS_WITHOUT_LENGTH:
            return None
        start = offset + 4
        end = offset + 2 + int.from_bytes(data[offset + 2 : start], "big")
        segment = data[start:end]
        if marker == _APP1 and segment.startswith(_EXIF_HEADER):
            if exif:  # EXIF split over segments: Pillow versions join them differently
                return None
            exif = segment
        elif (marker == _APP1 and segment.startswith(_XMP_HEADER)) or (
            marker == _APP2 and segment.startswith(_MPF_HEADER)
        ):
            return None
        offset = end
    return None


@functools.cache
def _pillow_decodes_with_libjpeg_turbo():
    from PIL import features

    return bool(features.check_feature("libjpeg_turbo"))


def read_jpeg_gray(path, size):
    """The JPEG file at ``path`` as upright uint8 grayscale (h, w), decoded for ``size`` (H, W).

    The pixels are those of Pillow's ``draft`` at 1/2, 1/4 or 1/8 scale
    (tests compare them), read through libjpeg-turbo's in-memory decoder
    (simplejpeg), which spares Pillow's marker parsing in Python and its
    suspending reads: 5,520 instead of 3,600 256x256 photos per CPU second
    (``benchmarks/bench_dedup.py --part throughput``, decoding only).
    Returns ``None`` for every file this reader leaves to Pillow: not a
    JPEG, not plain 8-bit YCbCr or grayscale, larger than Pillow's
    decompression-bomb limit, or not decodable (Pillow then says why).
    """
    if not _pillow_decodes_with_libjpeg_turbo():
        return None  # another libjpeg scales differently: the pixels would not be Pillow's
    with open(path, "rb", buffering=0) as file:
        if file.read(len(_JPEG_START)) != _JPEG_START:
            return None  # Pillow reads it, without a second read of a large file here
        file.seek(0)
        data = file.readall()
    exif = _plain_jpeg_exif(data)
    if exif is None:
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        if colorspace not in ("YCbCr", "Gray") or width * height > (Image.MAX_IMAGE_PIXELS or math.inf):
            return None
        orientation = 1
        if exif:
            tags = Image.Exif()
            tags.load(exif)
            orientation = tags.get(_EXIF_ORIENTATION, 1)
        scale = _draft_scale(width, height, _draft_request(width, height, orientation, size, crop=None))
        pixels = simplejpeg.decode_jpeg(
            data, "GRAY", min_height=-(-height // scale), min_width=-(-width // scale), min_factor=scale
        )
    except (ValueError, SyntaxError, struct.error):  # Pillow reads the file and reports the problem
        return None
    pixels = pixels[:, :, 0]
    if orientation in _ORIENTATION_TRANSPOSE:  # the same turn as upright(), for the few turned files
        pixels = np.asarray(Image.fromarray(pixels).transpose(_ORIENTATION_TRANSPOSE[orientation]))
    return pixels


def _shrink(img, orientation, size, crop):
    """Crop and shrink ``img`` by an integer factor when it is much larger than the target.

    Works on the stored pixels (before the EXIF rotation, whose crop box is
    the same centred square), so no full-size copy is ever made; returns
    the image and whether it was cropped.
    """
    if size is None or img.mode not in _REDUCIBLE_MODES:
        return img, False
    target_h, target_w = size
    if orientation in _TRANSPOSING_ORIENTATIONS:
        target_h, target_w = target_w, target_h
    box = _crop_box(img.width, img.height, crop)
    factor = int(min((box[2] - box[0]) / target_w, (box[3] - box[1]) / target_h) / _REDUCING_GAP)
    if factor < 2:
        return img, False
    return img.reduce(factor, box=box), True


def wide_to_unit(img):
    """A 16-bit, 32-bit integer or float image as float32 (h, w) in its unit scale."""
    values = np.asarray(img)
    if img.mode == "I" and (values.min() < 0 or values.max() > 65535):
        raise ValueError(
            f"32-bit integer pixels range from {values.min()} to {values.max()}; only 16-bit values "
            "(0-65535) have a known scale: convert the file to 16-bit or to floats in [0, 1]"
        )
    return check_finite(values.astype(np.float32) / np.float32(WIDE_MODES[img.mode]))


def _pil_to_array(img, channels, size, crop):
    """Convert, crop and resize one PIL image to float32 (H, W, C) in [0, 1]."""
    orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    img, cropped = _shrink(img, orientation, size, crop)
    if orientation in _ORIENTATION_TRANSPOSE:
        img = img.transpose(_ORIENTATION_TRANSPOSE[orientation])
    box = (0, 0, img.width, img.height) if cropped else _crop_box(img.width, img.height, crop)
    target = output_size(box[3] - box[1], box[2] - box[0], size, crop=None)
    if img.mode in WIDE_MODES:
        gray = _crop_and_resize(Image.fromarray(wide_to_unit(img), mode="F"), box, target)
        arr = np.asarray(gray, dtype=np.float32)[:, :, None]
        return np.repeat(arr, channels, axis=2) if channels == 3 else arr
    img = _crop_and_resize(img.convert("L" if channels == 1 else "RGB"), box, target)
    arr = np.asarray(img, dtype=np.float32) * np.float32(1 / 255)
    return arr[:, :, None] if channels == 1 else arr


def _open_and_decode(path, channels, size, crop):
    with Image.open(path) as img:
        if size is not None and img.format == "JPEG":
            request_draft(img, channels, size, crop)
        return _pil_to_array(img, channels, size, crop)


def check_finite(images):
    """``images`` if every value is finite, else a ValueError saying what to do."""
    if not np.isfinite(images).all():
        raise ValueError(
            "pixels include NaN or infinity; replace or drop those images (for example with "
            "np.nan_to_num) before preprocessing"
        )
    return images


def check_pixels(arr):
    """The divisor that maps the pixels of ``arr`` to [0, 1]; a ValueError if none does.

    uint8 is divided by 255 and uint16 by 65535; bool is 0 or 1. Any other
    integer type (int64 from Python ints, int8, int32, uint32, ...) must
    hold 8-bit values, 0 to 255, which are divided by 255: no scale can be
    known for anything else. Floats are passed through (divisor 1) and must
    be finite, also as float32.
    """
    if arr.dtype == np.uint8:
        return 255
    if arr.dtype == np.uint16:
        return 65535
    if arr.dtype == np.bool_:
        return 1
    if arr.dtype.kind in "iu":
        low, high = arr.min(), arr.max()
        if low < 0 or high > 255:
            raise ValueError(
                f"{arr.dtype} pixels range from {low} to {high}, but integer pixels other than uint16 "
                "must be 8-bit values (0-255); cast 16-bit images to uint16, or scale the values to "
                "floats in [0, 1]"
            )
        return 255
    if arr.dtype.kind != "f":
        raise ValueError(f"pixels are {arr.dtype}; image arrays must hold integers or floats")
    check_finite(arr)
    if arr.dtype.itemsize > 4 and np.abs(arr).max() > np.finfo(np.float32).max:
        raise ValueError(
            f"pixels reach {np.abs(arr).max():.3g}, beyond float32's range (about 3.4e38); scale the images to [0, 1]"
        )
    return 1


#: How far float pixels may stray outside [0, 1] before ``warn_unless_unit_range`` warns:
#: sharp resampling (Lanczos, bicubic) overshoots [0, 1] images by a few hundredths
#: at edges, while 0-255 or [-1, 1] pixels go far past it.
UNIT_RANGE_MARGIN = 0.25


def warn_unless_unit_range(values, *, who, uint8_advice):
    """Warn when float pixels lie outside [0, 1], the scale every step here takes floats in.

    A float image in 0-255 (or [-1, 1]) is embedded without complaint but
    into nonsense: a warning, not an error, because rows that are not pixels
    (standardised features, PCA output) are valid input for some steps and
    for scikit-learn's estimator checks. ``who`` names the estimator and
    ``uint8_advice`` says how 8-bit pixels get scaled for it. Returns
    whether it warned.
    """
    if values.dtype.kind != "f" or values.size == 0:
        return False
    low, high = float(values.min()), float(values.max())
    if not (np.isfinite(low) and np.isfinite(high)) or max(-low, high) > np.finfo(np.float32).max:
        return False  # refused as not finite or beyond float32, with its own message
    if -UNIT_RANGE_MARGIN <= low and high <= 1 + UNIT_RANGE_MARGIN:
        return False
    if low >= 0:
        fix = f"If they are 0-255 pixel values, divide them by 255, or {uint8_advice}."
    elif high <= 1 + UNIT_RANGE_MARGIN and low >= -1 - UNIT_RANGE_MARGIN:
        fix = "If they are pixels scaled to [-1, 1], map them back with (X + 1) / 2."
    else:
        fix = "Scale the pixels to [0, 1]."
    warnings.warn(
        f"{who} was given float pixels from {low:.4g} to {high:.4g}, but takes float pixels as they are, "
        f"in [0, 1]. {fix} Rows that are features rather than pixels can ignore this warning.",
        UserWarning,
        stacklevel=3,
    )
    return True


def scale_to_unit(arr):
    """Pixels of any number type as float32, integers scaled to [0, 1] (see ``check_pixels``)."""
    arr = np.asarray(arr)
    divisor = check_pixels(arr)
    if divisor == 1:
        return arr.astype(np.float32, copy=False)
    return arr.astype(np.float32) * np.float32(1 / divisor)


def convert_channels(batch, channels):
    """(..., C) float32 with C in 1-4 to ``channels`` (1 or 3); alpha dropped."""
    have = batch.shape[-1]
    if have in (2, 4):  # gray + alpha, RGB + alpha
        batch = batch[..., : have - 1]
        have -= 1
    if have == channels:
        return batch
    if channels == 1:
        return (batch @ _LUMA)[..., None]
    return np.repeat(batch, 3, axis=-1)


def _resize_float(image, size, crop):
    """Crop and resize one float32 (h, w, C) image channel by channel."""
    height, width = image.shape[:2]
    box = _crop_box(width, height, crop)
    target = output_size(height, width, size, crop)
    planes = [
        np.asarray(_crop_and_resize(Image.fromarray(np.ascontiguousarray(image[:, :, c]), mode="F"), box, target))
        for c in range(image.shape[2])
    ]
    return np.stack(planes, axis=-1)


def _array_to_image(arr, channels, size, crop):
    image = np.asarray(arr)
    check_array_image(image.shape)
    if image.ndim == 2:
        image = image[:, :, None]
    image = convert_channels(scale_to_unit(image), channels)
    height, width = image.shape[:2]
    if output_size(height, width, size, crop) == (height, width) and crop != "center":
        return image
    return _resize_float(image, size, crop)


def load_one(item, channels, size, crop):
    """Decode one path, PIL image or (h, w[, c]) array to float32 (H, W, C)."""
    if is_path(item):
        return _open_and_decode(item, channels, size, crop)
    if isinstance(item, Image.Image):
        return _pil_to_array(item, channels, size, crop)
    return _array_to_image(item, channels, size, crop)


def read_error_reason(exc):
    """Why an image could not be read, in a few words (the same for every command)."""
    if isinstance(exc, UnidentifiedImageError):
        return "not an image Pillow can read"
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, ValueError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def map_threads(function, items, n_jobs):
    """``[function(item) for item in items]`` on a thread pool.

    Returns ``(results, failures)`` where failures lists ``(index, reason)``
    for every item whose call raised, so that one bad file does not hide the
    others.
    """
    n_threads = min(local_threads(n_jobs), len(items)) if items else 1

    def guarded(index):
        try:
            return function(items[index]), None
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            return None, read_error_reason(exc)

    if n_threads <= 1:
        outcomes = [guarded(i) for i in range(len(items))]
    else:
        pool = ThreadPoolExecutor(max_workers=n_threads)
        try:
            outcomes = list(pool.map(guarded, range(len(items))))
        finally:
            # On Ctrl-C, drop the queued items instead of decoding them all first.
            pool.shutdown(wait=True, cancel_futures=True)
    results = [value for value, _ in outcomes]
    failures = [(i, reason) for i, (_, reason) in enumerate(outcomes) if reason is not None]
    return results, failures


def raise_for_failures(items, failures, action):
    """One ValueError naming each failing item and why (the first 20, then a count)."""
    if not failures:
        return
    lines = [f"  {describe(items[i])}: {reason}" for i, reason in failures[:_MAX_LISTED_FAILURES]]
    if len(failures) > _MAX_LISTED_FAILURES:
        lines.append(f"  ... and {len(failures) - _MAX_LISTED_FAILURES} more")
    listed = "\n".join(lines)
    if any(is_path(items[i]) for i, _ in failures):
        advice = (
            "Fix or remove these files; datasets.load_image_folder(..., verify=True) "
            "lists a folder's readable images and warns about the rest."
        )
    else:
        advice = "Fix or drop these images."
    raise ValueError(f"Could not {action} {len(failures)} of {len(items)} images:\n{listed}\n{advice}")


def skipped_files_message(skipped):
    """The one line that says which files were skipped as unreadable, and why.

    ``skipped`` lists ``(path, reason)``; every command and function that
    skips files says it in these words (the first 10, then a count).
    """
    listed = "; ".join(f"{path} ({reason})" for path, reason in skipped[:_MAX_LISTED_SKIPPED])
    more = f"; and {len(skipped) - _MAX_LISTED_SKIPPED} more" if len(skipped) > _MAX_LISTED_SKIPPED else ""
    return f"Skipped {len(skipped)} unreadable image file(s): {listed}{more}"


def read_images(items, *, shape, size, crop, n_jobs=None):
    """Decode a sequence of items into one float32 ``(n, H, W, C)`` batch.

    ``shape`` is the ``(H, W, C)`` every image must come out as; with
    ``size=None`` an image of another size is reported as a failure.
    """
    out = np.empty((len(items),) + tuple(shape), dtype=np.float32)
    channels = shape[2]

    def decode_into(index):
        image = load_one(items[index], channels, size, crop)
        if image.shape[:2] != out.shape[1:3]:
            raise ValueError(
                f"is {image.shape[0]}x{image.shape[1]} but the images fitted were "
                f"{shape[0]}x{shape[1]} (height x width); set size=(height, width) "
                "to resize every image"
            )
        out[index] = image

    _, failures = map_threads(decode_into, range(len(items)), n_jobs)
    raise_for_failures(items, failures, "decode")
    return out
