"""Atomic outputs: the old file or folder, or the complete new one, never half of either."""

from __future__ import annotations

import json
import os
import stat

import pytest

from stages.lib.atomic import atomic_dir, atomic_path, write_bytes, write_csv, write_json, write_text


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_write_text(tmp_path):
    path = tmp_path / "deep" / "er" / "out.txt"  # parents are created
    write_text(path, "héllo\nworld\n")
    assert path.read_bytes() == "héllo\nworld\n".encode()
    write_text(path, "second")
    assert path.read_text() == "second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.txt"]


def test_write_bytes(tmp_path):
    write_bytes(tmp_path / "b.bin", b"\x00\xff")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\xff"


def test_write_json_is_sorted_indented_and_ends_with_a_newline(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"b": 1, "a": [1.5, None]})
    assert path.read_text() == '{\n  "a": [\n    1.5,\n    null\n  ],\n  "b": 1\n}\n'
    assert json.loads(path.read_text()) == {"a": [1.5, None], "b": 1}


def test_write_csv(tmp_path):
    path = tmp_path / "c.csv"
    write_csv(path, ("step", "lr", "note"), [(0, "0.001", "plain"), (1, 0.002, "with, comma")])
    assert path.read_bytes() == b'step,lr,note\n0,0.001,plain\n1,0.002,"with, comma"\n'


def test_atomic_path_replaces_only_on_success(tmp_path):
    path = tmp_path / "out.txt"
    with atomic_path(path) as tmp:
        assert tmp.parent == tmp_path and tmp != path
        tmp.write_text("new")
        assert not path.exists()  # nothing visible until the block ends
    assert path.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_exception_in_atomic_path_keeps_the_old_file(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(path) as tmp:
            tmp.write_text("half of the n")
            raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]  # no temp file left


def test_exception_in_atomic_path_creates_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(tmp_path / "new.txt") as tmp:
            tmp.write_text("partial")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_the_whole_folder(tmp_path):
    path = tmp_path / "prepared"
    path.mkdir()
    (path / "stale.npy").write_text("old")
    with atomic_dir(path) as tmp:
        (tmp / "x.npy").write_text("new")
        assert (path / "stale.npy").exists()  # the old folder stays until the block ends
    assert sorted(p.name for p in path.iterdir()) == ["x.npy"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]


def test_exception_in_atomic_dir_keeps_the_old_folder(tmp_path):
    path = tmp_path / "raw"
    path.mkdir()
    (path / "a").write_text("old a")
    (path / "sub").mkdir()
    (path / "sub" / "b").write_text("old b")
    with pytest.raises(ValueError):
        with atomic_dir(path) as tmp:
            (tmp / "a").write_text("new a")
            raise ValueError("download failed")
    assert (path / "a").read_text() == "old a"
    assert (path / "sub" / "b").read_text() == "old b"
    assert sorted(p.name for p in path.iterdir()) == ["a", "sub"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # no temp folder left


def test_exception_in_atomic_dir_creates_nothing(tmp_path):
    with pytest.raises(ValueError):
        with atomic_dir(tmp_path / "new") as tmp:
            (tmp / "f").write_text("x")
            raise ValueError
    assert list(tmp_path.iterdir()) == []


def test_files_get_umask_permissions_not_0600(tmp_path):
    expected = 0o666 & ~current_umask()
    if expected == 0o600:
        pytest.skip("umask 077 makes 0600 the normal mode")
    write_text(tmp_path / "t.txt", "x")
    with atomic_path(tmp_path / "p.bin") as tmp:
        tmp.write_bytes(b"x")
    assert mode(tmp_path / "t.txt") == expected
    assert mode(tmp_path / "p.bin") == expected


def test_folders_get_umask_permissions_not_0700(tmp_path):
    expected = 0o777 & ~current_umask()
    if expected == 0o700:
        pytest.skip("umask 077 makes 0700 the normal mode")
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "f").write_text("x")
    assert mode(tmp_path / "d") == expected
