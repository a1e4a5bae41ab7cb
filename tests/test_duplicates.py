"""find_duplicates: pairs equal to a brute-force search, groups, reference sets, top_k,
the CNN and hash methods on photos, the result's formats, moves and their undoing."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps
from scipy.spatial.distance import cdist
from skimage import data
from sklearn.decomposition import PCA
from sklearn.pipeline import make_pipeline

from sklearn_imgretrieval import ImageHasher, ImagePreprocessor, find_duplicates
from sklearn_imgretrieval.duplicates import _find as duplicates_module
from sklearn_imgretrieval.duplicates import move_duplicates, undo_moves

ORIGINALS = ("astronaut", "coffee", "camera", "coins", "rocket")
SINGLES = ("chelsea", "moon", "page")
VARIANTS = ("half", "jpeg25", "bright", "mirror")


def _variant(photo, kind):
    if kind == "half":
        return photo.resize((photo.width // 2, photo.height // 2), Image.Resampling.LANCZOS)
    if kind == "bright":
        return ImageEnhance.Brightness(photo).enhance(1.2)
    if kind == "mirror":
        return ImageOps.mirror(photo)
    return photo  # jpeg25: saved at quality 25


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """5 photos with a half-size, a JPEG quality 25, a brighter and a mirrored copy each,
    and 3 photos without copies, as JPEG files; returns (folder, paths, group of each path)."""
    folder = tmp_path_factory.mktemp("photos")
    paths, groups = [], []
    for group, name in enumerate(ORIGINALS + SINGLES):
        photo = Image.fromarray(getattr(data, name)()).convert("RGB")
        photo.thumbnail((160, 160))
        photo.save(folder / f"{name}.jpg", quality=90)
        paths.append(str(folder / f"{name}.jpg"))
        groups.append(group)
        for kind in VARIANTS if name in ORIGINALS else ():
            _variant(photo, kind).save(folder / f"{name}_{kind}.jpg", quality=25 if kind == "jpeg25" else 90)
            paths.append(str(folder / f"{name}_{kind}.jpg"))
            groups.append(group)
    return folder, paths, np.array(groups)


def _brute_force_pairs(distance_matrix, max_distance):
    i, j = np.nonzero(np.triu(distance_matrix <= max_distance, k=1))
    return {(a, b): distance_matrix[a, b] for a, b in zip(i.tolist(), j.tolist())}


def test_pairs_are_those_of_a_brute_force_search(monkeypatch):
    """Packed codes (Hamming) and embeddings (cosine), against every pair computed
    directly; the radius search runs in small chunks of queries."""
    monkeypatch.setattr(duplicates_module, "_QUERY_CHUNK", 7)
    rng = np.random.default_rng(0)
    centres = rng.integers(0, 256, size=(10, 8), dtype=np.uint8)
    bits = np.unpackbits(centres[rng.integers(0, 10, 60)], axis=1)
    flips = rng.random(bits.shape) < 0.08
    codes = np.packbits(bits ^ flips, axis=1)
    found = find_duplicates(codes, method="precomputed", max_distance=9)
    assert found.metric == "hamming"
    hamming = np.unpackbits(codes[:, None, :] ^ codes[None, :, :], axis=2).sum(axis=2)
    expected = _brute_force_pairs(hamming, 9)
    assert 30 < len(expected) == len(found.pairs)
    assert {tuple(pair): d for pair, d in zip(found.pairs.tolist(), found.distances)} == expected
    assert np.all(np.diff(found.distances) >= 0) and np.all(found.pairs[:, 0] < found.pairs[:, 1])

    embeddings = rng.normal(size=(10, 16))[rng.integers(0, 10, 80)] + rng.normal(scale=0.3, size=(80, 16))
    found = find_duplicates(embeddings, method="precomputed", max_distance=0.05)
    expected = _brute_force_pairs(cdist(embeddings, embeddings, "cosine"), 0.05)
    assert len(expected) > 30
    assert set(map(tuple, found.pairs.tolist())) == set(expected)
    np.testing.assert_allclose(found.distances, [expected[tuple(p)] for p in found.pairs.tolist()], atol=1e-5)


def test_groups_are_connected_components():
    """a-b and b-c within the distance make one group even though a-c is not."""
    codes = np.array([[0b0000_0000], [0b0000_0001], [0b0000_0011], [0b1111_0000], [0b1111_1111]], dtype=np.uint8)
    found = find_duplicates(codes, method="precomputed", max_distance=1)
    assert [group.tolist() for group in found.groups] == [[0, 1, 2]]
    assert found.pairs.tolist() == [[0, 1], [1, 2]]
    np.testing.assert_array_equal(found.group_labels(), [0, 0, 0, -1, -1])
    assert found.to_dict() == {0: [1], 1: [0, 2], 2: [1], 3: [], 4: []}
    assert repr(found) == (
        "Duplicates(1 group of 3 items, 2 pairs; method='precomputed', metric='hamming', max_distance=1.0)"
    )


def test_top_k_and_reference_set():
    rng = np.random.default_rng(1)
    gallery = rng.normal(size=(40, 8))
    # top_k without a distance limit: each item's nearest other, as a brute-force search finds it
    found = find_duplicates(gallery, method="precomputed", max_distance=None, top_k=1)
    distances = cdist(gallery, gallery, "cosine")
    np.fill_diagonal(distances, np.inf)
    nearest = {(min(i, j), max(i, j)) for i, j in enumerate(distances.argmin(axis=1))}
    assert set(map(tuple, found.pairs.tolist())) == nearest
    # a query set against a reference set: only cross pairs, reference items numbered after the queries
    queries = gallery[[3, 17]] + 0.01
    found = find_duplicates(queries, reference=gallery, method="precomputed", max_distance=0.01)
    assert found.has_reference and found.n_queries == 2 and len(found.items) == 42
    assert found.pairs.tolist() == [[0, 2 + 3], [1, 2 + 17]] or found.pairs.tolist() == [[1, 2 + 17], [0, 2 + 3]]
    assert found.to_dict() == {0: [3], 1: [17]}
    np.testing.assert_array_equal(found.redundant(keep="first"), [0, 1])


def test_hashes_on_photos_find_copies_and_mirrors_with_robust(photo_folder):
    folder, paths, groups = photo_folder
    found = find_duplicates(paths, method="phash")
    assert found.max_distance == 10 and found.metric == "hamming"
    name = {path: path.rsplit("/", 1)[1] for path in paths}
    for group in found.groups:  # no false positive: every group within one photo's copies
        assert len(set(groups[group])) == 1
    pairs = {(name[paths[i]], name[paths[j]]) for i, j in found.pairs}
    for original in ORIGINALS:
        for kind in ("half", "jpeg25", "bright"):
            assert (f"{original}.jpg", f"{original}_{kind}.jpg") in pairs
        assert (f"{original}.jpg", f"{original}_mirror.jpg") not in pairs
    robust = find_duplicates(paths, method="phash", robust=True)
    robust_pairs = {(name[paths[i]], name[paths[j]]) for i, j in robust.pairs}
    assert all((f"{original}.jpg", f"{original}_mirror.jpg") in robust_pairs for original in ORIGINALS)
    # the result in imagededup's format: every path a key, its duplicates' paths
    as_dict = found.to_dict(scores=True)
    assert list(as_dict) == paths
    assert as_dict[str(folder / "chelsea.jpg")] == []
    assert str(folder / "coffee_half.jpg") in [path for path, _ in as_dict[str(folder / "coffee.jpg")]]


def test_result_formats(photo_folder):
    pd = pytest.importorskip("pandas", reason="pandas is not installed: to_frame needs it")
    _, paths, _ = photo_folder
    found = find_duplicates(paths, method="dhash")
    frame = found.to_frame()
    assert list(frame.columns) == ["group", "first", "second", "distance"]
    assert len(frame) == len(found.pairs) > 0
    assert frame["first"].iloc[0] == paths[found.pairs[0, 0]]
    assert isinstance(frame, pd.DataFrame) and frame["distance"].is_monotonic_increasing


def test_keep_largest_keeps_the_image_with_most_pixels(photo_folder):
    _, paths, _ = photo_folder
    found = find_duplicates(paths, method="phash")
    redundant = set(found.redundant(keep="largest").tolist())
    for group in found.groups:
        kept = [i for i in group if i not in redundant]
        assert len(kept) == 1
        sizes = {i: Image.open(paths[i]).size for i in group}
        assert sizes[kept[0]][0] * sizes[kept[0]][1] == max(w * h for w, h in sizes.values())
        assert not paths[kept[0]].endswith("_half.jpg")


def test_cnn_finds_crops_rotations_and_mirrors(photo_folder, monkeypatch):
    """The one run of the CNN in the tests, at input 96 (160 by default) to be quick."""
    monkeypatch.setattr(duplicates_module, "CNN_INPUT_SIZE", 96)
    _, paths, groups = photo_folder
    astronaut = Image.open(paths[0])
    extra = [astronaut.crop((10, 8, 150, 150)), astronaut.rotate(5, resample=Image.Resampling.BILINEAR)]
    images = [Image.open(path) for path in paths] + extra
    truth = np.r_[groups, 0, 0]
    found = find_duplicates(images, robust=True)
    assert found.metric == "cosine" and found.max_distance == 0.15
    labels = found.group_labels()
    for group in found.groups:
        assert len(set(truth[group])) == 1  # nothing from two photos in one group
    grouped = labels[truth == 0]
    assert (grouped == grouped[0]).all() and grouped[0] >= 0  # every astronaut copy in one group
    assert np.mean(labels[: len(paths)][groups < len(ORIGINALS)] >= 0) >= 0.9
    assert (labels[: len(paths)][groups >= len(ORIGINALS)] == -1).all()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"method": "phash", "max_distance": 65}, r"max_distance=65 is out of range: .* lies in \[0, 64\]"),
        ({"method": "phash", "hash_size": 16, "max_distance": -1}, r"lies in \[0, 256\].*default .* is 40"),
        ({"method": "cnn", "max_distance": 2.5}, r"cosine distance lies in \[0, 2\]. The default .* is 0.15"),
        ({"method": "dhash", "hash_size": 12}, "hash_size=12 is not a power of two"),
        ({"method": "phash", "hash_size": 128}, r"hash_size=128 is more than 64, the largest hash size"),
        ({"method": "cnn", "batch_size": 10**8}, r"batch_size=100,000,000 .* 1 GiB .* batch_size <= 3,495"),
        ({"method": "sha256"}, "method='sha256' is not a method"),
        ({"method": "precomputed"}, "max_distance='auto' is calibrated for method='cnn' and the hash methods only"),
        ({"method": "precomputed", "max_distance": 1, "robust": True}, "robust=True .* needs the images"),
        ({"method": "phash", "max_distance": None}, r"max_distance=None \(no limit\) needs top_k"),
        ({"method": "phash", "top_k": 0}, "top_k must be None or a positive integer"),
        ({"method": "phash", "metric": "euclidean"}, "metric='euclidean' cannot be used with method='phash'"),
    ],
)
def test_bad_options_are_refused_before_any_image_is_read(options, message):
    never_read = ["/no/such/file.jpg", "/no/such/other.jpg"]
    with pytest.raises(ValueError, match=message):
        find_duplicates(np.zeros((2, 8), np.uint8) if options["method"] == "precomputed" else never_read, **options)


def test_transformer_method_and_unreadable_files(photo_folder, tmp_path):
    _, paths, _ = photo_folder
    hasher = ImageHasher(method="phash").fit(paths)
    from_transformer = find_duplicates(paths, method=hasher, max_distance=10)
    from_name = find_duplicates(paths, method="phash")
    assert from_transformer.metric == "hamming"  # the hasher's codes are compared by bits
    np.testing.assert_array_equal(from_transformer.pairs, from_name.pairs)
    pipeline = make_pipeline(ImagePreprocessor(size=(32, 32), color_mode="grayscale"), PCA(4)).fit(paths)
    embedded = find_duplicates(paths, method=pipeline, max_distance=0.01)
    assert embedded.metric == "cosine" and embedded.items.tolist() == paths
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(ValueError, match=r"broken\.jpg: not an image"):
        find_duplicates([*paths[:3], str(tmp_path / "broken.jpg")], method="phash")


def test_move_duplicates_never_overwrites_and_can_be_undone(photo_folder, tmp_path):
    _, sources, _ = photo_folder
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    paths = []
    for i, source in enumerate(sources):
        paths.append(root / ("sub" if i % 2 else "") / Path(source).name)
        paths[-1].write_bytes(Path(source).read_bytes())
    found = find_duplicates([str(p) for p in paths], method="phash")
    target, log = tmp_path / "moved", tmp_path / "moved" / "log.json"
    with pytest.raises(ValueError, match="inside the scanned folder"):
        move_duplicates(found, root / "dups", root=root, log=log)
    # a file already where one would move: nothing moves
    victim = paths[found.redundant()[0]]
    (target / victim.relative_to(root)).parent.mkdir(parents=True)
    (target / victim.relative_to(root)).write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="nothing was moved"):
        move_duplicates(found, target, root=root, log=log)
    assert all(p.exists() for p in paths) and not log.exists()
    assert (target / victim.relative_to(root)).read_bytes() == b"precious"
    (target / victim.relative_to(root)).unlink()

    before = {p: p.read_bytes() for p in paths}
    planned = [str(paths[i].resolve()) for i in found.redundant()]
    moves = move_duplicates(found, target, root=root, log=log)
    assert [source for source, _ in moves] == planned and planned
    for source, destination in moves:
        assert not os.path.exists(source)
        assert Path(destination).read_bytes() == before[Path(source)]
        assert Path(destination).relative_to(target.resolve()) == Path(source).relative_to(root.resolve())
    record = json.loads(log.read_text())
    assert [(m["from"], m["to"]) for m in record["moves"]] == moves
    restored, skipped = undo_moves(log)
    assert len(restored) == len(moves) and skipped == []
    assert {p: p.read_bytes() for p in paths} == before
    assert undo_moves(log) == ([], [(destination, "a file is already at its old place") for _, destination in moves])
