"""The sharing recipe of docs/comparing.md: a remote set to `verify` refuses an object whose bytes no longer match
its hash, so a flipped byte on a shared remote fails `dvc pull` instead of landing silently in the workspace."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # real dvc commands

DATA = b"what a stage wrote\n" * 100


def dvc(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    return subprocess.run(["dvc", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True, timeout=60)


@pytest.fixture
def shared(tmp_path) -> tuple[Path, Path]:
    """A repo whose tracked file was pushed to a folder remote set up as docs/comparing.md says; and the remote."""
    repo, remote = tmp_path / "repo", tmp_path / "remote"
    repo.mkdir()
    git(repo, "init", "-q")
    assert dvc(repo, "init", "-q").returncode == 0
    (repo / "data.bin").write_bytes(DATA)
    assert dvc(repo, "add", "-q", "data.bin").returncode == 0
    for args in (("remote", "add", "-d", "shared", str(remote)), ("remote", "modify", "shared", "verify", "true")):
        assert dvc(repo, *args).returncode == 0
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "data and remote")
    assert dvc(repo, "push", "-q").returncode == 0
    return repo, remote


def clone_and_pull(repo: Path, where: Path) -> subprocess.CompletedProcess:
    git(repo.parent, "clone", "-q", str(repo), str(where))
    return dvc(where, "pull")


def test_an_intact_remote_pulls(shared, tmp_path):
    repo, _ = shared
    done = clone_and_pull(repo, tmp_path / "colleague")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "colleague" / "data.bin").read_bytes() == DATA


def test_a_flipped_byte_on_the_remote_is_refused(shared, tmp_path):
    repo, remote = shared
    (obj,) = [path for path in remote.rglob("*") if path.is_file()]
    damaged = bytearray(obj.read_bytes())
    damaged[0] ^= 0x01
    obj.chmod(0o644)
    obj.write_bytes(bytes(damaged))

    done = clone_and_pull(repo, tmp_path / "colleague")

    assert done.returncode != 0
    assert not (tmp_path / "colleague" / "data.bin").exists()  # nothing damaged reached the workspace
