"""Atomic outputs: the old file or folder, or the complete new one, never half of either."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from harness import ROOT

from stages.ground.atomic import atomic_dir, atomic_path, write_bytes, write_csv, write_json, write_text

CHILD_TIMEOUT_S = 60  # a child Python or git that writes a file or two


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


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_write_json_refuses_what_json_cannot_hold_and_keeps_the_old_file(tmp_path, value):
    """json.dumps would write a bare NaN: a file no JSON reader (nor `dvc metrics show`) accepts."""
    path = tmp_path / "m.json"
    write_json(path, {"old": 1})
    with pytest.raises(ValueError, match=f"^{path}: not written: Out of range float values are not JSON compliant"):
        write_json(path, {"test_accuracy": 0.98, "seeds": {"42": {"test_loss": value}}})
    assert json.loads(path.read_text()) == {"old": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


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


# Killed (SIGKILL: no finally runs) once its temporary folder and file hold data.
KILLED_MID_WRITE = """
import os, signal, sys
from pathlib import Path
from stages.ground.atomic import atomic_dir, atomic_path
root = Path(sys.argv[1])
with atomic_dir(root / "models" / "base") as folder, atomic_path(root / "reports" / "base.json") as tmp:
    (folder / "seed-42.keras").write_bytes(b"half")
    tmp.write_text("half")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_write_leaves_leftovers_that_the_next_write_of_the_same_output_removes(tmp_path):
    (tmp_path / "models" / "other").mkdir(parents=True)
    (tmp_path / "models" / ".other.keep.tmp").write_text("not base's")  # another output's: kept
    done = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(tmp_path)], env={"PYTHONPATH": str(ROOT)},
                          check=False, timeout=CHILD_TIMEOUT_S)
    assert done.returncode == -signal.SIGKILL
    leftovers = sorted(p.name for p in (tmp_path / "models").iterdir() if p.name.startswith(".base."))
    assert len(leftovers) == 1 and leftovers[0].endswith(".tmp")
    assert len([p for p in (tmp_path / "reports").iterdir() if p.name.startswith(".base.json.")]) == 1

    with atomic_dir(tmp_path / "models" / "base") as folder:
        (folder / "seed-42.keras").write_bytes(b"whole")
    write_text(tmp_path / "reports" / "base.json", "whole")

    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [".other.keep.tmp", "base", "other"]
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["base.json"]


def test_git_ignores_what_an_interrupted_write_leaves(tmp_path):
    # in a repository of its own with the project's .gitignore: the suite may run in a copy that is no checkout
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, timeout=CHILD_TIMEOUT_S)
    (tmp_path / ".gitignore").write_text((ROOT / ".gitignore").read_text())
    names = ["models/.base.k2j3.tmp", "models/logs/.base.x1.tmp", "reports/lr_range/.base.csv.abc.tmp",
             "models/.base.q9.old"]
    done = subprocess.run(["git", "check-ignore", "--no-index", *names, "models/base/seed-42.keras"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    assert done.stdout.split() == names


# --- a full disk or a missing permission names the output -------------------------------------------


def failing(monkeypatch, target, name: str, err: OSError) -> None:
    def fail(*args, **kwargs):
        raise err
    monkeypatch.setattr(target, name, fail)


@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative"])
@pytest.mark.parametrize("where", ["write", "mkstemp", "replace"])
def test_a_failed_write_names_the_output_not_its_temporary_file(tmp_path, monkeypatch, where, relative):
    import errno
    import pathlib
    import tempfile

    monkeypatch.chdir(tmp_path)
    path = Path("reports/m.json") if relative else tmp_path / "reports" / "m.json"
    if where == "write":  # a failed write() has no file name at all
        failing(monkeypatch, pathlib.Path, "write_bytes", OSError(errno.ENOSPC, "No space left on device"))
    elif where == "mkstemp":
        failing(monkeypatch, tempfile, "mkstemp",
                PermissionError(errno.EACCES, "Permission denied", str(path.parent / ".m.json.abc.tmp")))
    else:  # as os.replace reports it: the temporary file first
        def replace(src, dst):
            raise OSError(errno.EROFS, "Read-only file system", str(src), str(dst))
        monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError) as info:
        write_json(path, {"a": 1})
    assert info.value.filename == str(path)


def test_a_failed_write_inside_a_staged_folder_names_the_folder(tmp_path, monkeypatch):
    import errno

    import numpy as np

    failing(monkeypatch, np, "save", OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(OSError) as info, atomic_dir(tmp_path / "prepared") as staged:
        with atomic_path(staged / "x.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, np.zeros(3))
    assert info.value.filename == str(tmp_path / "prepared")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_other_errors_keep_their_file_name(tmp_path):
    (tmp_path / "reports").write_text("a file where a folder should be")
    with pytest.raises(OSError) as info:
        write_json(tmp_path / "reports" / "m.json", {})
    assert info.value.filename == str(tmp_path / "reports")
