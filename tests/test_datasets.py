"""Data sets: digits as images, Fashion-MNIST's search order, folders of images."""

import gzip
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from sklearn_imgretrieval import datasets
from sklearn_imgretrieval.datasets import load_digits_images, load_fashion_mnist, load_image_folder


def _write_idx(path, array):
    """A gzipped IDX file (uint8), as Fashion-MNIST ships."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _fake_fashion(folder, n, value):
    folder.mkdir(parents=True, exist_ok=True)
    for subset, count in (("train", n), ("t10k", n // 2)):
        _write_idx(folder / f"{subset}-images-idx3-ubyte.gz", np.full((count, 28, 28), value))
        _write_idx(folder / f"{subset}-labels-idx1-ubyte.gz", np.arange(count) % 10)


def test_digits_are_images_in_unit_range():
    images, labels = load_digits_images()
    assert images.shape == (1797, 8, 8) and images.dtype == np.float32
    assert images.min() == 0 and images.max() == 1
    assert labels.shape == (1797,) and set(labels) == set(range(10))


def test_fashion_mnist_search_order(tmp_path, monkeypatch):
    # data_home and the environment variable come before the machine's own folders
    _fake_fashion(tmp_path / "home", 6, value=1)
    _fake_fashion(tmp_path / "env", 4, value=2)
    monkeypatch.setenv("SKLEARN_IMGRETRIEVAL_DATA", str(tmp_path / "env"))
    images, labels = load_fashion_mnist("train", data_home=tmp_path / "home")
    assert images.shape == (6, 28, 28) and images.dtype == np.uint8 and images.max() == 1
    np.testing.assert_array_equal(labels, np.arange(6) % 10)
    # data_home without the files: the environment variable's folder is next
    images, _ = load_fashion_mnist("test", data_home=tmp_path / "nothing-here")
    assert images.shape == (2, 28, 28) and images.max() == 2


def test_fashion_mnist_offline_error_names_every_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_fashion_candidates", lambda data_home: [tmp_path / "a", tmp_path / "b"])

    class OfflineKeras:
        class datasets:
            class fashion_mnist:
                @staticmethod
                def load_data():
                    raise Exception("URL fetch failure: Name or service not known")

    monkeypatch.setitem(sys.modules, "keras", OfflineKeras)
    with pytest.raises(OSError, match=r"Looked for .* in: .*a, .*b.*dataset-fashion-mnist.*SKLEARN_IMGRETRIEVAL_DATA"):
        load_fashion_mnist("train")
    with pytest.raises(ValueError, match='subset must be "train" or "test"'):
        load_fashion_mnist("validation")


def test_image_folder_labels_extensions_and_verify(tmp_path):
    for name in ["cat/a.png", "cat/sub/b.JPG", "dog/c.bmp", "top.png"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), "white").save(tmp_path / name, format="PNG" if name.endswith("png") else None)
    (tmp_path / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "dog" / "notes.txt").write_text("not an image extension")
    (tmp_path / "cat" / ".hidden.png").write_bytes(b"")

    paths, labels, class_names = load_image_folder(tmp_path)
    assert class_names == ["", "cat", "dog"]
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["a.png", "b.JPG", "broken.jpg", "c.bmp", "top.png"]
    assert list(labels) == [1, 1, 2, 2, 0]

    # the top subfolder names the class, or, with label_from="parent", the folder holding the file
    paths, labels, class_names = load_image_folder(tmp_path, label_from="parent")
    assert class_names == ["", "cat", "cat/sub", "dog"] and list(labels) == [1, 2, 3, 3, 0]
    with pytest.raises(ValueError, match="label_from must be 'top' or 'parent', not 'leaf'"):
        load_image_folder(tmp_path, label_from="leaf")

    shallow, _, _ = load_image_folder(tmp_path, recursive=False)
    assert [p.rsplit("/", 1)[-1] for p in shallow] == ["top.png"]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        verified, verified_labels, _ = load_image_folder(tmp_path, verify=True)
    assert len(caught) == 1 and "broken.jpg" in str(caught[0].message)
    assert "broken.jpg" not in " ".join(verified) and len(verified) == len(verified_labels) == 4

    with pytest.raises(ValueError, match="is not a folder"):
        load_image_folder(tmp_path / "missing")
