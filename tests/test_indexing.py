"""ImageIndex and load_index: the index file `imgretrieval` writes and reads."""

import os

import numpy as np
import pytest
from sklearn.decomposition import PCA

from sklearn_imgretrieval import ImagePreprocessor, NearestImageRetriever, make_retrieval_pipeline, save
from sklearn_imgretrieval.indexing import ImageIndex, load_index

IMAGES = np.random.default_rng(0).random((6, 5, 5), dtype=np.float32)


@pytest.fixture(scope="module")
def pipe():
    steps = ImagePreprocessor(), PCA(3, random_state=0), NearestImageRetriever(n_neighbors=2, metric="cosine")
    return make_retrieval_pipeline(*steps).fit(IMAGES, np.arange(6) % 2)


def test_paths_become_absolute_and_answers_are_gallery_positions(pipe, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    index = ImageIndex(pipe, [f"photos/{i}.png" for i in range(6)], root="photos", labels=np.arange(6) % 2)
    assert index.paths[0] == os.path.join(tmp_path, "photos", "0.png") and index.root == str(tmp_path / "photos")
    distances, indices = index.kneighbors(IMAGES[[4]], n_neighbors=1)
    assert indices.tolist() == [[4]] and distances[0, 0] == pytest.approx(0.0, abs=1e-6)
    assert len(index) == 6 and repr(index) == f"ImageIndex(6 images from {tmp_path / 'photos'})"


def test_save_and_load_index_with_a_moved_folder(pipe, tmp_path):
    paths = [f"/old/place/{label}/{i}.png" for i, label in enumerate("aabbcc")]
    index = ImageIndex(
        pipe, paths, root="/old/place", labels=np.arange(6) % 3, class_names=["a", "b", "c"], settings={"size": [5, 5]}
    )
    save(index, tmp_path / "photos.idx")
    loaded = load_index(tmp_path / "photos.idx")
    assert loaded.paths == paths and loaded.class_names == ["a", "b", "c"] and loaded.settings == {"size": [5, 5]}
    np.testing.assert_array_equal(loaded.labels, index.labels)
    np.testing.assert_array_equal(loaded.kneighbors(IMAGES)[1], index.kneighbors(IMAGES)[1])
    moved = load_index(tmp_path / "photos.idx", root=tmp_path / "new")
    assert moved.paths[2] == str(tmp_path / "new" / "b" / "2.png") and moved.root == str(tmp_path / "new")


def test_load_index_refuses_other_objects(pipe, tmp_path):
    save(pipe, tmp_path / "pipe.skops")
    with pytest.raises(ValueError, match="holds a RetrievalPipeline, not an image index"):
        load_index(tmp_path / "pipe.skops")
    save(ImageIndex(pipe, [f"{i}.png" for i in range(6)]), tmp_path / "rootless.idx")
    with pytest.raises(ValueError, match="does not record the folder it indexed"):
        load_index(tmp_path / "rootless.idx", root="/elsewhere")


def test_inconsistent_indexes_are_refused(pipe):
    paths = [f"{i}.png" for i in range(6)]
    with pytest.raises(ValueError, match="indexes 6 images but 5 paths"):
        ImageIndex(pipe, paths[:5])
    with pytest.raises(ValueError, match="give one label per path"):
        ImageIndex(pipe, paths, labels=[0, 1])
    with pytest.raises(TypeError, match="paths must be a list of file paths"):
        ImageIndex(pipe, "photos/")
    with pytest.raises(TypeError, match="must answer neighbour queries"):
        ImageIndex(PCA(), paths)
    with pytest.raises(ValueError, match="needs a pipeline and its paths"):
        ImageIndex.__new__(ImageIndex).__setstate__({"format": "sklearn-imgretrieval-index"})
