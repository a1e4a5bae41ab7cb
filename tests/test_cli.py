"""The imgretrieval command, driven through subprocess as a user runs it."""

import contextlib
import io
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
from PIL import Image

from sklearn_imgretrieval import cli
from sklearn_imgretrieval.cli._common import shown_path

pytestmark = pytest.mark.network  # the commands run in new processes, each importing TensorFlow for its embedder


def run(*args, check_status=0):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg")
    result = subprocess.run(
        [sys.executable, "-m", "sklearn_imgretrieval", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == check_status, result.stderr
    return result


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Generated JPEG and PNG photos in two class folders, plus a corrupt
    JPEG and a text file named like an image."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:64]
    for label, pattern in (("stripes", np.sin(xx / 3.0)), ("rings", np.sin(np.hypot(yy - 24, xx - 32) / 2.5))):
        (root / label).mkdir()
        for i in range(6):
            tint = rng.uniform(0.5, 1.0, 3)
            pixels = (pattern[..., None] * 0.5 + 0.5) * tint * 255 + rng.normal(0, 8, (48, 64, 3))
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
            image.save(root / label / f"{label}{i}.{'jpg' if i % 2 else 'png'}")
    (root / "rings" / "broken.jpg").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    (root / "stripes" / "notes.png").write_text("not an image")
    (root / "stripes" / "readme.txt").write_text("ignored: not an image extension")
    return root


@pytest.fixture(scope="module")
def index_file(photos, tmp_path_factory):
    model = tmp_path_factory.mktemp("model") / "photos.idx"
    result = run("index", photos, "-o", model, "--embedder", "pca", "--size", 24, 24)
    assert "indexed 12 images" in result.stdout
    # one warning that names both unreadable files
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1
    assert "broken.jpg" in warnings[0] and "notes.png" in warnings[0]
    return model


def test_query_json_finds_the_image_itself_first(photos, index_file):
    query = photos / "rings" / "rings2.png"
    result = run("query", index_file, query, "-k", 3, "--json")
    answers = json.loads(result.stdout)
    assert len(answers) == 1 and answers[0]["query"] == str(query)
    neighbours = answers[0]["neighbors"]
    assert len(neighbours) == 3
    assert neighbours[0]["path"] == str(query)
    assert neighbours[0]["distance"] == pytest.approx(0.0, abs=1e-5)
    assert all("rings" in n["path"] for n in neighbours)


def test_query_table_and_plot(photos, index_file, tmp_path):
    picture = tmp_path / "answers.png"
    queries = [photos / "stripes" / "stripes1.jpg", photos / "rings" / "rings4.png"]
    result = run("query", index_file, *queries, "-k", 4, "--plot", picture)
    assert result.stdout.count("query:") == 2
    with Image.open(picture) as image:
        image.load()
        assert image.format == "PNG"
        # 2 rows of 1 query + 4 neighbours: wider than tall
        assert image.width > image.height > 100


@pytest.mark.parametrize(
    "args, message",
    [
        (["index", "no/such/folder", "-o", "m.idx", "--embedder", "pca"], "is not a folder"),
        (["query", "no-index.idx", "x.jpg"], "no index file"),
        (["query", "m.idx"], "give at least one query image"),
    ],
)
def test_user_errors_end_with_one_line_and_status_2(args, message, tmp_path):
    result = run(*args, check_status=2)
    assert result.stderr.startswith("imgretrieval: error:") and message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["index", "photos", "-o", "m.idx", "--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
        (["index", "photos", "-o", "m.idx", "--size", "64", "-1"], "argument --size: must be at least 1, got -1"),
        (["query", "m.idx", "x.jpg", "-k", "0"], "argument -k: must be at least 1, got 0"),
        (["evaluate", "--epochs", "ten"], "argument --epochs: 'ten' is not an integer"),
    ],
)
def test_numbers_that_mean_nothing_are_refused(args, message):
    result = run(*args, check_status=2)
    assert message in result.stderr and "Traceback" not in result.stderr


def test_empty_folder_and_foreign_model_file(tmp_path, index_file):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run("index", empty, "-o", tmp_path / "m.idx", "--embedder", "pca", check_status=2)
    assert "No readable image files" in result.stderr and ".jpg, .jpeg, .png" in result.stderr
    assert "extensions=" not in result.stderr and "Traceback" not in result.stderr
    foreign = tmp_path / "foreign.idx"
    foreign.write_bytes(b"this is not an index")
    result = run("query", foreign, index_file, check_status=2)
    assert "was not written by sklearn_imgretrieval.save" in result.stderr
    result = run("query", index_file, tmp_path / "missing.jpg", check_status=2)
    assert "no such image file" in result.stderr


def test_help_of_every_command_has_an_example():
    for command in ("demo", "index", "query", "evaluate", "dedupe"):
        result = run(command, "--help")
        assert "example" in result.stdout and f"imgretrieval {command}" in result.stdout


def test_help_does_not_import_tensorflow():
    code = (
        "import sys; from sklearn_imgretrieval.cli import build_parser; build_parser(); "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_evaluate_prints_the_metrics_table(photos):
    result = run("evaluate", "--dataset", "digits", "--embedder", "pca")
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["embedding", "P@10", "mAP@100", "5-NN", "acc", "seconds"]
    raw, pca = lines[2].split(), lines[3].split()
    assert raw[:2] == ["raw", "pixels"] and pca[0] == "pca"
    assert 0.8 < float(pca[1]) <= 1.0


def test_index_with_the_default_pretrained_embedder(photos, tmp_path):
    model = tmp_path / "lite0.idx"
    # in this process (TensorFlow is started once per test worker); the query in a new one
    status, _, err = main("index", photos, "-o", model, "--size", 64, 64)  # lite0 is the default
    assert status == 0, err
    query = photos / "stripes" / "stripes3.jpg"
    neighbours = json.loads(run("query", model, query, "-k", 4, "--json").stdout)[0]["neighbors"]
    assert neighbours[0]["path"] == str(query)
    assert neighbours[0]["distance"] == pytest.approx(0.0, abs=1e-5)
    assert sum("stripes" in n["path"] for n in neighbours) >= 3
    _commands_on_a_saved_index_do_not_import_tensorflow(photos, model, tmp_path)


_WITHOUT_TENSORFLOW = """
import shutil, sys, time
from pathlib import Path
from starlette.testclient import TestClient
from sklearn_imgretrieval.cli import main
from sklearn_imgretrieval.serve import create_app

folder, index, work = map(Path, sys.argv[1:4])


def check(command, unwanted=("keras", "tensorflow", "skops")):
    loaded = sorted(name for name in unwanted if name in sys.modules)
    assert not loaded, f"{command} imported {loaded}"


assert main(["index", str(folder), "-o", str(index), "--update", "--size", "128", "128"]) == 2
check("index --update --size", unwanted=("keras", "tensorflow", "onnxruntime"))
assert main(["query", str(index), str(folder / "stripes" / "stripes3.jpg"), "-k", "2"]) == 0
check("query")
assert main(["dedupe", "--index", str(index), "--max-distance", "0.01"]) == 0
check("dedupe")
with TestClient(create_app(str(index)), base_url="http://127.0.0.1") as client:
    upload = {"image": ("q.jpg", (folder / "stripes" / "stripes3.jpg").read_bytes(), "image/jpeg")}
    for _ in range(600):  # while the network warms up, the server answers 503
        answer = client.post("/api/search?k=2", files=upload)
        if answer.status_code != 503:
            break
        time.sleep(0.1)
    assert answer.status_code == 200, answer.text
check("serve")
# another folder: every image is embedded; reading needs no skops, writing the updated index does
shutil.copytree(folder, work / "photos")
shutil.copy(index, work / "copy.idx")
assert main(["index", str(work / "photos"), "-o", str(work / "copy.idx"), "--update"]) == 0
check("index --update", unwanted=("keras", "tensorflow"))
print("ok")
"""


def _commands_on_a_saved_index_do_not_import_tensorflow(photos, index, tmp_path):
    """query, dedupe --index, index --update and serve on a Lite0 index run on ONNX Runtime alone."""
    env = dict(os.environ, MPLBACKEND="Agg")
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_TENSORFLOW, str(photos), str(index), str(tmp_path)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_evaluate_on_a_folder_of_labelled_photos(photos):
    result = run("evaluate", "--dataset", photos, "--embedder", "pca", "--size", 24, 24)
    assert "warning" in result.stderr  # the unreadable files are named, not fatal
    assert [line.split()[0] for line in result.stdout.splitlines()[2:]] == ["raw", "pca"]


def test_demo_finds_the_edited_copies_and_writes_the_picture(tmp_path):
    """In this process: the README's test runs `imgretrieval demo` as a command."""
    picture = tmp_path / "demo.png"
    status, printed, err = main("demo", "--out", picture)
    assert status == 0, err
    table = {line.split()[0]: line.split() for line in printed.splitlines()[2:4]}
    assert set(table) == {"raw", "EfficientNet-Lite0,"}
    precision = {name: float(row[-4]) for name, row in table.items()}
    assert precision["EfficientNet-Lite0,"] >= 0.95 > precision["raw"]  # the pretrained network finds the copies
    assert f"wrote {picture}" in printed
    with Image.open(picture) as image:
        image.load()
        # six queries, each with seven neighbours, by raw pixels and by the network side by side: two wide grids
        assert image.format == "PNG" and image.width > 1400 and image.height > 600


def test_a_missing_optional_dependency_is_one_line(index_file, photos, tmp_path):
    """Without matplotlib, --plot ends with the install hint, not a traceback."""
    code = (
        "import sys; sys.modules['matplotlib'] = None; "  # makes `import matplotlib` fail
        "from sklearn_imgretrieval.cli import main; "
        f"sys.exit(main(['query', {str(index_file)!r}, {str(photos / 'rings' / 'rings0.png')!r}, "
        f"'--plot', {str(tmp_path / 'x.png')!r}]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2
    assert "pip install matplotlib" in result.stderr and "Traceback" not in result.stderr


# ------------------------------------------------------- trust and safety
class _Payload:
    """Unpickling it creates ``marker``: what a hostile index file would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def main(*args):
    """The command in this process: (status, stdout, stderr), for the checks that need no fresh one."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main([str(arg) for arg in args])
    return status, out.getvalue(), err.getvalue()


def test_a_crafted_pickle_given_to_query_does_not_run(photos, tmp_path):
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "photos.joblib"
    joblib.dump({"format": "sklearn-imgretrieval-index", "pipeline": _Payload(marker)}, evil)
    result = run("query", evil, photos / "rings" / "rings0.png", check_status=2)
    assert "is a pickle (joblib) file" in result.stderr and "can run any code" in result.stderr
    assert "--trust-pickle" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()


def test_an_old_pickled_index_is_converted_when_trusted(photos, index_file, tmp_path):
    from sklearn_imgretrieval.indexing import load_index

    safe = load_index(index_file)
    old = tmp_path / "old.joblib"  # what `index` wrote before the safe format
    joblib.dump({"format": "sklearn-imgretrieval-index", "pipeline": safe.pipeline, "paths": list(safe.paths)}, old)
    query = photos / "rings" / "rings2.png"
    status, out, err = main("query", old, query, "-k", 2, "--trust-pickle", "--json")
    assert status == 0 and json.loads(out)[0]["neighbors"][0]["path"] == str(query)
    assert "--convert-to" in err  # says how to stop needing --trust-pickle
    converted = tmp_path / "photos.idx"
    status, _, err = main("query", old, "--trust-pickle", "--convert-to", converted)
    assert status == 0 and f"wrote {converted}" in err
    status, out, _ = main("query", converted, query, "-k", 2, "--json")
    assert status == 0 and json.loads(out)[0]["neighbors"][0]["path"] == str(query)


def _stalled_index(photos, output):
    """An `index` run whose write stops half-way until it is signalled (stdout says when)."""
    code = textwrap.dedent(
        f"""
        import signal, sys, time, types

        # Ctrl-C as from a terminal, even when the test runner was started with SIGINT ignored
        # (a background job of a script), which this child would otherwise inherit.
        signal.signal(signal.SIGINT, signal.default_int_handler)

        def stalled_dump(obj, file):
            file.write(b"PK\\x03\\x04" + bytes(4096))  # the start of a new index
            file.flush()
            print("writing", flush=True)
            time.sleep(600)

        # save() writes through skops.io.dump: a stand-in that stalls half-way (and imports nothing)
        skops, skops.io = types.ModuleType("skops"), types.ModuleType("skops.io")
        skops.io.dump = stalled_dump
        sys.modules.update({{"skops": skops, "skops.io": skops.io}})
        from sklearn_imgretrieval.cli import main
        sys.exit(main(["index", {str(photos)!r}, "-o", {str(output)!r}, "--embedder", "pca", "--size", "24", "24"]))
        """
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    assert child.stdout.readline() == "writing\n", child.stderr.read()
    return child


def test_sigkill_while_the_index_is_written_keeps_the_previous_index(photos, index_file, tmp_path):
    from sklearn_imgretrieval.indexing import load_index

    target = tmp_path / "photos.idx"
    shutil.copy(index_file, target)
    before = target.read_bytes()
    child = _stalled_index(photos, target)
    child.kill()  # SIGKILL: no clean-up runs
    child.communicate()
    assert target.read_bytes() == before
    assert len(load_index(target)) == 12


def test_ctrl_c_is_one_line_status_130_and_nothing_written(photos, index_file, tmp_path):
    target = tmp_path / "photos.idx"
    shutil.copy(index_file, target)
    child = _stalled_index(photos, target)
    child.send_signal(signal.SIGINT)
    try:
        _, stderr = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 130
    assert stderr.splitlines()[-1] == "imgretrieval: interrupted; nothing written" and "Traceback" not in stderr
    assert target.read_bytes() == index_file.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos.idx"]  # the temporary file is gone


def test_outputs_are_checked_before_any_work(photos, index_file, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    # the output is refused before the (missing) folder is even looked at
    status, _, err = main("index", "no/such/folder", "-o", tmp_path)
    assert status == 2 and f"{tmp_path} is a folder; give the name of a file" in err
    # and the picture before the (foreign) index is read
    status, _, err = main("query", a_file, photos / "rings" / "rings0.png", "--plot", a_file / "answers.png")
    assert status == 2 and "is a file, not a folder" in err
    status, _, err = main("query", index_file, photos / "rings" / "rings0.png", "--plot", tmp_path / "answers.xyz")
    assert status == 2 and "matplotlib cannot write .xyz" in err and ".png" in err


def test_errors_show_every_failing_file(photos, index_file):
    broken = photos / "rings" / "broken.jpg"
    status, _, err = main("query", index_file, broken, photos / "stripes" / "notes.png")
    lines = err.splitlines()
    assert status == 2 and lines[0] == "imgretrieval: error: Could not decode 2 of 2 images:"
    assert f"  {broken}: not an image Pillow can read" in lines


def test_too_few_images_for_what_was_asked(tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    Image.new("RGB", (16, 16), "red").save(folder / "only.png")
    for command in (["index", folder, "-o", tmp_path / "one.idx"], ["evaluate", "--dataset", folder]):
        status, _, err = main(*command, "--embedder", "pca")
        assert status == 2 and "needs at least 2" in err
    status, _, err = main("index", folder, "-o", tmp_path / "one.idx", "--embedder", "autoencoder")
    assert "--embedder autoencoder learns from the images themselves and needs at least 2" in err
    assert "validation_fraction" not in err and not (tmp_path / "one.idx").exists()


def test_sizes_that_cost_gigabytes_are_announced(capsys):
    from sklearn.decomposition import PCA

    from sklearn_imgretrieval.cli.index import _warn_about_cost

    _warn_about_cost(31, (5000, 5000, 1), PCA(31), chunk_size=256)
    warning = capsys.readouterr().err
    assert "a chunk of 31 images at 5000x5000 takes 2.9 GB of memory" in warning
    assert "PCA index file about 3.0 GB" in warning
    _warn_about_cost(100_000, (64, 64, 1), PCA(64), chunk_size=256)  # memory follows the chunk, not the folder
    assert capsys.readouterr().err == ""


def test_warnings_are_printed_but_other_packages_deprecation_notices_are_not(capsys):
    from sklearn_imgretrieval.cli._common import printed_warnings

    with printed_warnings():
        warnings.warn("builtin type SwigPyObject has no __module__ attribute", DeprecationWarning, stacklevel=1)
        warnings.warn("Skipped 1 unreadable image file(s)", UserWarning, stacklevel=1)
    assert capsys.readouterr().err == "imgretrieval: warning: Skipped 1 unreadable image file(s)\n"


def test_index_update_and_dedupe_name_an_unreadable_file_in_the_same_words(tmp_path):
    folder = tmp_path / "shots"
    (folder / "trip").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (24, 16), (40 * i, 90, 200 - 40 * i)).save(folder / "trip" / f"{i}.png")
    broken = folder / "trip" / "broken.jpg"
    broken.write_bytes(b"not an image")
    said = f"imgretrieval: warning: Skipped 1 unreadable image file(s): {broken} (not an image Pillow can read)"
    index = tmp_path / "shots.idx"
    messages = [
        main("index", folder, "-o", index, "--embedder", "pca", "--size", 16, 16)[2],
        main("index", folder, "-o", index, "--update")[2],
        main("dedupe", folder)[2],
    ]
    assert [said in message.splitlines() for message in messages] == [True] * 3, messages


def test_labels_come_from_the_top_folder_or_the_one_holding_each_image(tmp_path):
    from sklearn_imgretrieval.indexing import load_index

    folder = tmp_path / "shots"
    for i, name in enumerate(["cats/indoor/1.png", "cats/garden/2.png", "cats/3.png", "dogs/4.png"]):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (24, 16), (50 * i, 90, 200 - 40 * i)).save(folder / name)
    for labels, expected in (
        (None, ["cats", "cats", "cats", "dogs"]),
        ("parent", ["cats/garden", "cats/indoor", "cats", "dogs"]),
    ):
        index = tmp_path / f"{labels}.idx"
        chosen = ["--labels", labels] if labels else []
        status, _, err = main("index", folder, "-o", index, "--embedder", "pca", "--size", 8, 8, *chosen)
        assert status == 0, err
        loaded = load_index(index)
        by_file = dict(zip(loaded.paths, (loaded.class_names[label] for label in loaded.labels)))
        assert [
            by_file[str(folder / name)]
            for name in ("cats/garden/2.png", "cats/indoor/1.png", "cats/3.png", "dogs/4.png")
        ] == expected
    # an update takes the labels the index was built with, and refuses others
    status, _, err = main("index", folder, "-o", tmp_path / "parent.idx", "--update", "--labels", "top")
    assert status == 2 and "the index was built with --labels parent, not top" in err


def test_query_of_a_pca_index_does_not_import_keras(photos, index_file):
    code = (
        "import sys; from sklearn_imgretrieval.cli import main; "
        f"status = main(['query', {str(index_file)!r}, {str(photos / 'rings' / 'rings0.png')!r}]); "
        "assert status == 0 and 'keras' not in sys.modules and 'tensorflow' not in sys.modules, status"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_index_update_embeds_what_changed_and_keeps_the_settings(photos, index_file, tmp_path):
    import shutil

    folder = tmp_path / "photos"
    shutil.copytree(photos, folder)
    index = tmp_path / "photos.idx"
    run("index", folder, "-o", index, "--embedder", "pca", "--size", 24, 24, "--algorithm", "hnsw")
    shutil.copy(folder / "rings" / "rings0.png", folder / "rings" / "copy.png")
    (folder / "stripes" / "stripes0.png").unlink()
    result = run("index", folder, "-o", index, "--update")
    assert "1 added, 0 changed, 1 removed, 2 unreadable skipped; 12 images in all" in result.stdout
    assert "broken.jpg" in result.stderr and "notes.png" in result.stderr
    answers = json.loads(run("query", index, folder / "rings" / "copy.png", "-k", 2, "--json").stdout)
    assert {Path(n["path"]).name for n in answers[0]["neighbors"]} == {"copy.png", "rings0.png"}
    # The refusals come before any work: checked in this process, which is quicker than a new one
    for option, value in (("--embedder", "lite0"), ("--size", "32 32"), ("--algorithm", "ivf")):
        status, _, err = main("index", folder, "-o", index, "--update", option, *value.split())
        assert status == 2 and f"the index was built with {option}" in err
    status, _, err = main("index", folder, "-o", tmp_path / "none.idx", "--update")
    assert status == 2 and "--update needs the index to update" in err


def test_query_with_root_names_the_files_where_the_folder_moved(photos, index_file, tmp_path):
    answers = json.loads(run("query", index_file, photos / "rings" / "rings2.png", "-k", 1, "--json").stdout)
    assert answers[0]["neighbors"][0]["path"] == str(photos / "rings" / "rings2.png")  # absolute, from anywhere
    moved = json.loads(
        run("query", index_file, photos / "rings" / "rings2.png", "-k", 1, "--json", "--root", tmp_path).stdout
    )
    assert moved[0]["neighbors"][0]["path"] == str(tmp_path / "rings" / "rings2.png")


# ---------------------------------------------------------------- dedupe
def run_without_keras(*args, check_status=0):
    """The command as `run` gives it, and a check that Keras was never imported."""
    code = (
        "import sys; from sklearn_imgretrieval.cli import main; status = main(sys.argv[1:]); "
        "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules, 'Keras was imported'; "
        "sys.exit(status)"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg")
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env)
    assert result.returncode == check_status, result.stderr
    return result


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    """Three photos, each with a half-size and a JPEG quality 25 copy (one in a subfolder),
    two photos without copies, and a file that is not an image."""
    from skimage import data

    root = tmp_path_factory.mktemp("copies")
    (root / "old").mkdir()
    for name in ("astronaut", "coffee", "camera", "chelsea", "moon"):
        photo = Image.fromarray(getattr(data, name)()).convert("RGB")
        photo.thumbnail((200, 200))
        photo.save(root / f"{name}.jpg", quality=90)
        if name in ("astronaut", "coffee", "camera"):
            photo.resize((photo.width // 2, photo.height // 2)).save(root / "old" / f"{name}_small.jpg")
            photo.save(root / f"{name}_q25.jpg", quality=25)
    (root / "old" / "broken.jpg").write_bytes(b"\xff\xd8 not a whole JPEG")
    return root


def _snapshot(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_dedupe_prints_groups_and_writes_csv_json_plot(copies, tmp_path):
    out = {name: tmp_path / name for name in ("pairs.csv", "found.json", "groups.png")}
    result = run_without_keras(
        "dedupe", copies, "--method", "phash", "--csv", out["pairs.csv"], "--json", out["found.json"],
        "--plot", out["groups.png"],
    )  # fmt: skip
    summary = result.stdout.splitlines()[0]
    assert summary.startswith(
        "3 groups of duplicates: 9 of 11 images; removing all but the kept image of each group (6"
    )
    assert "broken.jpg" in result.stderr and "warning" in result.stderr  # reported, skipped
    groups = [line for line in result.stdout.splitlines() if line.startswith("group ")]
    assert len(groups) == 3
    keep_lines = [line.split()[-1] for line in result.stdout.splitlines() if line.strip().startswith("keep")]
    assert sorted(keep_lines) == sorted(str(copies / f"{n}.jpg") for n in ("astronaut", "coffee", "camera"))
    lines = out["pairs.csv"].read_text().splitlines()
    assert lines[0] == "group,first,second,distance" and len(lines) == 1 + 9
    record = json.loads(out["found.json"].read_text())
    assert record["max_distance"] == 10 and len(record["groups"]) == 3 and len(record["redundant"]) == 6
    assert record["duplicates"][str(copies / "moon.jpg")] == []
    with Image.open(out["groups.png"]) as picture:
        assert picture.format == "PNG" and picture.height > 200  # three rows of images


def test_dedupe_against_a_reference_folder(copies, tmp_path, capsys):
    from sklearn_imgretrieval.cli import main

    new = tmp_path / "new"
    new.mkdir()
    for name in ("coffee_q25.jpg", "moon.jpg"):
        (new / name).write_bytes((copies / name).read_bytes())
    Image.new("RGB", (64, 48), "orange").save(new / "orange.png")
    assert main(["dedupe", str(new), "--reference", str(copies), "--method", "dhash"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"2 of 3 images in {new} have duplicates in {copies}")
    assert f"ref  {copies / 'moon.jpg'}" in printed and f"dup  {new / 'moon.jpg'}" in printed
    # within the new folder alone there is nothing to move, and nothing is written
    assert main(["dedupe", str(new), "--method", "dhash", "--move-to", str(tmp_path / "moved")]) == 0
    assert capsys.readouterr().out.startswith("0 groups of duplicates: 0 of 3 images")
    assert not (tmp_path / "moved").exists()


def test_dedupe_moves_copies_and_undoes(copies, tmp_path, capsys):
    from sklearn_imgretrieval.cli import main

    folder = tmp_path / "photos"
    folder.mkdir()
    for path in copies.rglob("*.jpg"):
        (folder / path.relative_to(copies)).parent.mkdir(exist_ok=True)
        (folder / path.relative_to(copies)).write_bytes(path.read_bytes())
    before = _snapshot(folder)
    target, log = tmp_path / "duplicates", tmp_path / "moves.json"
    result = run_without_keras("dedupe", folder, "--method", "phash", "--move-to", target, "--move-log", log)
    assert f"moved 6 files to {target}" in result.stdout
    assert (target / "old" / "coffee_small.jpg").is_file() and not (folder / "old" / "coffee_small.jpg").exists()
    assert (folder / "coffee.jpg").is_file()  # the original (most pixels; copies were made later) stays
    assert len(json.loads(log.read_text())["moves"]) == 6
    assert main(["dedupe", "--undo", str(log)]) == 0
    assert "moved back 6 files" in capsys.readouterr().out
    assert _snapshot(folder) == before


def test_dedupe_refuses_bad_options_before_touching_anything(copies, tmp_path, capsys):
    from sklearn_imgretrieval.cli import main

    before = _snapshot(copies)
    cases = [
        (["--method", "phash", "--threshold", "70"], "max_distance=70.0 is out of range"),
        (["--max-distance", "-0.5"], "cosine distance lies in [0, 2]"),
        (["--method", "dhash", "--hash-size", "10"], "hash_size=10 is not a power of two"),
        (["--method", "phash", "--move-to", copies / "old" / "dups"], "inside the scanned folder"),
        (["--method", "phash", "--csv", tmp_path], "is a folder"),
    ]
    for options, message in cases:
        assert main(["dedupe", str(copies), *map(str, options)]) == 2
        assert message in capsys.readouterr().err
    assert _snapshot(copies) == before


# ----------------------------------------------------------- printed paths
@pytest.mark.parametrize(
    "name, shown",
    [
        ("plain.jpg", "plain.jpg"),
        ("a b.jpg", "'a b.jpg'"),
        ("it's.jpg", '"it\'s.jpg"'),
        ("it's $5.jpg", "'it'\\''s $5.jpg'"),
        ("a\nb.jpg", "'a'$'\\n''b.jpg'"),
        ("\nb.jpg", "''$'\\n''b.jpg'"),
        ("tail\n", "'tail'$'\\n'"),
        ("a\r\n\tb", "'a'$'\\r\\n\\t''b'"),
        ("red\x1b[31m.jpg", "'red'$'\\033''[31m.jpg'"),
        ("it's\nb", "'it'\\''s'$'\\n''b'"),
        ("bad\udcffbyte.jpg", "'bad'$'\\377''byte.jpg'"),  # a byte that is not UTF-8
        ("line\u2028sep", "'line'$'\\342\\200\\250''sep'"),
        ("café.jpg", "café.jpg"),
        ("#1.jpg", "'#1.jpg'"),
        ("no#1.jpg", "no#1.jpg"),
        ("", "''"),
    ],
)
def test_paths_are_shown_as_gnu_ls_quotes_them(name, shown):
    assert shown_path(name) == shown
    assert "\n" not in shown_path(name)
    if "\udcff" not in name:  # bash reads the shown name back as the name itself
        printed = subprocess.run(["bash", "-c", f"printf %s {shown}"], capture_output=True).stdout
        assert printed.decode() == name


@pytest.mark.skipif(
    b"GNU coreutils" not in subprocess.run(["ls", "--version"], capture_output=True).stdout,
    reason="compares with GNU ls, which this system's ls is not",
)
def test_paths_are_shown_exactly_as_gnu_ls_shows_them(tmp_path):
    names = [
        "plain.jpg", "a b.jpg", "it's.jpg", "it's a.jpg", "it's!", "a\nb.jpg", "\nlead.jpg", "tail\n", "a\n\nb",
        "a\n'b", "'\n'", "tab\there", "esc\x1b[31m", "del\x7f", "bell\a", "nel\u0085x", "café.jpg", "nbsp\u00a0x",
        "$x", "#hash", "mid#hash", "~tilde", "mid~tilde", "a=b", "x{y}", "x]y", "!bang", 'q"uote', "back\\slash",
        "a*b", "a?b", "semi;", "amp&", "pipe|", "lt<", "gt>", "paren(", "brack[", "caret^", "back`tick", "-lead",
        "bad\udcffbyte",
    ]  # fmt: skip
    for name in names:
        (tmp_path / name).touch()
    listed = subprocess.run(
        ["ls", "-1", "--quoting-style=shell-escape", tmp_path], capture_output=True, env={"LC_ALL": "C.UTF-8"}
    ).stdout
    assert sorted(listed.decode("utf-8", "surrogateescape").splitlines()) == sorted(map(shown_path, names))


def test_a_file_name_with_a_newline_is_one_line_of_the_query_table(photos, tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(photos / "rings", folder)
    (folder / "rings1.jpg").rename(folder / "rings\n1.jpg")
    index = tmp_path / "rings.idx"
    assert main("index", folder, "-o", index, "--embedder", "pca", "--dims", 2, "--size", 16, 16)[0] == 0
    status, out, _ = main("query", index, folder / "rings\n1.jpg", "-k", 2)
    assert status == 0
    lines = out.splitlines()
    assert len(lines) == 4  # the query, the header and its 2 answers (6 lines when names broke the table)
    shown = shown_path(folder / "rings\n1.jpg")
    assert lines[0] == f"query: {shown}" and lines[2].endswith(f"  {shown}")


def test_a_file_name_with_a_newline_is_one_line_of_dedupe_groups(copies, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("astronaut.jpg", "astronaut_q25.jpg", "moon.jpg"):
        shutil.copy(copies / name, folder / name.replace("_", "\n_"))
    status, out, _ = main("dedupe", folder, "--method", "phash")
    assert status == 0
    copy = folder / "astronaut\n_q25.jpg"
    lines = out.splitlines()
    assert lines[1].startswith("group 0 (2 images), kept for: ") and len(lines) == 4  # 5 when names broke the listing
    assert sorted(lines[2:]) == [f"  dup  {shown_path(copy)}", f"  keep {shown_path(folder / 'astronaut.jpg')}"]
    assert "'$'\\n''_q25.jpg'" in out


def test_dedupe_says_which_groups_its_plot_leaves_out(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    noise = np.random.default_rng(0).integers(0, 256, size=(12, 32, 32), dtype=np.uint8)
    for number, pixels in enumerate(noise):
        for copy in ("a", "b"):
            Image.fromarray(pixels).save(folder / f"{number}{copy}.png")
    plot = tmp_path / "groups.png"
    status, out, err = main("dedupe", folder, "--method", "phash", "--plot", plot)
    assert status == 0 and out.startswith("12 groups of duplicates") and plot.is_file()
    # the picture draws 10 of the 12 groups: once "wrote groups.png" and nothing more
    assert f"wrote {plot}, showing the first 10 of 12 groups of duplicates (2 not drawn)\n" in err


def test_dedupe_of_a_sharded_index_finds_pairs_across_shards(copies, tmp_path):
    index, one = tmp_path / "copies.idx", tmp_path / "one.idx"
    run("index", copies, "-o", index, "--shards", 2)
    run("index", copies, "-o", one)
    result = run("dedupe", "--index", index, "--csv", tmp_path / "pairs.csv")
    assert result.stdout.startswith("3 groups of duplicates: 9 of 11 images")
    keep_lines = [line.split()[-1] for line in result.stdout.splitlines() if line.strip().startswith("keep")]
    assert sorted(keep_lines) == sorted(str(copies / f"{n}.jpg") for n in ("astronaut", "coffee", "camera"))
    # 11 rows in 2 shards: some pairs lie across shards; all are found, as in one index
    run("dedupe", "--index", one, "--csv", tmp_path / "one.csv")
    pairs = sorted((tmp_path / "pairs.csv").read_text().splitlines()[1:])
    assert len(pairs) >= 3 and pairs == sorted((tmp_path / "one.csv").read_text().splitlines()[1:])
    # an output naming an indexed image is refused, and nothing is written
    before = (copies / "moon.jpg").read_bytes()
    refused = run("dedupe", "--index", index, "--csv", copies / "moon.jpg", check_status=2)
    assert "which this command reads" in refused.stderr and (copies / "moon.jpg").read_bytes() == before
    for args, message in (
        (["--method", "phash"], "--method and --robust do not apply"),
        ([copies], "give one or the other"),
    ):
        assert message in run("dedupe", "--index", index, *args, check_status=2).stderr


def test_metadata_joined_filtered_and_written(photos, tmp_path):
    table = tmp_path / "photos.csv"
    table.write_text("path,stars,shot\nrings/rings0.png,5,2023-06-01\nstripes/stripes1.jpg,2,2021-01-05\n"
                     "rings/rings2.png,4,2023-07-09\nstripes/stripes3.jpg,4,2022-03-01\n")  # fmt: skip
    index = tmp_path / "photos.idx"
    status, _, err = main("index", photos, "-o", index, "--embedder", "pca", "--size", 16, 16, "--metadata", table)
    assert status == 0, err
    query = photos / "rings" / "rings0.png"
    status, out, err = main("query", index, query, "-k", 5, "--where", "shot >= '2022-01-01' and stars > 3",
                            "--csv", tmp_path / "answers.csv", "--json")  # fmt: skip
    assert status == 0, err
    answers = json.loads(out)[0]["neighbors"]
    # 5 asked, 3 match: every match, and nothing else
    assert sorted(a["path"] for a in answers) == sorted(
        str(photos / p) for p in ("rings/rings0.png", "rings/rings2.png", "stripes/stripes3.jpg")
    )
    assert answers[0]["path"] == str(query) and answers[0]["stars"] == 5 and answers[0]["shot"].startswith("2023-06-01")
    assert {"id", "folder", "width", "height", "file_size", "modified", "label"} <= set(answers[0])
    rows = (tmp_path / "answers.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 and rows[0].startswith("query,rank,distance,id,path,folder")
    status, out, _ = main("query", index, query, "-k", 2, "--where", "label == 'stripes'", "--columns", "stars,width")
    assert status == 0 and out.splitlines()[1].split() == ["rank", "distance", "id", "stars", "width", "path"]
    assert all("stripes" in line.split()[-1] for line in out.splitlines()[2:])
    for args, message in (
        (["--where", "__import__('os').system('true')"], "function calls are not allowed"),
        (["--where", "colour == 'red'"], "colour"),
        (["--where", "folder == 'nowhere'"], "no indexed image matches"),
        (["--columns", "colour"], "no column colour"),
    ):
        status, _, err = main("query", index, query, *args)
        assert status == 2 and message in err, err
    # dedupe takes the same filters, on a folder (read from headers) and on an index
    status, _, err = main("dedupe", photos, "--method", "phash", "--where", "label == 'rings'")
    assert status == 0 and "--where selects 6 images of 12" in err
    status, out, err = main("dedupe", "--index", index, "--max-distance", "2", "--where", "stars >= 4")
    assert status == 0, err
    assert "of 3 images" in out.splitlines()[0]
