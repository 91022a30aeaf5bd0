"""scripts/up_to_date.py: a no-op `make repro` answered from the files' status, and never when one changed."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from scripts import up_to_date

TARGETS = ["dvc.yaml"]


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A folder with a pipeline file, a dep and a folder out, recorded as DVC found them up to date."""
    monkeypatch.chdir(tmp_path)
    Path("dvc.yaml").write_text("stages: {}\n", encoding="utf-8")
    Path("code.py").write_text("print(1)\n", encoding="utf-8")
    Path("out/sub").mkdir(parents=True)
    Path("out/sub/a.txt").write_text("a\n", encoding="utf-8")
    up_to_date.record(TARGETS, ["code.py", "out"])
    assert up_to_date.unchanged(TARGETS)
    return tmp_path


def recorded() -> dict:
    return json.loads(up_to_date.STAMP.read_text(encoding="utf-8"))


def test_the_record_holds_every_file_under_a_folder_and_the_pipeline_files_even_when_missing(project):
    files = recorded()["files"]
    assert {"code.py", "out", "out/sub", "out/sub/a.txt", "dvc.yaml", "params.yaml"} <= set(files)
    assert files["params.yaml"] == [] and files["dvc.yaml"] != []  # params.yaml is missing here: recorded so


@pytest.mark.parametrize("change", [
    lambda: Path("code.py").write_text("print(2)\n", encoding="utf-8"),  # same size
    lambda: Path("out/sub/a.txt").unlink(),
    lambda: Path("out/sub/b.txt").write_text("b\n", encoding="utf-8"),
    lambda: Path("params.yaml").write_text("{}\n", encoding="utf-8"),  # a missing file appears
    lambda: os.replace("code.py", "moved.py"),
], ids=["rewritten", "removed-in-a-folder", "added-in-a-folder", "appeared", "renamed"])
def test_any_change_to_a_recorded_file_sends_the_question_back_to_dvc(project, change):
    change()
    assert not up_to_date.unchanged(TARGETS)


def test_a_write_that_keeps_size_inode_and_mtime_still_changes_the_ctime_and_is_caught(project):
    # os.utime can set mtime back, never ctime: a recorded ctime other than the file's stands for such a write
    stamp = recorded()
    stamp["files"]["code.py"][3] -= 1
    up_to_date.STAMP.write_text(json.dumps(stamp), encoding="utf-8")
    assert not up_to_date.unchanged(TARGETS)


def test_the_record_answers_only_for_its_targets_and_its_interpreter(project, monkeypatch):
    assert not up_to_date.unchanged(["evidence/dvc.yaml"])
    monkeypatch.setattr(sys, "executable", "/another/venv/bin/python")
    assert not up_to_date.unchanged(TARGETS)


@pytest.mark.parametrize("stamp", ["", "not json", "[]", '{"targets": ["dvc.yaml"]}', "{}"])
def test_a_damaged_record_is_no_answer(project, stamp):
    up_to_date.STAMP.write_text(stamp, encoding="utf-8")
    assert not up_to_date.unchanged(TARGETS)


def test_an_oversized_record_is_not_read_and_a_walk_past_the_bound_records_nothing(project, monkeypatch):
    monkeypatch.setattr(up_to_date, "MAX_STAMP_BYTES", 10)
    assert not up_to_date.unchanged(TARGETS)
    monkeypatch.setattr(up_to_date, "MAX_FILES", 2)
    up_to_date.record(TARGETS, ["code.py", "out"])
    assert not up_to_date.STAMP.exists()


def test_no_record_no_answer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not up_to_date.unchanged(TARGETS)
