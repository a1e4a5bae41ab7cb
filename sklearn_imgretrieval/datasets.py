"""Image data sets: scikit-learn's digits, Fashion-MNIST, and folders of images."""

from __future__ import annotations

import gzip
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from . import _image_io

if TYPE_CHECKING:
    from PIL import Image

    from ._typing import RandomState, StrPath

__all__ = [
    "load_digits_images",
    "load_fashion_mnist",
    "load_image_folder",
    "load_sample_photos",
    "make_near_duplicates",
]

_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_DATA_ENV = "SKLEARN_IMGRETRIEVAL_DATA"


def load_digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled handwritten digits as 8x8 images.

    Returns
    -------
    images : ndarray of float32, shape (1797, 8, 8)
        Pixel intensities scaled from 0-16 to [0, 1].
    labels : ndarray of int, shape (1797,)
        The digit each image shows.

    Examples
    --------
    >>> from sklearn_imgretrieval.datasets import load_digits_images
    >>> images, labels = load_digits_images()
    >>> images.shape, images.dtype, float(images.max()), labels[:5]
    ((1797, 8, 8), dtype('float32'), 1.0, array([0, 1, 2, 3, 4]))
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target


#: scikit-image's bundled photos used as originals, and unrelated images used as distractors.
_SKIMAGE_PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "moon",
    "clock", "hubble_deep_field", "immunohistochemistry", "retina",
)  # fmt: skip
_SKIMAGE_DISTRACTORS = ("brick", "grass", "gravel", "text", "page", "horse", "colorwheel", "logo")

#: The edits of :func:`make_near_duplicates`, in order.
NEAR_DUPLICATE_EDITS = ("crop", "half_size", "jpeg_25", "rotate_5", "flip", "brighter")


def load_sample_photos(kind: Literal["photos", "distractors"] = "photos") -> tuple[list[Image.Image], list[str]]:
    """Photos that ship inside scikit-image and scikit-learn, as RGB PIL images (offline).

    Parameters
    ----------
    kind : {"photos", "distractors"}, default="photos"
        ``"photos"``: 13 photographs (scikit-image's astronaut, cat, coffee,
        rocket, ... and scikit-learn's two sample images). ``"distractors"``:
        8 unrelated images (textures, text, a logo, a colour wheel).

    Returns
    -------
    images : list of PIL.Image.Image
        The images, in RGB.
    names : list of str
        Their names.

    Examples
    --------
    >>> from sklearn_imgretrieval.datasets import load_sample_photos
    >>> images, names = load_sample_photos()
    >>> len(images), names[:3], images[0].mode
    (13, ['astronaut', 'chelsea', 'coffee'], 'RGB')
    """
    from PIL import Image

    try:
        from skimage import data
    except ImportError as exc:
        raise ImportError(
            "The sample photos come with scikit-image: pip install scikit-image "
            '(or pip install "sklearn-imgretrieval[demo]").'
        ) from exc
    if kind not in ("photos", "distractors"):
        raise ValueError(f'kind must be "photos" or "distractors", got {kind!r}.')
    names = list(_SKIMAGE_PHOTOS if kind == "photos" else _SKIMAGE_DISTRACTORS)
    images = []
    for name in names:
        pixels = np.asarray(getattr(data, name)())
        if pixels.dtype == bool:
            pixels = pixels.astype(np.uint8) * 255
        images.append(Image.fromarray(pixels).convert("RGB"))
    if kind == "photos":
        from sklearn.datasets import load_sample_images

        samples = load_sample_images()
        for filename, pixels in zip(samples.filenames, samples.images):
            images.append(Image.fromarray(pixels).convert("RGB"))
            names.append(Path(filename).stem)
    return images, names


def _edit(image, edit, rng):
    """One near-duplicate of a PIL image."""
    import io

    from PIL import Image, ImageEnhance, ImageOps

    if edit == "crop":  # 80-95% of the area, at a random place
        side = np.sqrt(rng.uniform(0.80, 0.95))
        width, height = int(image.width * side), int(image.height * side)
        left = int(rng.integers(0, image.width - width + 1))
        top = int(rng.integers(0, image.height - height + 1))
        return image.crop((left, top, left + width, top + height))
    if edit == "half_size":
        return image.resize((image.width // 2, image.height // 2), Image.Resampling.BILINEAR)
    if edit == "jpeg_25":
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=25)
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    if edit == "rotate_5":
        return image.rotate(5, resample=Image.Resampling.BILINEAR)
    if edit == "flip":
        return ImageOps.mirror(image)
    return ImageEnhance.Brightness(image).enhance(1.3)  # brighter: +30%


def make_near_duplicates(
    images: Sequence[Image.Image], edits: Sequence[str] = NEAR_DUPLICATE_EDITS, *, random_state: RandomState = 0
) -> tuple[list[Image.Image], np.ndarray, list[str]]:
    """Each image followed by its edited copies: a labelled near-duplicate set.

    The edits are those people make to photos they share: ``"crop"`` (80-95%
    of the area), ``"half_size"``, ``"jpeg_25"`` (JPEG at quality 25),
    ``"rotate_5"`` (5 degrees), ``"flip"`` (mirrored) and ``"brighter"``
    (+30% brightness).

    Parameters
    ----------
    images : sequence of PIL.Image.Image
        The originals (for example from :func:`load_sample_photos`).
    edits : sequence of str, default=NEAR_DUPLICATE_EDITS
        Which copies to make of each original.
    random_state : int, RandomState instance or None, default=0
        Seeds the crops.

    Returns
    -------
    images : list of PIL.Image.Image
        Each original followed by its copies: ``len(images) * (1 + len(edits))``.
    groups : ndarray of int
        The index of the original each image comes from.
    edit_names : list of str
        ``"original"`` or the edit that made the copy.

    Examples
    --------
    >>> from sklearn_imgretrieval.datasets import load_sample_photos, make_near_duplicates
    >>> photos, _ = load_sample_photos()
    >>> images, groups, edits = make_near_duplicates(photos[:2])
    >>> len(images), groups.tolist(), edits[:3]
    (14, [0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1], ['original', 'crop', 'half_size'])
    """
    from sklearn.utils import check_random_state

    unknown = sorted(set(edits) - set(NEAR_DUPLICATE_EDITS))
    if unknown:
        raise ValueError(f"Unknown edits {unknown}; choose from {list(NEAR_DUPLICATE_EDITS)}.")
    rng = np.random.default_rng(check_random_state(random_state).randint(2**31 - 1))
    out: list[Image.Image] = []
    groups: list[int] = []
    names: list[str] = []
    for group, image in enumerate(images):
        out.append(image)
        groups.append(group)
        names.append("original")
        for edit in edits:
            out.append(_edit(image, edit, rng))
            groups.append(group)
            names.append(edit)
    return out, np.asarray(groups), names


def _read_idx(path):
    """Read a gzipped IDX file (the MNIST format) into a uint8 array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    n_dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(n_dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * n_dims).reshape(shape)


def _fashion_candidates(data_home):
    if data_home is not None:
        yield Path(data_home)
    if os.environ.get(_DATA_ENV):
        yield Path(os.environ[_DATA_ENV])
    yield Path("/usr/share/datasets/fashion-mnist")
    keras_home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    yield keras_home / "datasets" / "fashion-mnist"


def load_fashion_mnist(
    subset: Literal["train", "test"] = "train", data_home: StrPath | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST: 28x28 grayscale photos of clothes in 10 classes.

    Looks for the four IDX files (``train-images-idx3-ubyte.gz`` and so on)
    in ``data_home``, then in the folder named by the environment variable
    ``SKLEARN_IMGRETRIEVAL_DATA``, then in ``/usr/share/datasets/fashion-mnist``
    (Debian's package ``dataset-fashion-mnist``), then in Keras's cache
    ``~/.keras/datasets/fashion-mnist``; otherwise Keras downloads them.

    Parameters
    ----------
    subset : {"train", "test"}, default="train"
        The 60,000 training or the 10,000 test images.
    data_home : str or path-like, default=None
        Folder searched first.

    Returns
    -------
    images : ndarray of uint8, shape (n, 28, 28)
        The images.
    labels : ndarray of uint8, shape (n,)
        Class of each image, 0-9.
    """
    if subset not in _FASHION_FILES:
        raise ValueError(f'subset must be "train" or "test", got {subset!r}.')
    image_file, label_file = _FASHION_FILES[subset]
    searched = []
    for folder in _fashion_candidates(data_home):
        searched.append(str(folder))
        if (folder / image_file).is_file() and (folder / label_file).is_file():
            return _read_idx(folder / image_file), _read_idx(folder / label_file)
    try:
        import keras

        (x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    except Exception as exc:  # offline, or Keras unable to fetch
        raise OSError(
            f"Fashion-MNIST not found. Looked for {image_file} in: {', '.join(searched)}; "
            f"and Keras could not download it ({type(exc).__name__}: {exc}). Install "
            "Debian's package dataset-fashion-mnist, or put the four IDX files in a "
            f"folder and pass data_home= or set {_DATA_ENV}."
        ) from exc
    return (x_train, y_train) if subset == "train" else (x_test, y_test)


def _is_readable_image(path):
    """None if Pillow decodes ``path``, else the reason it cannot."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.draft(None, (64, 64))  # JPEG: decode at 1/8 scale, enough to check
            img.load()
        return None
    except Exception as exc:  # any failure means the file is unusable
        return _image_io.read_error_reason(exc)


def _class_folder(folders, label_from):
    """The class name of a file under these folders (below root): the top one, or all of them."""
    if not folders:
        return ""
    return folders[0] if label_from == "top" else "/".join(folders)


def load_image_folder(
    path: StrPath,
    extensions: Sequence[str] = _image_io.IMAGE_EXTENSIONS,
    recursive: bool = True,
    verify: bool = False,
    n_jobs: int | None = None,
    label_from: Literal["top", "parent"] = "top",
) -> tuple[list[str], np.ndarray, list[str]]:
    """Paths and labels of a folder of images, one subfolder per class.

    ``root/cat/a.jpg`` gets the label of class ``"cat"``. Images directly in
    ``root`` belong to the class ``""`` (useful for unlabelled folders). In
    nested folders the class is the top subfolder by default
    (``root/cat/indoor/b.jpg`` is a ``"cat"``); ``label_from="parent"``
    makes it the folder that holds the file (``"cat/indoor"``).

    Parameters
    ----------
    path : str or path-like
        The root folder.
    extensions : tuple of str, default=IMAGE_EXTENSIONS
        File name endings taken as images, compared case-insensitively.
    recursive : bool, default=True
        Walk nested folders.
    verify : bool, default=False
        Open every file and drop those Pillow cannot read, with one warning
        that names them.
    n_jobs : int, default=None
        Threads used by ``verify``.
    label_from : {"top", "parent"}, default="top"
        Which folder names an image's class: the first level below root, or
        the folder that holds the image, as its path below root with ``/``
        between folder names.

    Returns
    -------
    paths : list of str
        Image paths in sorted order.
    labels : ndarray of int, shape (n_images,)
        Index into ``class_names`` of each image.
    class_names : list of str
        Sorted folder names, as ``label_from`` chose them.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> from sklearn_imgretrieval.datasets import load_image_folder
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ["cat/1.png", "cat/2.png", "dog/1.png"]:
    ...     (root / name).parent.mkdir(exist_ok=True)
    ...     Image.new("RGB", (8, 8)).save(root / name)
    >>> paths, labels, class_names = load_image_folder(root)
    >>> labels, class_names
    (array([0, 0, 1]), ['cat', 'dog'])
    """
    if label_from not in ("top", "parent"):
        raise ValueError(f"label_from must be 'top' or 'parent', not {label_from!r}.")
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder. Pass the folder that holds the images.")
    suffixes = tuple(ext.lower() for ext in extensions)
    walker = root.rglob("*") if recursive else root.glob("*")
    files = sorted(p for p in walker if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."))
    if verify and files:
        reasons, _ = _image_io.map_threads(_is_readable_image, files, n_jobs)
        bad = [(f, r) for f, r in zip(files, reasons) if r is not None]
        if bad:
            warnings.warn(_image_io.skipped_files_message(bad), UserWarning, stacklevel=2)
            bad_set = {f for f, _ in bad}
            files = [f for f in files if f not in bad_set]
    if not files:
        raise ValueError(
            f"No image files in {root} (extensions {', '.join(suffixes)}). Check the path, or pass extensions=."
        )
    folders = [_class_folder(f.relative_to(root).parts[:-1], label_from) for f in files]
    class_names = sorted(set(folders))
    lookup = {name: i for i, name in enumerate(class_names)}
    labels = np.array([lookup[folder] for folder in folders])
    return [str(f) for f in files], labels, class_names
