"""Atomic writes and output-path checks: the user's old file survives any failure."""

import os
import stat

import pytest

from sklearn_imgretrieval._files import atomic_write, check_output_path


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_replaces_the_file_when_the_block_succeeds(tmp_path):
    target = tmp_path / "new" / "folder" / "out.bin"
    with atomic_write(target) as file:
        file.write(b"first")
        assert not target.exists()  # nothing at the target until the block ends
    assert target.read_bytes() == b"first"
    with atomic_write(target, "w") as file:
        file.write("second, in text: é")
    assert target.read_text(encoding="utf-8") == "second, in text: é"
    assert _leftovers(target.parent) == []


def test_a_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "index.idx"
    target.write_bytes(b"the good old index")
    for error in (RuntimeError("disk full"), KeyboardInterrupt()):
        with pytest.raises(type(error)):
            with atomic_write(target) as file:
                file.write(b"half of a new ind")
                raise error
        assert target.read_bytes() == b"the good old index"
        assert _leftovers(tmp_path) == []


def test_permissions_of_an_existing_file_are_kept(tmp_path):
    target = tmp_path / "shared.bin"
    target.write_bytes(b"old")
    target.chmod(0o640)
    with atomic_write(target) as file:
        file.write(b"new")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_a_symbolic_link_is_followed_and_kept(tmp_path):
    real = tmp_path / "real.bin"
    real.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(real)
    with atomic_write(link) as file:
        file.write(b"new")
    assert link.is_symlink() and real.read_bytes() == b"new"


def test_check_output_path_refuses_what_cannot_be_written(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder; give the name of a file"):
        check_output_path(tmp_path)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        check_output_path(a_file / "sub" / "out.idx")
    assert check_output_path(tmp_path / "not" / "yet" / "there.idx") == tmp_path / "not" / "yet" / "there.idx"
    assert not (tmp_path / "not").exists()  # checking creates nothing


def test_check_output_path_refuses_read_only_places(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    read_only = tmp_path / "read_only.idx"
    read_only.write_text("keep me")
    # As the permissions say (root, who runs some CI, may write anyway):
    monkeypatch.setattr(os, "access", lambda path, mode: os.fspath(path) not in (str(locked), str(read_only)))
    with pytest.raises(PermissionError, match="no permission to write in"):
        check_output_path(locked / "out.idx")
    with pytest.raises(PermissionError, match="no permission to create .*new.* in"):
        check_output_path(locked / "new" / "out.idx")
    with pytest.raises(PermissionError, match="is read-only"):
        check_output_path(read_only)


def test_atomic_write_needs_a_writing_mode(tmp_path):
    with pytest.raises(ValueError, match="mode must contain 'w'"):
        with atomic_write(tmp_path / "x", "rb"):
            pass
