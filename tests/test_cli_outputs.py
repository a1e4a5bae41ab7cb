"""No command overwrites what it reads: every output is checked against the inputs before any work.

Each command runs in this process (``cli.main``) on a PCA index or perceptual
hashes, so no network is built.
"""

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from sklearn_imgretrieval import cli


def main(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main([str(arg) for arg in args])
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for label in ("cats", "dogs"):
        (root / label).mkdir()
        for i in range(1, 5):
            pixels = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.{'jpg' if i % 2 else 'png'}")
    return root


@pytest.fixture(scope="module")
def index_file(photos, tmp_path_factory):
    path = tmp_path_factory.mktemp("index") / "photos.idx"
    status, _, err = main("index", photos, "-o", path, "--embedder", "pca", "--size", 16, 16, "--dims", 4)
    assert status == 0, err
    return path


def _contents(*places):
    """Every file under ``places`` (folders or files) with its bytes."""
    files = {}
    for place in map(Path, places):
        for path in [place] if place.is_file() else sorted(p for p in place.rglob("*") if p.is_file()):
            files[path] = path.read_bytes()
    return files


def _refused(status, err, *names):
    lines = err.strip().splitlines()
    return status == 2 and len(lines) == 1 and all(str(name) in lines[0] for name in names)


@pytest.mark.parametrize(
    "command",
    [
        lambda p, idx, out: ["index", p, "-o", p / "cats" / "1.jpg", "--embedder", "pca"],
        lambda p, idx, out: ["index", p, "-o", p / "dogs" / "new.png", "--embedder", "pca"],
        lambda p, idx, out: ["query", idx, p / "cats" / "2.png", "--plot", p / "cats" / "2.png"],
        lambda p, idx, out: ["query", idx, p / "cats" / "2.png", "--convert-to", idx],
        lambda p, idx, out: ["query", idx, p / "cats" / "2.png", "--plot", idx.with_suffix(".idx")],
        lambda p, idx, out: ["dedupe", p, "--method", "phash", "--csv", p / "cats" / "2.png"],
        lambda p, idx, out: ["dedupe", p, "--method", "phash", "--json", p / "cats" / "3.jpg"],
        lambda p, idx, out: ["dedupe", p, "--method", "phash", "--plot", p / "dogs" / "dups.png"],
        lambda p, idx, out: ["dedupe", p, "--method", "phash", "--move-to", out, "--move-log", p / "dogs" / "3.jpg"],
    ],
    ids=[
        "index-o-photo",
        "index-o-new-image-in-folder",
        "query-plot-query",
        "query-convert-to-index",
        "query-plot-index",
        "dedupe-csv-photo",
        "dedupe-json-photo",
        "dedupe-plot-in-folder",
        "dedupe-move-log-photo",
    ],
)
def test_an_output_naming_an_input_is_refused_before_any_work(photos, index_file, tmp_path, command):
    args = command(photos, index_file, tmp_path / "moved")
    before = _contents(photos, index_file)
    status, out, err = main(*args)
    output = next(
        arg
        for arg, option in zip(args[1:], args)
        if option in ("-o", "--plot", "--csv", "--json", "--move-log", "--convert-to")
    )
    assert _refused(status, err, output), err
    assert "nothing was written" in err and "Traceback" not in err and out == ""
    assert _contents(photos, index_file) == before
    assert not (tmp_path / "moved").exists()


def test_index_update_replaces_the_index_it_reads(photos, index_file, tmp_path):
    # --update's output is its input by design: it is replaced atomically, not refused
    copy = tmp_path / "photos.idx"
    copy.write_bytes(index_file.read_bytes())
    status, out, err = main("index", photos, "-o", copy, "--update")
    assert status == 0 and "updated" in out, err


OPTIONS = {
    "index": ["-o"],
    "query": ["--plot", "--convert-to"],
    "dedupe": ["--csv", "--json", "--plot", "--move-log"],
}


@st.composite
def command_with_output(draw):
    command = draw(st.sampled_from(sorted(OPTIONS)))
    option = draw(st.sampled_from(OPTIONS[command]))
    where = draw(st.sampled_from(["existing photo", "new image in folder", "the index", "a query", "outside"]))
    return command, option, where


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=command_with_output())
def test_no_output_option_ever_changes_an_input(photos, index_file, tmp_path_factory, case):
    command, option, where = case
    work = tmp_path_factory.mktemp("example")
    index = work / "photos.idx"
    index.write_bytes(index_file.read_bytes())
    query = photos / "dogs" / "2.png"
    suffix = {"--csv": ".csv", "--json": ".json", "--move-log": ".json", "-o": ".idx", "--convert-to": ".idx"}
    target = {
        "existing photo": photos / "cats" / "1.jpg",
        "new image in folder": photos / "dogs" / "made.png",
        "the index": index,
        "a query": query,
        "outside": work / f"out{suffix.get(option, '.png')}",
    }[where]
    reads = {"index": [], "query": [index, query], "dedupe": []}[command]
    scans = {"index": [photos], "query": [], "dedupe": [photos]}[command]
    names_an_input = target in reads or (target.suffix in (".jpg", ".png") and photos in target.parents and scans)
    args = {
        "index": ["index", photos, "--embedder", "pca", "--size", 16, 16, "--dims", 4],
        "query": ["query", index, query, "-k", 2],
        "dedupe": ["dedupe", photos, "--method", "phash"],
    }[command]
    if option == "--move-log":
        args += ["--move-to", work / "moved"]
    before = _contents(photos, index)
    try:
        status, _, err = main(*args, option, target)
        if names_an_input:
            assert _refused(status, err, target), err
        for path, data in before.items():  # only an output that names no input may change
            assert path.read_bytes() == data or (path == target and status == 0 and not names_an_input)
    finally:  # an image written into the folder (allowed for query, which reads no folder) goes
        (photos / "dogs" / "made.png").unlink(missing_ok=True)


def test_a_move_log_that_names_a_photo_is_refused_in_python_too(photos, tmp_path):
    from sklearn_imgretrieval import find_duplicates
    from sklearn_imgretrieval.duplicates import move_duplicates

    paths = sorted(str(p) for p in photos.rglob("*.png"))
    found = find_duplicates(paths, method="phash", max_distance=64)  # everything pairs: a group to move
    photo = photos / "cats" / "2.png"
    before = photo.read_bytes()
    with pytest.raises(ValueError, match="2.png"):
        move_duplicates(found, tmp_path / "moved", root=photos, log=photo)
    assert photo.read_bytes() == before and not (tmp_path / "moved").exists()
