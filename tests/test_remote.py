"""The sharing recipe of docs/comparing.md: a remote set to `verify` refuses an object whose bytes no longer match
its hash, so a flipped byte on a shared remote fails `dvc pull` instead of landing silently in the workspace."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness import DVC, ROOT

pytestmark = pytest.mark.slow  # real dvc commands

DATA = b"what a stage wrote\n" * 100


def dvc(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    return subprocess.run([DVC, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


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


PARTIAL = ".AbCdEfGhIjKlMnOpQrStUv.tmp"  # how DVC names a file it is still uploading (tmp_fname: 22 characters)


def prune_remote(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "scripts.prune_remote", *args], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=120)


def test_prune_remote_removes_only_partial_uploads_older_than_a_day(shared):
    repo, remote = shared
    day_and_more = time.time() - 24 * 3600 - 60
    (obj,) = [path for path in remote.rglob("*") if path.is_file()]
    old = [obj.parent / PARTIAL, remote / "runs" / "ab" / PARTIAL.replace("A", "B")]
    young = obj.parent / PARTIAL.replace("A", "C")
    other = [obj.parent / "notes.tmp", obj.parent / f"{PARTIAL}.keep", obj.parent / ".short.tmp"]
    for path in (*old, young, *other):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half an upload")
    for path in (*old, *other, obj):
        os.utime(path, (day_and_more, day_and_more))

    listed = prune_remote(repo, "--dry-run")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0] == "prune-remote: would remove 2 partial upload(s) older than a day from " \
                                            "remote 'shared'"
    assert sorted(listed.stdout.splitlines()[1:]) == sorted(f"  {path}" for path in old)
    assert all(path.exists() for path in old)

    done = prune_remote(repo)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "prune-remote: removed 2 partial upload(s) older than a day from remote " \
                                          "'shared'"
    assert not any(path.exists() for path in old)
    assert all(path.exists() for path in (young, *other, obj))  # nothing else, nothing younger
    assert clone_and_pull(repo, repo.parent / "colleague").returncode == 0


def test_prune_remote_refuses_a_remote_it_cannot_list(shared):
    repo, _ = shared
    assert dvc(repo, "remote", "add", "-f", "-d", "cloud", "s3://bucket/path").returncode == 0
    done = prune_remote(repo)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr == ("error: remote 'cloud' (s3://bucket/path) is neither a folder nor SSH: remove its partial "
                           "uploads (.<22 characters>.tmp) with that storage's own tools\n")
