"""Make variables reach commands as one argument each: no value a user passes runs as shell code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from harness import ROOT

INJECTIONS = ["main; touch {marker}", "main' ; touch {marker} ; '", "$(touch {marker})", "`touch {marker}`"]


@pytest.fixture
def venv(tmp_path) -> Path:
    """This test run's own venv under another name, its stamp current: `make setup` has nothing to do."""
    folder = tmp_path / "venv"
    folder.mkdir()
    (folder / "pyvenv.cfg").write_text((Path(sys.prefix) / "pyvenv.cfg").read_text(encoding="utf-8"),
                                       encoding="utf-8")
    for entry in Path(sys.prefix).iterdir():
        if entry.name not in ("pyvenv.cfg", ".installed"):
            (folder / entry.name).symlink_to(entry)
    (folder / ".installed").write_text("%d.%d\n" % sys.version_info[:2], encoding="utf-8")
    return folder


def make(venv: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), f"VENV={venv}", *args],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "MAKEFLAGS": ""})


@pytest.mark.parametrize("template", INJECTIONS)
def test_compare_takes_rev_as_one_argument(venv, tmp_path, template):
    marker = tmp_path / "ran"
    done = make(venv, "compare", f"REV={template.format(marker=marker)}")
    assert not marker.exists(), "REV ran as shell code"
    assert done.returncode != 0  # not a revision: compare fails, and so does make
    assert "is not a git branch, tag or commit here" in done.stderr


@pytest.mark.parametrize("target", ["repro", "evidence"])
@pytest.mark.parametrize("template", INJECTIONS)
def test_jobs_is_one_argument(venv, tmp_path, template, target):
    marker = tmp_path / "ran"
    done = make(venv, target, f"JOBS={template.format(marker=marker)}")
    assert not marker.exists(), "JOBS ran as shell code"
    assert done.returncode != 0 and "-j takes a number of lanes, 1 or more" in done.stderr


@pytest.mark.parametrize("variable", ["SHARD", "STAGES", "PIPELINE"])
@pytest.mark.parametrize("template", INJECTIONS)
def test_worker_variables_are_one_argument(venv, tmp_path, template, variable):
    marker = tmp_path / "ran"
    done = make(venv, "worker", "PIPELINE=nothing.yaml", f"{variable}={template.format(marker=marker)}")
    assert not marker.exists(), f"{variable} ran as shell code"
    assert done.returncode != 0 and "error: " in done.stderr  # the worker refused it, before any work


@pytest.mark.parametrize("template", INJECTIONS)
def test_python_and_venv_are_never_shell_code(tmp_path, template):
    marker = tmp_path / "ran"
    value = template.format(marker=marker)
    for assignment in (f"PYTHON={value}", f"VENV={tmp_path / 'v'}{value}"):
        subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "-n", assignment, "setup"],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "MAKEFLAGS": ""})
        assert not marker.exists(), f"{assignment} ran as shell code"
