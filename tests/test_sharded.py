"""ShardedRetriever: the same answers as one retriever, in one process and on a LocalCluster of processes."""

import os
import pickle
import time
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.neighbors import NearestNeighbors

from sklearn_imgretrieval import NearestImageRetriever, ShardedRetriever, load, save

ALGORITHMS = ("auto", "brute", "flat", "ivf", "hnsw", "ivfpq")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(16, 12)) * 3
    labels = rng.integers(0, 16, size=1200)
    X = (centres[labels] + rng.normal(size=(1200, 12))).astype(np.float32)
    queries = (centres[rng.integers(0, 16, size=40)] + rng.normal(size=(40, 12))).astype(np.float32)
    return X, labels, queries


def _recall(found, truth):
    return np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth)])


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_sharded_answers_equal_one_index(data, algorithm):
    X, y, queries = data
    base = NearestImageRetriever(n_neighbors=10, algorithm=algorithm, random_state=0)
    one = clone(base).fit(X, y)
    sharded = ShardedRetriever(base, n_shards=4, random_state=0).fit(X, y)
    assert [len(rows) for rows in sharded.shard_rows_] == [300] * 4
    found = sharded.kneighbors(queries)
    expected = one.kneighbors(queries)
    if algorithm in ("auto", "brute", "flat"):
        np.testing.assert_array_equal(found[1], expected[1])
        np.testing.assert_allclose(found[0], expected[0], rtol=1e-6)
    else:  # shards of a quarter of the rows each, searched with the same settings, find as much
        truth = NearestNeighbors(n_neighbors=10).fit(X).kneighbors(queries, return_distance=False)
        assert _recall(found[1], truth) >= _recall(expected[1], truth) - 0.02
        np.testing.assert_array_equal(sharded.predict(queries), one.predict(queries))
    assert (np.diff(found[0], axis=1) >= 0).all()
    assert sharded.score(queries, one.predict(queries)) > 0.5


def test_ivf_shards_share_one_trained_quantizer(data):
    X, _, queries = data
    sharded = ShardedRetriever(NearestImageRetriever(algorithm="ivf", n_probe=1000), n_shards=3, random_state=0).fit(X)
    # every cell scanned in every shard: exact, so distances from different shards compare
    truth = NearestNeighbors(n_neighbors=5).fit(X).kneighbors(queries)
    found = sharded.kneighbors(queries, 5)
    np.testing.assert_array_equal(found[1], truth[1])
    centroids = [shard.shard.retriever.backend_._faiss_index.quantizer.reconstruct_n(0, 4) for shard in sharded.shards_]
    assert all(np.array_equal(centroids[0], other) for other in centroids[1:])


def test_leave_one_out_radius_subsets_and_graphs(data):
    X, _, queries = data
    one = NearestImageRetriever(n_neighbors=4, algorithm="flat").fit(X)
    sharded = ShardedRetriever(NearestImageRetriever(n_neighbors=4, algorithm="flat"), n_shards=3).fit(X)
    np.testing.assert_array_equal(sharded.kneighbors(return_distance=False), one.kneighbors(return_distance=False))
    subset = np.arange(0, len(X), 3)
    np.testing.assert_array_equal(
        sharded.kneighbors(queries, subset=subset)[1], one.kneighbors(queries, subset=subset)[1]
    )
    for a, b in zip(sharded.radius_neighbors(queries[:5], 3.0)[1], one.radius_neighbors(queries[:5], 3.0)[1]):
        assert set(a) == set(b)
    loo = sharded.radius_neighbors(radius=2.0, return_distance=False)
    assert all(row not in found for row, found in enumerate(loo))
    assert (sharded.transform(queries) != one.transform(queries)).nnz == 0
    np.testing.assert_array_equal(sharded.gallery_rows([5, 900, 0]), X[[5, 900, 0]])
    np.testing.assert_array_equal(sharded.kneighbors_of_gallery([7, 8]), one.kneighbors_of_gallery([7, 8]))
    assert sharded.nbytes_ == X.nbytes


def test_partial_fit_fills_the_smallest_shard_and_opens_new_ones(data):
    X, y, queries = data
    sharded = ShardedRetriever(NearestImageRetriever(algorithm="flat"), n_shards=2, shard_size=500)
    sharded.partial_fit(X[:800], y[:800])
    assert [len(r) for r in sharded.shard_rows_] == [400, 400]
    sharded.partial_fit(X[800:], y[800:])  # 400 more: 100 + 100 fill the shards, 200 open a third
    assert sorted(len(r) for r in sharded.shard_rows_) == [200, 500, 500] and sharded.n_samples_fit_ == 1200
    one = NearestImageRetriever(algorithm="flat").fit(X, y)
    np.testing.assert_array_equal(sharded.kneighbors(queries)[1], one.kneighbors(queries)[1])
    sharded.remove(np.arange(0, 1200, 5))
    one.remove(np.arange(0, 1200, 5))
    np.testing.assert_array_equal(sharded.kneighbors(queries)[1], one.kneighbors(queries)[1])
    np.testing.assert_array_equal(sharded.gallery_labels_, one.gallery_labels_)


def test_pickle_clone_and_files(data, tmp_path):
    X, y, queries = data
    sharded = ShardedRetriever(NearestImageRetriever(algorithm="ivfpq", random_state=0), n_shards=3).fit(X, y)
    expected = sharded.kneighbors(queries)
    copy = pickle.loads(pickle.dumps(sharded))
    np.testing.assert_array_equal(copy.kneighbors(queries)[1], expected[1])
    assert clone(sharded).get_params()["n_shards"] == 3
    path = tmp_path / "sharded.skops"
    save(sharded, path)
    files = sorted(p.name for p in (tmp_path / "sharded.skops.shards").iterdir())
    assert len(files) == 3 and all(name.startswith("shard-") for name in files)
    loaded = load(path)
    np.testing.assert_array_equal(loaded.kneighbors(queries)[1], expected[1])
    save(loaded, path)  # saved again: new shard files, the old ones removed after the main file is in place
    assert len(list((tmp_path / "sharded.skops.shards").iterdir())) == 3
    assert sorted(p.name for p in (tmp_path / "sharded.skops.shards").iterdir()) != files


def test_a_file_naming_other_shard_files_is_refused(data, tmp_path):
    import zipfile

    X, _, _ = data
    path = tmp_path / "sharded.skops"
    save(ShardedRetriever(NearestImageRetriever(algorithm="flat"), n_shards=2).fit(X), path)
    crafted = tmp_path / "crafted.skops"
    with zipfile.ZipFile(path) as old, zipfile.ZipFile(crafted, "w") as new:
        for info in old.infolist():
            data_ = old.read(info)
            if info.filename == "schema.json":
                data_ = data_.replace(b"shard-000-", b"../../shard-000-")
            new.writestr(info.filename, data_)
    (tmp_path / "crafted.skops.shards").mkdir()
    with pytest.raises(ValueError, match="names this library does not write"):
        load(crafted)


def _kill(client, worker):
    """SIGKILL a worker's process, as a machine that fails would end it."""
    import signal

    os.kill(client.run(os.getpid, workers=[worker])[worker], signal.SIGKILL)
    while worker in client.scheduler_info()["workers"]:  # until the scheduler has seen it go
        time.sleep(0.05)


@pytest.fixture(scope="module")
def client():
    from sklearn_imgretrieval.indexing import dask_client

    with dask_client(n_workers=2) as client:
        yield client


@pytest.mark.slow  # starts a LocalCluster of two processes
def test_on_a_cluster_answers_equal_one_index_and_reload_lost_shards(data, client, tmp_path):
    X, y, queries = data
    one = NearestImageRetriever(n_neighbors=5, algorithm="flat").fit(X, y)
    sharded = ShardedRetriever(NearestImageRetriever(n_neighbors=5, algorithm="flat"), n_shards=4, client=client)
    sharded.fit(X, y)
    assert {handle.worker for handle in sharded.shards_} == set(client.scheduler_info()["workers"])
    np.testing.assert_array_equal(sharded.kneighbors(queries)[1], one.kneighbors(queries)[1])
    path = tmp_path / "sharded.skops"
    save(sharded, path)
    loaded = load(path, client=client)
    np.testing.assert_array_equal(loaded.kneighbors(queries)[1], one.kneighbors(queries)[1])
    # a worker dies: its shards are loaded again from their files on the other worker
    victim = loaded.shards_[0].worker
    _kill(client, victim)
    np.testing.assert_array_equal(loaded.kneighbors(queries)[1], one.kneighbors(queries)[1])
    # a shard that was never saved cannot come back: a clear error, or the others' answers if asked
    client.wait_for_workers(2, timeout=60)  # the nanny starts the killed worker again
    unsaved = ShardedRetriever(NearestImageRetriever(algorithm="flat"), n_shards=2, client=client).fit(X)
    _kill(client, unsaved.shards_[0].worker)
    with pytest.raises(RuntimeError, match="Shard 0 of 2 .*never saved"):
        unsaved.kneighbors(queries)
    unsaved.set_params(allow_partial=True)
    with pytest.warns(RuntimeWarning, match="other shards"):
        assert np.isin(unsaved.kneighbors(queries)[1], unsaved.shard_rows_[1]).all()
    client.wait_for_workers(2, timeout=60)


@pytest.mark.slow  # starts a LocalCluster of two processes
def test_a_shard_changed_since_its_file_is_never_reloaded_from_it(data, client, tmp_path):
    X, _, queries = data
    sharded = ShardedRetriever(NearestImageRetriever(algorithm="flat"), n_shards=2, client=client).fit(X[:1000])
    save(sharded, tmp_path / "sharded.skops")
    # a worker dies during an add: the shard is reloaded from its file, which still holds it, and the add retried
    victim = sharded.shards_[0].worker
    _kill(client, victim)
    sharded.partial_fit(X[1000:1100])
    client.wait_for_workers(2, timeout=60)
    truth = NearestNeighbors(n_neighbors=5).fit(X[:1100]).kneighbors(queries, return_distance=False)
    np.testing.assert_array_equal(sharded.kneighbors(queries, 5)[1], truth)
    # the shard that took those rows now differs from its file: losing it is an error, not 100 rows gone
    changed = int(np.flatnonzero([rows.max() >= 1000 for rows in sharded.shard_rows_])[0])
    _kill(client, sharded.shards_[changed].worker)
    with pytest.raises(RuntimeError, match=f"Shard {changed} of 2 .*changed since it was last saved"):
        sharded.kneighbors(queries)
    client.wait_for_workers(2, timeout=60)


@pytest.mark.slow  # starts a LocalCluster of two processes
def test_a_dask_array_is_indexed_on_the_workers(data, client):
    import dask.array as da

    X, _, queries = data
    lazy = da.from_array(X, chunks=(100, 12))  # 12 blocks, 6 for each shard: added in row order
    sharded = ShardedRetriever(NearestImageRetriever(algorithm="flat"), n_shards=2, client=client).fit(lazy)
    assert sorted(np.concatenate(sharded.shard_rows_).tolist()) == list(range(len(X)))
    truth = NearestNeighbors(n_neighbors=5).fit(X).kneighbors(queries, return_distance=False)
    np.testing.assert_array_equal(sharded.kneighbors(queries, 5)[1], truth)
    np.testing.assert_array_equal(sharded.gallery_rows([0, 700, 1199]), X[[0, 700, 1199]])


# ------------------------------------------------------------------ indexes
@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(1)
    for i in range(24):
        pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{i:02d}.png")
        if i % 6 == 0:  # a near-duplicate of every sixth image
            Image.fromarray(np.clip(pixels.astype(int) + 3, 0, 255).astype(np.uint8)).save(root / f"{i:02d}_copy.png")
    return root


def _pipeline():
    from sklearn_imgretrieval import ImagePreprocessor, make_retrieval_pipeline

    return make_retrieval_pipeline(
        ImagePreprocessor(size=(8, 8), color_mode="rgb"),
        NearestImageRetriever(n_neighbors=3, metric="cosine", algorithm="flat"),
    )


def test_a_sharded_index_builds_updates_saves_and_finds_duplicates_across_shards(folder, tmp_path):
    from sklearn_imgretrieval.indexing import build_index, load_index

    paths = sorted(str(p) for p in folder.glob("*.png"))
    one = build_index(paths, _pipeline(), chunk_size=5)
    sharded = build_index(paths, _pipeline(), chunk_size=5, shards=3)
    assert isinstance(sharded.pipeline[-1], ShardedRetriever) and len(sharded.pipeline[-1].shards_) == 3
    for a, b in zip(sharded.kneighbors(paths[:4]), one.kneighbors(paths[:4])):
        np.testing.assert_allclose(a, b, atol=1e-6)
    expected = one.find_duplicates(0.01)
    found = sharded.find_duplicates(0.01)
    assert [list(g) for g in found.groups] == [list(g) for g in expected.groups] and len(found.groups) == 4
    shard_of = {row: s for s, rows in enumerate(sharded.pipeline[-1].shard_rows_) for row in rows}
    assert any(shard_of[a] != shard_of[b] for a, b in found.pairs)  # pairs across shards are found
    path = tmp_path / "photos.idx"
    save(sharded, path)
    loaded = load_index(path)
    np.testing.assert_array_equal(loaded.kneighbors(paths[:4])[1], sharded.kneighbors(paths[:4])[1])
    changes = loaded.update(paths[:-2])  # two files gone
    assert len(changes.removed) == 2 and len(loaded) == len(paths) - 2


def test_the_command_indexes_and_queries_in_shards(folder, tmp_path):
    import contextlib
    import io
    import json

    from sklearn_imgretrieval import cli

    def main(*args):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return cli.main([str(a) for a in args]), out.getvalue(), err.getvalue()

    index = tmp_path / "photos.idx"
    status, out, err = main("index", folder, "-o", index, "--embedder", "pca", "--size", 8, 8, "--dims", 6,
                            "--shards", 2)  # fmt: skip
    assert status == 0, err
    assert len(list((tmp_path / "photos.idx.shards").iterdir())) == 2
    status, out, err = main("query", index, folder / "06.png", "-k", 2, "--json")
    assert status == 0, err
    answer = json.loads(out)[0]["neighbors"]
    assert answer[0]["path"] == str(folder / "06.png") and answer[1]["path"] == str(folder / "06_copy.png")
    status, out, err = main("index", folder, "-o", index, "--update", "--shards", 3)
    assert status == 2 and "--shards 2, not 3" in err


def test_an_interrupted_sharded_build_leaves_loadable_shards_and_resumes(folder, tmp_path, monkeypatch):
    from sklearn_imgretrieval.indexing import _streaming, build_index, load_index

    paths = sorted(str(p) for p in folder.glob("*.png"))
    checkpoint = tmp_path / "photos.idx.partial"
    monkeypatch.setattr(_streaming, "_CHECKPOINT_SECONDS", 0)  # save after every chunk

    def stop_after_two_chunks(stage, done, total):
        if stage == "embedding" and done >= 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_index(paths, _pipeline(), chunk_size=5, shards=2, checkpoint=checkpoint, progress=stop_after_two_chunks)
    saved = load_index(checkpoint)
    assert len(saved) == 10 and len(list((tmp_path / "photos.idx.partial.shards").iterdir())) == 2
    np.testing.assert_array_equal(saved.kneighbors(paths[:3], n_neighbors=1)[1].ravel(), [0, 1, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # resumed, not "Ignoring the checkpoint ..."
        index = build_index(paths, _pipeline(), chunk_size=5, shards=2, checkpoint=checkpoint)
    whole = build_index(paths, _pipeline(), chunk_size=5, shards=2)
    assert index.paths == whole.paths == paths
    np.testing.assert_array_equal(index.kneighbors(paths)[1], whole.kneighbors(paths)[1])
