"""Decoding files, PIL images and arrays into float32 image batches.

Everything here works on one image at a time and is called from a thread
pool: Pillow releases the GIL while it decodes and resizes, so threads scale
on the cores without copying pixels between processes.

Images come out as float32 ``(H, W, C)`` arrays in [0, 1] (uint8 and 16-bit
sources are scaled, float arrays are passed through) with ``C`` either 1
(grayscale) or 3 (RGB). Alpha is dropped, as Pillow's ``convert`` does.
"""

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from joblib import effective_n_jobs
from PIL import Image, UnidentifiedImageError

#: File name extensions taken as images when walking a folder.
IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
)  # fmt: skip

# Pillow modes that hold one intensity per pixel (alpha, if any, is dropped).
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
# Modes with more than 8 bits per sample: read as numbers, not converted by Pillow
# (Pillow's I -> L conversion clips instead of scaling).
WIDE_MODES = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0, "I": 65535.0, "F": 1.0}
# EXIF orientations that swap width and height.
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the transposition that turns the image upright.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
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
    """``img`` turned upright by its EXIF orientation.

    An image already upright is returned as it is, not copied (as
    ``ImageOps.exif_transpose`` would): callers only derive new images from it.
    """
    transposition = _UPRIGHT.get(img.getexif().get(_EXIF_ORIENTATION, 1))
    return img if transposition is None else img.transpose(transposition)


def _oriented_size(img):
    """(height, width) of ``img`` once its EXIF orientation is applied."""
    width, height = img.size
    orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    if orientation in _TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    return height, width


def read_header(item):
    """(height, width, channels) of an item, decoding as little as possible."""
    if is_path(item):
        with Image.open(item) as img:
            return _oriented_size(img) + (natural_channels(img.mode),)
    if isinstance(item, Image.Image):
        return _oriented_size(item) + (natural_channels(item.mode),)
    arr = np.asarray(item)
    if arr.ndim == 2:
        return arr.shape + (1,)
    return arr.shape[:2] + (1 if arr.shape[2] in (1, 2) else 3,)


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


def request_draft(img, channels, size, crop):
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the target is that small.

    ``draft`` picks the largest reduction that keeps the image at least as
    large as the requested size, so the request is the smallest decoded size
    whose crop still covers the target.
    """
    target_h, target_w = size
    if img.getexif().get(_EXIF_ORIENTATION, 1) in _TRANSPOSING_ORIENTATIONS:
        target_h, target_w = target_w, target_h
    width, height = img.size
    if crop == "center":
        side = min(width, height)
        longest = max(target_h, target_w)
        request = (math.ceil(width * longest / side), math.ceil(height * longest / side))
    else:
        request = (target_w, target_h)
    img.draft("L" if channels == 1 else None, request)


def _pil_to_array(img, channels, size, crop):
    """Convert, crop and resize one PIL image to float32 (H, W, C) in [0, 1]."""
    img = upright(img)
    box = _crop_box(img.width, img.height, crop)
    target = output_size(img.height, img.width, size, crop)
    if img.mode in WIDE_MODES:
        scale = WIDE_MODES[img.mode]
        gray = Image.fromarray(np.asarray(img, dtype=np.float32) / np.float32(scale), mode="F")
        gray = _crop_and_resize(gray, box, target)
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


def scale_to_unit(arr):
    """uint8 and uint16 pixels to [0, 1]; any other number type as float32."""
    arr = np.asarray(arr)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) * np.float32(1 / 255)
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) * np.float32(1 / 65535)
    return arr.astype(np.float32, copy=False)


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


def _reason(exc):
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
    n_threads = min(effective_n_jobs(n_jobs), len(items)) if items else 1

    def guarded(index):
        try:
            return function(items[index]), None
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            return None, _reason(exc)

    if n_threads <= 1:
        outcomes = [guarded(i) for i in range(len(items))]
    else:
        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            outcomes = list(pool.map(guarded, range(len(items))))
    results = [value for value, _ in outcomes]
    failures = [(i, reason) for i, (_, reason) in enumerate(outcomes) if reason is not None]
    return results, failures


def raise_for_failures(items, failures, action):
    if not failures:
        return
    lines = "\n".join(f"  {describe(items[i])}: {reason}" for i, reason in failures)
    raise ValueError(
        f"Could not {action} {len(failures)} of {len(items)} images:\n{lines}\n"
        "Fix or remove these files; datasets.load_image_folder(..., verify=True) "
        "lists a folder's readable images and warns about the rest."
    )


def read_images(items, *, shape, size, crop, n_jobs=None):
    """Decode a sequence of items into one float32 ``(n, H, W, C)`` batch.

    ``shape`` is the ``(H, W, C)`` every image must come out as; with
    ``size=None`` an image of another size is reported as a failure.
    """
    out = np.empty((len(items),) + tuple(shape), dtype=np.float32)
    channels = shape[2]

    def decode_into(index):
        image = load_one(items[index], channels, size, crop)
        if image.shape != out.shape[1:]:
            raise ValueError(
                f"is {image.shape[0]}x{image.shape[1]} but the images fitted were "
                f"{shape[0]}x{shape[1]} (height x width); set size=(height, width) "
                "to resize every image"
            )
        out[index] = image

    _, failures = map_threads(decode_into, range(len(items)), n_jobs)
    raise_for_failures(items, failures, "decode")
    return out
