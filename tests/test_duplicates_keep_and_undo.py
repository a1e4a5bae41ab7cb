"""Which image of a group stays (originals, not their edited copies), and undo logs as data, not orders."""

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sklearn_imgretrieval import find_duplicates
from sklearn_imgretrieval.cli import main
from sklearn_imgretrieval.duplicates import move_duplicates, undo_moves
from sklearn_imgretrieval.duplicates._keep import KEEP_RULES

_MAKE, _MODEL, _EXIF_IFD, _TAKEN = 0x010F, 0x0110, 0x8769, 0x9003


def _photo(seed):
    """A smooth photo-like picture (perceptual hashes of noise would not survive a re-encode)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:120, 0:160] / 40.0
    channels = [np.sin(xx * rng.uniform(0.5, 2) + rng.uniform(0, 3)) * np.cos(yy * rng.uniform(0.5, 2)) for _ in "rgb"]
    return Image.fromarray(((np.stack(channels, axis=-1) + 1) * 127).astype(np.uint8))


@pytest.fixture
def shoot(tmp_path):
    """Camera JPEGs in originals/ (EXIF make, model, date taken), and in edits/ copies made later:
    a PNG re-save, a mirror, a half-size PNG and a JPEG at quality 30."""
    originals, edits = tmp_path / "photos" / "originals", tmp_path / "photos" / "edits"
    originals.mkdir(parents=True)
    edits.mkdir()
    for n in range(3):
        photo = _photo(n)
        exif = Image.Exif()
        exif[_MAKE], exif[_MODEL] = "Canon", "EOS R5"
        exif[_EXIF_IFD] = {_TAKEN: f"2023:05:0{n + 1} 10:00:00"}  # as a dict: Pillow 10.0 saves no get_ifd edit
        photo.save(originals / f"IMG_{n}.jpg", quality=92, exif=exif)
        old = time.time() - 86400 * 30
        os.utime(originals / f"IMG_{n}.jpg", (old, old))
        copy = Image.open(originals / f"IMG_{n}.jpg")
        copy.save(edits / f"IMG_{n}_resave.png")
        copy.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(edits / f"IMG_{n}_mirror.png")
        copy.resize((80, 60)).save(edits / f"IMG_{n}_half.png")
        copy.save(edits / f"IMG_{n}_q30.jpg", quality=30)
    return tmp_path / "photos"


def test_the_original_is_kept_not_a_re_saved_copy(shoot):
    paths = sorted(str(p) for p in shoot.rglob("*.*"))
    found = find_duplicates(paths, method="phash", robust=True)  # robust: the mirrors join too
    assert len(found.groups) == 3 and all(len(group) == 5 for group in found.groups)
    kept = found.kept()
    assert [Path(found.items[i]).parent.name for i, _ in kept] == ["originals"] * 3
    assert all(reason == "camera metadata (Canon EOS R5)" for _, reason in kept)
    # the rule the library used before kept a full-size PNG copy (as many pixels, a larger file)
    largest = [Path(found.items[i]) for i, _ in found.kept(keep="largest")]
    assert all(path.suffix == ".png" and path.parent.name == "edits" for path in largest)
    assert not any("originals" in found.items[i] for i in found.redundant())


def test_the_index_and_the_keep_rule_read_the_same_camera_and_date(shoot):
    from sklearn_imgretrieval._image_io import read_facts
    from sklearn_imgretrieval.indexing._records import read_record

    originals = sorted((shoot / "originals").glob("*.jpg"))
    assert [read_record(path)["camera"] for path in originals] == ["Canon EOS R5"] * 3
    assert [read_record(path)["taken"] for path in originals] == [
        np.datetime64(f"2023-05-0{n + 1}T10:00:00") for n in range(3)
    ]
    for path in sorted(shoot.rglob("*.*")):
        record, facts = read_record(path), read_facts(path)
        assert record["camera"] == facts["camera"]
        assert str(record["taken"]) == (
            "NaT" if facts["taken"] is None else facts["taken"].replace(":", "-", 2).replace(" ", "T")
        )


def test_without_camera_metadata_the_earliest_then_the_camera_format_wins(tmp_path):
    photo = _photo(7)
    photo.save(tmp_path / "edited_copy.png")  # listed first, most bytes
    photo.save(tmp_path / "shot.jpg", quality=95)
    now = time.time()
    os.utime(tmp_path / "edited_copy.png", (now, now))
    os.utime(tmp_path / "shot.jpg", (now - 3600, now - 3600))
    found = find_duplicates(sorted(str(p) for p in tmp_path.iterdir()), method="phash")
    ((kept, reason),) = found.kept()
    assert Path(found.items[kept]).name == "shot.jpg" and reason == "oldest"
    os.utime(tmp_path / "shot.jpg", (now, now))  # the same time: JPEG, a camera's format, over a PNG
    ((kept, reason),) = found.kept()
    assert Path(found.items[kept]).name == "shot.jpg" and reason == "a camera's format (JPEG)"
    ((kept, _),) = found.kept(keep="shortest-path")
    assert Path(found.items[kept]).name == "shot.jpg"
    with pytest.raises(ValueError, match="keep must be one of 'original'"):
        found.kept(keep="biggest")


def test_the_command_offers_every_rule_and_says_why(shoot, tmp_path, capsys):
    assert main(["dedupe", str(shoot), "--method", "phash", "--robust"]) == 0
    out = capsys.readouterr().out
    assert out.count("kept for: camera metadata (Canon EOS R5)") == 3
    keep = [line.split()[-1] for line in out.splitlines() if line.strip().startswith("keep")]
    assert len(keep) == 3 and all("originals" in path for path in keep)
    for rule in KEEP_RULES:  # every rule the library has, the command takes
        assert main(["dedupe", str(shoot), "--method", "phash", "--keep", rule]) == 0
        assert f"--keep {rule}" in capsys.readouterr().out


def _moved(shoot, tmp_path):
    target, log = tmp_path / "moved", tmp_path / "moves.json"
    assert main(["dedupe", str(shoot), "--method", "phash", "--move-to", str(target), "--move-log", str(log)]) == 0
    return target, log


def test_undo_moves_back_only_what_the_log_moved(shoot, tmp_path, capsys):
    before = {p: p.read_bytes() for p in shoot.rglob("*") if p.is_file()}
    target, log = _moved(shoot, tmp_path)
    record = json.loads(log.read_text())
    assert record["version"] == 2 and all(len(m["blake2b"]) == 32 and m["size"] > 0 for m in record["moves"])
    capsys.readouterr()
    assert main(["dedupe", "--undo", str(log)]) == 0
    assert {p: p.read_bytes() for p in shoot.rglob("*") if p.is_file()} == before
    capsys.readouterr()
    assert main(["dedupe", "--undo", str(log)]) == 0  # twice: one line, nothing moved
    out, err = capsys.readouterr()
    assert out.strip().startswith("nothing left to move") and len(out.strip().splitlines()) == 1 and err == ""


def test_a_crafted_log_moves_no_unrelated_file(shoot, tmp_path):
    unrelated = tmp_path / "elsewhere" / "diary.txt"
    unrelated.parent.mkdir()
    unrelated.write_text("mine")
    free = tmp_path / "elsewhere" / "gone.txt"
    log = tmp_path / "crafted.json"
    entry = {"from": str(free), "to": str(unrelated), "size": 4, "blake2b": "0" * 32}
    log.write_text(json.dumps({
        "format": "sklearn-imgretrieval-moves", "version": 2, "root": str(tmp_path / "elsewhere"),
        "target": str(tmp_path), "moves": [entry],
    }))  # fmt: skip
    restored, skipped = undo_moves(log)
    assert restored == [] and skipped == [(str(unrelated), "changed since it was moved (size or checksum)")]
    assert unrelated.read_text() == "mine" and not free.exists()
    # a moved file edited afterwards stays where it is
    target, real_log = _moved(shoot, tmp_path / "run")
    moved = Path(json.loads(real_log.read_text())["moves"][0]["to"])
    moved.write_bytes(moved.read_bytes() + b"edited")
    restored, skipped = undo_moves(real_log)
    assert (str(moved), "changed since it was moved (size or checksum)") in skipped and moved.exists()


@pytest.mark.parametrize(
    "content, message",
    [
        ({"format": "sklearn-imgretrieval-moves", "version": 2, "root": "/a", "target": "/b"}, "no list of moves"),
        (
            {
                "format": "sklearn-imgretrieval-moves",
                "version": 2,
                "root": "/a",
                "target": "/b",
                "moves": [{"from": "/a/x", "to": "/b/x", "size": "12", "blake2b": "0" * 32}],
            },
            "move 0 is not",
        ),
        (
            {"format": "sklearn-imgretrieval-moves", "version": 1, "root": "/a", "target": "/b", "moves": []},
            "version 1",
        ),
        ({"format": "sklearn-imgretrieval-moves", "version": 2, "root": "a", "target": "/b", "moves": []}, "'root'"),
        ([1, 2], "is not a move log"),
    ],
)
def test_a_malformed_log_is_a_clear_error(tmp_path, capsys, content, message):
    log = tmp_path / "log.json"
    log.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message):
        undo_moves(log)
    assert main(["dedupe", "--undo", str(log)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("imgretrieval: error:") and "Traceback" not in err


def test_move_then_undo_in_python_round_trips_byte_for_byte(shoot, tmp_path):
    paths = sorted(str(p) for p in shoot.rglob("*.*"))
    before = {p: Path(p).read_bytes() for p in paths}
    found = find_duplicates(paths, method="phash")
    moves = move_duplicates(found, tmp_path / "moved", root=shoot, log=tmp_path / "log.json")
    assert moves and not any("originals" in source for source, _ in moves)
    restored, skipped = undo_moves(tmp_path / "log.json")
    assert len(restored) == len(moves) and skipped == []
    assert {p: Path(p).read_bytes() for p in paths} == before
