"""The committed reports/answer.md is what the answer stage makes from the committed records, byte for byte.

Re-rendered in a copy of reports/ and params.yaml, so the checkout is never written. Skipped while the
answer is not committed (the evidence pipeline is still computing it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from harness import ROOT

from stages.evidence import answer as stage
from stages.lib.answer_md import render
from stages.plumbing import paths
from stages.plumbing.params import load_params


def committed(path: Path) -> bool:
    try:
        listed = subprocess.run(["git", "ls-files", "--error-unmatch", path.as_posix()], cwd=ROOT,
                                capture_output=True).returncode == 0
    except FileNotFoundError:  # no git
        return False
    return listed and (ROOT / path).is_file()


pytestmark = pytest.mark.skipif(
    not committed(paths.ANSWER_MD),
    reason=f"{paths.ANSWER_MD} is not committed yet: `dvc repro evidence/dvc.yaml` makes it once the evidence is in")


@pytest.fixture
def copy(tmp_path, monkeypatch) -> Path:
    """reports/ and params.yaml copied into a folder that is the working directory."""
    shutil.copytree(ROOT / paths.REPORTS, tmp_path / paths.REPORTS)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def rerendered(folder: Path) -> bytes:
    """answer.md as the answer stage writes it from the records in ``folder``, without drawing the figures
    (test_answer checks those)."""
    params = load_params()
    return render(params, stage.answer(params, stage.load_records(params)), stage.figure_links()).encode()


def test_committed_answer_is_what_the_records_give(copy):
    assert rerendered(copy) == (ROOT / paths.ANSWER_MD).read_bytes(), (
        f"{paths.ANSWER_MD} differs from what the committed records give: run `dvc repro evidence/dvc.yaml` "
        "and commit the result")


def test_one_changed_number_changes_the_answer(copy):
    """So the test above can fail: the rendering depends on the records' numbers."""
    params = load_params()
    long_runs = [copy / paths.evidence_json("long", arch, seed)
                 for arch in params.archs for seed in params.evidence.seeds]
    path = next(p for p in long_runs if "val_accuracy" in json.loads(p.read_text()))  # a run with scores
    record = json.loads(path.read_text())
    record["val_accuracy"] = round(record["val_accuracy"] - 0.01, 6)
    path.write_text(json.dumps(record))
    assert rerendered(copy) != (ROOT / paths.ANSWER_MD).read_bytes()
