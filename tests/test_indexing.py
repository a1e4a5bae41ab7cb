"""ImageIndex and load_index: the index file `imgretrieval` writes and reads."""

import os

import numpy as np
import pytest
from PIL import Image
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.decomposition import PCA

from sklearn_imgretrieval import ImagePreprocessor, NearestImageRetriever, make_retrieval_pipeline, save
from sklearn_imgretrieval.datasets import load_image_folder
from sklearn_imgretrieval.indexing import ImageIndex, build_index, load_index

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
    assert list(loaded.paths) == paths and loaded.class_names == ["a", "b", "c"] and loaded.settings == {"size": [5, 5]}
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


# ------------------------------------------------------------------ streaming
class CountingStep(TransformerMixin, BaseEstimator):
    """Passes rows through and counts them, to see what a run embedded."""

    seen = 0

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        type(self).seen += len(X)
        return X

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False  # stateless, as scikit-learn's FunctionTransformer
        return tags


@pytest.fixture
def folder(tmp_path):
    """12 small photos in two classes, and one file that is not an image."""
    rng = np.random.default_rng(0)
    for i in range(12):
        label = "red" if i < 6 else "blue"
        (tmp_path / label).mkdir(exist_ok=True)
        pixels = rng.integers(0, 256, size=(10, 12, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / label / f"{i:02d}.png")
    (tmp_path / "blue" / "broken.png").write_bytes(b"not a png")
    return tmp_path


def _readable(folder):
    """The folder's listing without the broken file."""
    paths, labels, names = load_image_folder(folder)
    keep = [i for i, path in enumerate(paths) if not path.endswith("broken.png")]
    return [paths[i] for i in keep], labels[keep], names


def _streaming_pipeline(**retriever):
    return make_retrieval_pipeline(
        ImagePreprocessor(size=(6, 6), color_mode="rgb"), NearestImageRetriever(n_neighbors=2, **retriever)
    )


def test_build_index_streams_chunks_and_skips_unreadable_files(folder):
    paths, labels, names = load_image_folder(folder)
    with pytest.warns(UserWarning, match=r"Skipped 1 unreadable image file\(s\): .*broken\.png"):
        index = build_index(paths, _streaming_pipeline(), labels=labels, class_names=names, root=folder, chunk_size=5)
    kept = [i for i, path in enumerate(paths) if not path.endswith("broken.png")]
    assert list(index.paths) == [paths[i] for i in kept] and len(index) == 12
    np.testing.assert_array_equal(index.labels, labels[kept])
    whole = _streaming_pipeline().fit([paths[i] for i in kept], labels[kept])
    np.testing.assert_array_equal(whole[-1].gallery_rows(range(12)), index.pipeline[-1].gallery_rows(range(12)))
    assert (index.column("file_size") > 0).all() and (index.column("width") == 12).all()


def test_build_index_fits_learning_steps_on_a_sample_only_when_asked(folder):
    paths, _, _ = _readable(folder)
    pipe = make_retrieval_pipeline(ImagePreprocessor(size=(6, 6), color_mode="rgb"), PCA(3), NearestImageRetriever())
    with pytest.raises(ValueError, match=r"pca learn from the images.*fit_sample=N"):
        build_index(paths, pipe)
    index = build_index(paths, pipe, fit_sample=8, random_state=0, chunk_size=4)
    assert index.pipeline[1].n_samples_ == 8 and len(index) == 12


def test_ivf_cells_come_from_the_number_of_files(folder):
    paths, _, _ = _readable(folder)
    pipe = _streaming_pipeline(algorithm="ivf", random_state=0)
    index = build_index(paths * 10, pipe, chunk_size=7)  # 120 files arriving 7 at a time
    assert index.pipeline[-1].n_cells == 3 and index.pipeline[-1].backend_.n_cells == 3  # 120 // 39, not 7 // 39


def test_update_embeds_only_new_and_changed_files(folder):
    paths, labels, names = _readable(folder)
    index = build_index(paths, _streaming_pipeline(), labels=labels, class_names=names, root=folder)
    id_of = dict(zip(index.paths, index.ids.tolist()))
    (folder / "red" / "00.png").unlink()
    Image.fromarray(np.zeros((10, 12, 3), dtype=np.uint8)).save(folder / "red" / "01.png")  # changed
    os.utime(folder / "red" / "01.png", ns=(1, 1))
    (folder / "green").mkdir()
    Image.fromarray(np.full((10, 12, 3), 200, dtype=np.uint8)).save(folder / "green" / "new.png")
    paths, labels, names = _readable(folder)
    changes = index.update(paths, labels, names)
    assert changes.removed == [str(folder / "red" / "00.png")]
    assert changes.changed == [str(folder / "red" / "01.png")] and changes.added == [str(folder / "green" / "new.png")]
    assert str(changes) == "1 added, 1 changed, 1 removed"
    assert sorted(index.paths) == sorted(paths) and index.class_names == ["blue", "red", "green"]
    assert index.class_names[index.labels[index.paths.index(str(folder / "green" / "new.png"))]] == "green"
    fresh = _streaming_pipeline().fit(paths)
    query = [str(folder / "red" / "01.png")]
    # Answers are ids: the changed file kept its id (now at another row), the new file got the next id.
    assert index.kneighbors(query, n_neighbors=1)[1][0, 0] == id_of[query[0]]
    assert index.paths[index.rows_of([id_of[query[0]]])[0]] == query[0]
    new_ids = dict(zip(index.paths, index.ids.tolist()))
    assert new_ids[str(folder / "green" / "new.png")] == 12 and id_of[str(folder / "red" / "00.png")] not in index.ids
    assert all(new_ids[path] == id_of[path] for path in new_ids if path in id_of)
    np.testing.assert_allclose(
        index.pipeline[-1].gallery_rows(range(len(index))),
        fresh[-1].gallery_rows(range(len(index)))[[paths.index(p) for p in index.paths]],
    )
    assert str(index.update(paths)) == "0 added, 0 changed, 0 removed"


def test_an_interrupted_build_resumes_from_its_checkpoint(folder, tmp_path_factory, monkeypatch):
    from sklearn_imgretrieval.indexing import _streaming

    paths, _, _ = _readable(folder)
    checkpoint = tmp_path_factory.mktemp("run") / "photos.idx.partial"
    monkeypatch.setattr(_streaming, "_CHECKPOINT_SECONDS", 0)  # save after every chunk

    def stop_after_two_chunks(stage, done, total):
        if stage == "embedding" and done >= 8:
            raise KeyboardInterrupt

    pipe = make_retrieval_pipeline(
        ImagePreprocessor(size=(6, 6), color_mode="rgb"), CountingStep(), NearestImageRetriever()
    )
    CountingStep.seen = 0
    with pytest.raises(KeyboardInterrupt):
        build_index(
            paths, pipe, chunk_size=4, checkpoint=checkpoint, settings={"run": 1}, progress=stop_after_two_chunks
        )
    trusted = [f"{CountingStep.__module__}.CountingStep"]
    assert len(load_index(checkpoint, trusted=trusted)) == 8
    CountingStep.seen = 0
    index = build_index(paths, clone(pipe), chunk_size=4, checkpoint=checkpoint, settings={"run": 1}, trusted=trusted)
    assert CountingStep.seen == 4 and list(index.paths) == paths  # only the last chunk was embedded again
    with pytest.warns(UserWarning, match="other settings; starting over"):
        again = build_index(paths, clone(pipe), checkpoint=checkpoint, settings={"run": 2}, trusted=trusted)
    assert len(again) == 12
