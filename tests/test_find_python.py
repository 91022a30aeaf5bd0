"""scripts/find_python.sh finds an interpreter the way `.ci/run` does: a pyenv build that pyenv has not
selected (its shim fails) is still found, for PYTHON=python3.X as for the default search."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from harness import ROOT

SCRIPT = ROOT / "scripts" / "find_python.sh"


def fake_python(path: Path, version: str | None) -> Path:
    """An executable that answers the version query like python would, or fails like an unselected shim."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = f'echo "{version}"' if version else 'echo "pyenv: python: command not found" >&2; exit 127'
    path.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    path.chmod(0o755)
    return path


def find(tmp_path: Path, python: str | None) -> subprocess.CompletedProcess:
    """find_python.sh with a PATH holding only failing shims for 3.10-3.13, a pyenv whose 3.13 exists but
    is not selected, and a root of pyenv versions."""
    shims = tmp_path / "shims"
    for want in ("3.10", "3.11", "3.12", "3.13"):
        fake_python(shims / f"python{want}", None)
    build = tmp_path / "pyenv-root" / "versions" / "3.13.0"
    fake_python(build / "bin" / "python3.13", "3.13")
    pyenv = shims / "pyenv"
    script = f'#!/bin/sh\n[ "$1 $2" = "prefix 3.13" ] && echo "{build}" && exit 0\nexit 1\n'
    pyenv.write_text(script, encoding="utf-8")
    pyenv.chmod(0o755)
    tools = tmp_path / "tools"  # what the script runs besides pythons: no real python on this PATH
    tools.mkdir()
    for tool in ("sh", "sed"):
        (tools / tool).symlink_to(shutil.which(tool))
    env = {"PATH": f"{shims}{os.pathsep}{tools}", "PYENV_ROOT": str(tmp_path / "pyenv-root"), "HOME": str(tmp_path)}
    if python is not None:
        env["PYTHON"] = python
    return subprocess.run([str(tools / "sh"), str(SCRIPT), str(tmp_path / "no-venv")], env=env,
                          capture_output=True, text=True, timeout=60)


def test_python3_13_that_pyenv_has_not_selected_is_found_through_pyenv(tmp_path):
    done = find(tmp_path, "python3.13")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(tmp_path / "pyenv-root/versions/3.13.0/bin/python3.13"), "3.13"]


def test_the_default_search_finds_the_pyenv_build_too(tmp_path):
    done = find(tmp_path, None)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[1] == "3.13"


def test_a_python_that_is_nowhere_is_one_clear_line(tmp_path):
    done = find(tmp_path, "python3.12")
    assert done.returncode == 1
    assert done.stderr.splitlines()[0] == ("error: PYTHON=python3.12 does not run (not installed, or not found "
                                           "through pyenv)")
