"""The imgretrieval command, driven through subprocess as a user runs it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image


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
    model = tmp_path_factory.mktemp("model") / "photos.joblib"
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
        (["index", "no/such/folder", "-o", "m.joblib", "--embedder", "pca"], "is not a folder"),
        (["query", "no-model.joblib", "x.jpg"], "no model file"),
    ],
)
def test_user_errors_end_with_one_line_and_status_2(args, message, tmp_path):
    result = run(*args, check_status=2)
    assert result.stderr.startswith("imgretrieval: error:") and message in result.stderr
    assert "Traceback" not in result.stderr


def test_empty_folder_and_foreign_model_file(tmp_path, index_file):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run("index", empty, "-o", tmp_path / "m.joblib", "--embedder", "pca", check_status=2)
    assert "No image files" in result.stderr and "Traceback" not in result.stderr
    foreign = tmp_path / "foreign.joblib"
    foreign.write_bytes(b"this is not a pickle")
    result = run("query", foreign, index_file, check_status=2)
    assert "is not a model saved by `imgretrieval index`" in result.stderr
    result = run("query", index_file, tmp_path / "missing.jpg", check_status=2)
    assert "no such image file" in result.stderr


def test_help_of_every_command_has_an_example():
    for command in ("demo", "index", "query", "evaluate", "dedupe"):
        result = run(command, "--help")
        assert (
            "example:" in result.stdout or "examples:" in result.stdout
        ) and f"imgretrieval {command}" in result.stdout


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
    model = tmp_path / "lite0.joblib"
    run("index", photos, "-o", model, "--size", 64, 64)  # --embedder lite0 is the default
    query = photos / "stripes" / "stripes3.jpg"
    neighbours = json.loads(run("query", model, query, "-k", 4, "--json").stdout)[0]["neighbors"]
    assert neighbours[0]["path"] == str(query)
    assert neighbours[0]["distance"] == pytest.approx(0.0, abs=1e-5)
    assert sum("stripes" in n["path"] for n in neighbours) >= 3


def test_evaluate_on_a_folder_of_labelled_photos(photos):
    result = run("evaluate", "--dataset", photos, "--embedder", "pca", "--size", 24, 24)
    assert "warning" in result.stderr  # the unreadable files are named, not fatal
    assert [line.split()[0] for line in result.stdout.splitlines()[2:]] == ["raw", "pca"]


def test_demo_prints_the_table_and_writes_the_picture(tmp_path):
    picture = tmp_path / "demo.png"
    result = run("demo", "--epochs", 2, "--out", picture)
    rows = [line.split()[0] for line in result.stdout.splitlines()[2:5]]
    assert rows == ["raw", "PCA-32", "conv"]
    assert f"wrote {picture}" in result.stdout
    with Image.open(picture) as image:
        image.load()
        # six queries, each with eight neighbours: a wide grid
        assert image.format == "PNG" and image.width > image.height > 300


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
    assert summary.startswith("3 groups of duplicates: 9 of 11 images; removing all but the largest of each group (6")
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
    assert (folder / "coffee.jpg").is_file()  # the largest of its group stays
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
