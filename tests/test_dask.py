"""Dask: indexing on a cluster, GridSearchCV on joblib's dask backend, dask arrays through transform.

One local cluster of two spawned worker processes serves the module.
"""

import os

import joblib
import numpy as np
import pytest
from PIL import Image
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.model_selection import GridSearchCV

from sklearn_imgretrieval import (
    AutoencoderEmbedder,
    ImagePreprocessor,
    NearestImageRetriever,
    make_retrieval_pipeline,
)
from sklearn_imgretrieval.indexing import build_index, dask_client

da = pytest.importorskip("dask.array", reason="the dask extra is not installed")


class UnpickleLog(TransformerMixin, BaseEstimator):
    """Passes rows through; every time it is unpickled, its process id goes into ``log``."""

    def __init__(self, log=None):
        self.log = log

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X

    def __setstate__(self, state):
        super().__setstate__(state)
        with open(state["log"], "a") as log:
            log.write(f"{os.getpid()}\n")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        return tags


class DiesOnce(TransformerMixin, BaseEstimator):
    """Kills the worker process running it the first time it transforms (``marker`` not yet written)."""

    def __init__(self, marker=None):
        self.marker = marker

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        if os.getpid() != self.client_pid_ and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)  # the worker dies mid-chunk
        return X


@pytest.fixture(scope="module")
def client():
    with dask_client(n_workers=2) as client:
        yield client


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(30):
        Image.fromarray(rng.integers(0, 256, size=(12, 12, 3), dtype=np.uint8)).save(root / f"{i:02d}.png")
    (root / "broken.png").write_bytes(b"no image here")
    return sorted(str(path) for path in root.glob("*.png"))


def _pipeline(log):
    return make_retrieval_pipeline(
        ImagePreprocessor(size=(8, 8), color_mode="rgb"),
        UnpickleLog(log),
        PCA(5, random_state=0),
        NearestImageRetriever(n_neighbors=3),
    )


def test_cluster_index_equals_local_and_ships_the_pipeline_once_per_worker(client, files, tmp_path):
    log = tmp_path / "unpickled.txt"
    with pytest.warns(UserWarning, match="broken.png"):
        local = build_index(files, _pipeline(str(log)), fit_sample=20, random_state=0, chunk_size=4)
    log.write_text("")
    with pytest.warns(UserWarning, match="broken.png"):
        remote = build_index(files, _pipeline(str(log)), fit_sample=20, random_state=0, chunk_size=4, client=client)
    assert list(remote.paths) == list(local.paths) and len(remote) == 30
    np.testing.assert_allclose(
        remote.pipeline[-1].gallery_rows(range(30)), local.pipeline[-1].gallery_rows(range(30)), atol=1e-5
    )
    np.testing.assert_array_equal(remote.kneighbors(files[:5])[1], local.kneighbors(files[:5])[1])
    worker_pids = {str(pid) for pid in client.run(os.getpid).values()}
    on_workers = [pid for pid in log.read_text().split() if pid in worker_pids]
    assert 1 <= len(on_workers) == len(set(on_workers)) <= 2  # 8 chunks, the pipeline unpickled once per worker


@pytest.mark.slow  # a worker process dies and is started again
def test_a_chunk_whose_worker_dies_is_run_again(client, files, tmp_path):
    dies = DiesOnce(str(tmp_path / "died"))
    dies.client_pid_ = os.getpid()  # fitted: only workers die
    pipe = make_retrieval_pipeline(ImagePreprocessor(size=(8, 8), color_mode="rgb"), dies, NearestImageRetriever())
    with pytest.warns(UserWarning, match="broken.png"):
        index = build_index(files, pipe, chunk_size=8, client=client)
    assert (tmp_path / "died").exists() and len(index) == 30 and index.pipeline[-1].n_samples_fit_ == 30


def test_local_workers_keep_the_default_memory_trimming(client):
    # Dask's own default (65536) made TensorFlow 1.5x slower in the workers.
    assert "MALLOC_TRIM_THRESHOLD_" not in os.environ
    assert set(client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_")).values()) == {None}
    assert set(client.run(lambda: os.environ.get("OMP_NUM_THREADS")).values()) == {"1"}  # Dask's others stay


@pytest.mark.network  # trains a Keras autoencoder
def test_grid_search_runs_on_the_joblib_dask_backend(client):
    rng = np.random.default_rng(0)
    images = rng.random((60, 8, 8, 1), dtype=np.float32)
    labels = np.arange(60) % 3
    images[labels == 1] += 0.5
    pipe = make_retrieval_pipeline(
        AutoencoderEmbedder(latent_dim=2, hidden_units=(8,), epochs=1, batch_size=16, random_state=0),
        NearestImageRetriever(n_neighbors=3),
    )
    search = GridSearchCV(pipe, {"autoencoderembedder__latent_dim": [2, 4]}, cv=2, n_jobs=-1)
    with joblib.parallel_backend("dask", client=client):
        search.fit(images, labels)
    serial = GridSearchCV(pipe, {"autoencoderembedder__latent_dim": [2, 4]}, cv=2).fit(images, labels)
    np.testing.assert_allclose(search.cv_results_["mean_test_score"], serial.cv_results_["mean_test_score"])


@pytest.mark.network  # trains a Keras autoencoder
def test_transform_of_a_dask_array_is_a_dask_array():
    images = np.random.default_rng(0).random((40, 8, 8), dtype=np.float32)
    lazy = da.from_array(images, chunks=(15, 8, 8))
    preprocessor = ImagePreprocessor(size=(8, 8)).fit(images)
    rows = preprocessor.transform(lazy)
    assert isinstance(rows, da.Array) and rows.shape == (40, 64)
    np.testing.assert_array_equal(rows.compute(), preprocessor.transform(images))
    embedder = AutoencoderEmbedder(latent_dim=3, hidden_units=(8,), epochs=1, random_state=0).fit(rows.compute())
    embeddings = embedder.transform(rows)
    assert isinstance(embeddings, da.Array) and embeddings.shape == (40, 3)
    np.testing.assert_allclose(embeddings.compute(), embedder.transform(rows.compute()), atol=1e-6)


def test_a_scheduler_that_does_not_answer_is_named():
    with pytest.raises(ConnectionError, match=r"Could not reach the Dask scheduler at tcp://127\.0\.0\.1:9 within 1 s"):
        with dask_client("tcp://127.0.0.1:9", timeout=1):
            pass
