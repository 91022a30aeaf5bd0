"""Make variables reach commands as one argument each: no value a user passes runs as shell code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from harness import DVC, ROOT, as_after_make_setup, tiny_mnist, tiny_params, tiny_project, write_idx_folder

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
    assert done.returncode != 0 and "-j (make's JOBS) takes a number of lanes, 1 or more" in done.stderr


@pytest.mark.parametrize("variable", ["SHARD", "STAGES", "PIPELINE"])
@pytest.mark.parametrize("template", INJECTIONS)
def test_worker_variables_are_one_argument(venv, tmp_path, template, variable):
    marker = tmp_path / "ran"
    done = make(venv, "worker", "PIPELINE=nothing.yaml", f"{variable}={template.format(marker=marker)}")
    assert not marker.exists(), f"{variable} ran as shell code"
    assert done.returncode != 0 and "error: " in done.stderr  # the worker refused it, before any work


@pytest.mark.parametrize("target, variable", [*(("slurm", v) for v in ("WORKERS", "CPUS", "ONLY", "PIPELINE")),
                                               ("slurm-status", "JOB")])
@pytest.mark.parametrize("template", INJECTIONS)
def test_slurm_variables_are_one_argument(venv, tmp_path, template, target, variable):
    marker = tmp_path / "ran"
    # make reads `$(touch ...)` as a variable, empty: an empty ONLY means every share, so WORKERS=0 there keeps
    # anything from being submitted.
    workers = {"WORKERS": [], "JOB": [], "ONLY": ["WORKERS=0"]}.get(variable, ["WORKERS=2"])
    done = make(venv, target, *workers, f"{variable}={template.format(marker=marker)}")
    assert not marker.exists(), f"{variable} ran as shell code"
    if not (variable == "JOB" and template.startswith("$(")):  # an empty JOB: the last submission's status, if any
        assert done.returncode != 0 and "error: " in done.stderr  # refused before anything is submitted


@pytest.mark.parametrize("template", INJECTIONS)
def test_python_and_venv_are_never_shell_code(tmp_path, template):
    marker = tmp_path / "ran"
    value = template.format(marker=marker)
    for assignment in (f"PYTHON={value}", f"VENV={tmp_path / 'v'}{value}"):
        subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "-n", assignment, "setup"],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "MAKEFLAGS": ""})
        assert not marker.exists(), f"{assignment} ran as shell code"


def tiny_with_an_arch_named(tmp_path: Path, name: str):
    sums = write_idx_folder(tmp_path / "mnist", tiny_mnist())
    p = tiny_project(tmp_path, tiny_params(tmp_path / "mnist", sums,
                                           archs={"base": {"hidden": [8]}, name: {"hidden": [8]}}))
    as_after_make_setup(p)
    return p


@pytest.mark.slow
def test_under_plain_dvc_repro_an_arch_name_is_one_quoted_argument(tmp_path):
    """Where DVC is started without make, dvc.yaml quotes each name: the stage, not a shell, refuses it."""
    marker = tmp_path / "ran"
    p = tiny_with_an_arch_named(tmp_path, f"x;touch {marker};$(touch {marker})")
    done = p.call(DVC, "repro", f"lr_range@x;touch {marker};$(touch {marker})")
    assert not marker.exists(), "an arch name ran as shell code"
    assert done.returncode != 0 and "unsafe architecture name" in done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_an_arch_name_in_params_never_reaches_dvcs_shell(tmp_path, jobs):
    """DVC passes `python -m stages.lr_range ${key}` to a shell: make checks params.yaml whole before DVC reads it,
    with one line naming the key."""
    marker = tmp_path / "ran"
    p = tiny_with_an_arch_named(tmp_path, f"x;touch {marker}")
    done = p.call("make", "--no-print-directory", "repro", f"JOBS={jobs}")
    assert not marker.exists(), "an arch name ran as shell code"
    assert done.returncode == 2
    lines = done.stdout.splitlines() + done.stderr.splitlines()
    errors = [line for line in lines if line.startswith("params.yaml: ")]
    assert len(errors) == 1 and errors[0].startswith("params.yaml: archs.x;touch ") and (
        ": unsafe architecture name (got 'x;touch " in errors[0]), lines
    assert not any("Running stage" in line for line in lines)


@pytest.mark.slow
@pytest.mark.parametrize("change, line", [
    (lambda text: text.replace("seeds:\n  - 1\n  - 2\n  - 3\n  - 4\n  - 5\n", "seeds: '1, 2'\n", 1),
     "params.yaml: evidence.seeds: not a list of distinct seeds (got '1, 2'; "),
    (lambda text: "seed: 7\n" + text,
     "params.yaml: seed: duplicate key (got it on lines 1 and 2; expected each key once)"),
])
def test_a_bad_evidence_value_or_a_duplicate_key_is_the_projects_one_line_not_dvcs(tmp_path, change, line):
    p = tiny_with_an_arch_named(tmp_path, "other")
    params = p.root / "params.yaml"
    edited = change(params.read_text(encoding="utf-8"))
    assert edited != params.read_text(encoding="utf-8")
    params.write_text(edited, encoding="utf-8")
    done = p.call("make", "--no-print-directory", "repro")
    output = done.stdout + done.stderr
    assert done.returncode == 2 and line in output and "Traceback" not in output and "corrupted" not in output, output
