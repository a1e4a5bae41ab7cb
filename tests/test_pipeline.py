import subprocess
import sys
import textwrap

import joblib
import numpy as np
import pytest
from PIL import Image
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.model_selection import GridSearchCV

from sklearn_imgretrieval import (
    ImagePreprocessor,
    NearestImageRetriever,
    RetrievalPipeline,
    make_retrieval_pipeline,
)
from sklearn_imgretrieval.datasets import load_image_folder


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """Two classes of small photos: bright-left and bright-right gradients."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 40)
    for label, gradient in (("left", ramp[::-1]), ("right", ramp)):
        (root / label).mkdir()
        for i in range(12):
            pixels = np.tile(gradient, (30, 1))[..., None] * rng.uniform(0.7, 1.0, 3)
            pixels += rng.normal(0, 12, pixels.shape)
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
            image.save(root / label / f"{i}.{'jpg' if i % 2 else 'png'}")
    return root


def _pipeline():
    return make_retrieval_pipeline(
        ImagePreprocessor(size=(16, 16), color_mode="grayscale"),
        PCA(n_components=8, random_state=0),
        NearestImageRetriever(n_neighbors=5, metric="cosine"),
    )


def test_quickstart_on_a_folder_of_photos(photo_folder):
    paths, labels, class_names = load_image_folder(photo_folder)
    assert class_names == ["left", "right"]
    pipe = _pipeline().fit(paths[::2], labels[::2])
    distances, indices = pipe.kneighbors(paths[1::2])
    assert indices.shape == distances.shape == (12, 5)
    assert (np.diff(distances, axis=1) >= -1e-7).all()
    assert np.mean(labels[::2][indices] == labels[1::2][:, None]) > 0.9
    assert pipe.score(paths[1::2], labels[1::2]) > 0.9
    graph = pipe.kneighbors_graph(paths[1::2], mode="distance")
    np.testing.assert_allclose(graph.toarray()[np.arange(12)[:, None], indices], distances, atol=1e-6)


def test_kneighbors_without_X_queries_the_gallery(photo_folder):
    paths, labels, _ = load_image_folder(photo_folder)
    pipe = _pipeline().fit(paths, labels)
    indices = pipe.kneighbors(return_distance=False)
    assert not (indices == np.arange(len(paths))[:, None]).any()


def test_step_names_and_grid_parameters(photo_folder):
    paths, labels, _ = load_image_folder(photo_folder)
    pipe = _pipeline()
    assert [name for name, _ in pipe.steps] == ["imagepreprocessor", "pca", "nearestimageretriever"]
    named = RetrievalPipeline([("pca", PCA(4)), ("neighbors", NearestImageRetriever())])
    named.set_params(neighbors__n_neighbors=3, pca__n_components=2)
    assert named["neighbors"].n_neighbors == 3 and named["pca"].n_components == 2
    twice = make_retrieval_pipeline(PCA(8), PCA(4), NearestImageRetriever())
    assert [name for name, _ in twice.steps] == ["pca-1", "pca-2", "nearestimageretriever"]


def test_grid_search_in_parallel(photo_folder):
    paths, labels, _ = load_image_folder(photo_folder)
    search = GridSearchCV(
        _pipeline(),
        {"pca__n_components": [2, 8], "nearestimageretriever__n_neighbors": [3, 5]},
        cv=3,
        n_jobs=2,
    ).fit(paths, labels)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_score_ > 0.8
    assert isinstance(search.best_estimator_, RetrievalPipeline)


def test_joblib_round_trip_in_a_fresh_process(photo_folder, tmp_path):
    paths, labels, _ = load_image_folder(photo_folder)
    pipe = _pipeline().fit(paths[:16], labels[:16])
    model_file = tmp_path / "model.joblib"
    joblib.dump(pipe, model_file)
    distances, indices = pipe.kneighbors(paths[16:])
    script = textwrap.dedent(
        f"""
        import sys, joblib, numpy as np
        assert "tensorflow" not in sys.modules
        pipe = joblib.load({str(model_file)!r})
        distances, indices = pipe.kneighbors({paths[16:]!r})
        np.save({str(tmp_path / "d.npy")!r}, distances)
        np.save({str(tmp_path / "i.npy")!r}, indices)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    np.testing.assert_array_equal(np.load(tmp_path / "i.npy"), indices)
    np.testing.assert_array_equal(np.load(tmp_path / "d.npy"), distances)


def test_make_retrieval_pipeline_needs_a_retriever_last():
    with pytest.raises(TypeError, match="End the pipeline with NearestImageRetriever"):
        make_retrieval_pipeline(ImagePreprocessor(), PCA(2))
    with pytest.raises(ValueError, match="at least one step"):
        make_retrieval_pipeline()


def test_importing_the_package_does_not_import_tensorflow():
    code = "import sys, sklearn_imgretrieval; assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_partial_fit_streams_chunks_into_one_gallery():
    images = np.random.default_rng(0).integers(0, 256, size=(60, 12, 12), dtype=np.uint8)
    labels = np.arange(60) % 3
    whole = make_retrieval_pipeline(ImagePreprocessor(size=(8, 8)), NearestImageRetriever(n_neighbors=4))
    whole.fit(images, labels)
    # color_mode="keep" would take its channels from the first chunk alone, so it is refused
    with pytest.raises(ValueError, match="ImagePreprocessor.*is not fitted"):
        clone(whole).partial_fit(images[:10], labels[:10])
    streamed = make_retrieval_pipeline(
        ImagePreprocessor(size=(8, 8), color_mode="grayscale"), NearestImageRetriever(n_neighbors=4)
    )
    for chunk in np.array_split(np.arange(60), 4):
        streamed.partial_fit(images[chunk], labels[chunk])
    assert streamed[-1].n_samples_fit_ == 60
    np.testing.assert_array_equal(streamed[-1].gallery_labels_, labels)
    for a, b in zip(whole.kneighbors(images[:5]), streamed.kneighbors(images[:5])):
        np.testing.assert_allclose(a, b)


def test_partial_fit_refuses_a_step_that_learns_from_the_first_chunk():
    rows = np.random.default_rng(0).random((40, 16), dtype=np.float32)
    pipe = make_retrieval_pipeline(PCA(4), NearestImageRetriever())
    with pytest.raises(ValueError, match=r"Step 'pca' \(PCA\) is not fitted.*pipe\[:-1\]\.fit\(sample\)"):
        pipe.partial_fit(rows[:20])
    pipe[:-1].fit(rows)  # fitted on a sample: the chunks are embedded alike
    pipe.partial_fit(rows[:20]).partial_fit(rows[20:])
    assert pipe[-1].n_samples_fit_ == 40
    np.testing.assert_allclose(pipe[-1].gallery_rows(range(40)), pipe[0].transform(rows), rtol=1e-6, atol=1e-6)
