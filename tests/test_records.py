"""stages.plumbing.records: what earlier stages wrote is checked before use, and the committed results pass.

How a stage reports a damaged file, end to end, is in tests/test_faults.py.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from harness import ROOT, example_params

from stages import report
from stages.ground import spec
from stages.ground.errors import StageError
from stages.ground.spec import INT, NUMBER, PICK, POSITIVE, STR, ListOf, MapOf, Maybe, Wrong, check
from stages.lib import shapes
from stages.lib.lr_finder import RULES
from stages.plumbing import machine, paths, records


@pytest.mark.parametrize("path, command", [
    (paths.metrics_json("base"), "`dvc repro -f evaluate@base`"),
    (paths.errors_json("deep-3"), "`dvc repro -f evaluate@deep-3`"),
    (paths.timing_json("base", "train"), "`dvc repro -f train@base`"),
    (paths.timing_json("base", "lr_range"), "`dvc repro -f lr_range@base`"),
    (paths.history_csv("w_2"), "`dvc repro -f train@w_2`"),
    (paths.lr_range_csv("base"), "`dvc repro -f lr_range@base`"),
    (paths.train_json("base"), "`dvc repro -f train@base`"),
    (Path("reports/notes.json"), "`dvc repro -f` on the stage that writes it"),
])
def test_each_file_names_what_rebuilds_it(path, command):
    assert records.rebuild_command(path) == command


SPEC = {"lr": POSITIVE, "name": STR, "note?": STR, "runs": ListOf({"seed": INT, "best": Maybe(INT)}, min_len=1),
        "picks": MapOf(PICK), "matrix": ListOf(ListOf(NUMBER, 2, 2), 2, 2)}
GOOD = {"lr": 0.1, "name": "x", "runs": [{"seed": 1, "best": None}], "picks": {"a": {"lr": 0.2, "step": 3},
        "b": {"error": "too few points"}}, "matrix": [[1, 2], [3, 4.5]], "extra": "ignored"}


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("name"), "name is missing"),
    (lambda d: d.update(lr=0), "lr is 0, not a positive number"),
    (lambda d: d.update(lr=True), "lr is True, not a positive number"),
    (lambda d: d.update(note=3), "note is 3, not a string"),
    (lambda d: d.update(runs=[]), "runs has 0 entries (expected at least 1)"),
    (lambda d: d["runs"][0].update(seed="42"), "runs[0].seed is '42', not an integer"),
    (lambda d: d["runs"][0].update(best=1.5), "runs[0].best is 1.5, not an integer"),
    (lambda d: d["picks"].update(c={"lr": -1}), "picks.c is {'lr': -1}, not a pick {lr, step} or {error}"),
    (lambda d: d["matrix"].append([5, 6]), "matrix has 3 entries (expected 2)"),
    (lambda d: d.update(runs={"seed": 1}), "runs is {'seed': 1}, not a list"),
    (lambda d: d.update(picks="x" * 100), "picks is '" + "x" * 56 + "..., not a mapping"),
], ids=["missing", "zero", "bool", "optional-wrong", "empty-list", "str-int", "float-int", "pick", "length",
        "dict-not-list", "long-value"])
def test_check_says_where_and_what(change, message):
    data = json.loads(json.dumps(GOOD))
    check(data, SPEC, "")
    change(data)
    with pytest.raises(Wrong) as info:
        check(data, SPEC, "")
    assert str(info.value) == message


@pytest.mark.parametrize("text, where", [('{"a": [1, NaN]}', "a[1] is nan"), ('{"a": {"b": Infinity}}', "a.b is inf"),
                                         ('{"a": -1e999}', "a is -inf")])
def test_json_with_a_non_finite_number_is_damaged_whatever_the_spec(tmp_path, text, where):
    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(StageError) as info:
        records.read(path, spec.ANY)
    assert str(info.value).startswith(f"{path}: {where}, which is not a JSON number: the file is damaged")


def committed(pattern: str) -> list[Path]:
    found = sorted(ROOT.glob(pattern))
    assert found, pattern
    return found


def test_the_committed_results_pass_every_readers_checks():
    """What the pipeline wrote and git holds reads clean, each record against its one declared shape."""
    for pattern, shape in (("reports/lr_range/*.json", shapes.LR_RANGE), ("reports/metrics/*.json", shapes.METRICS)):
        for path in committed(pattern):
            records.read(path, shape)
    for path in committed("reports/lr_range/*.csv"):
        report.read_curve(path)
    for path in committed("reports/history/*.csv"):
        report.read_history(path)
    for path in committed("reports/predictions/*.csv"):
        assert len(records.read_csv(path, shapes.PREDICTIONS_COLUMNS)) == 10_000


def test_a_writer_refuses_a_record_that_is_not_its_declared_shape(tmp_path):
    path = tmp_path / "base.json"
    with pytest.raises(ValueError, match=r"base.json: not the record its shape declares: runs has 0 entries"):
        records.write_json(path, {"arch": "base", "lr": 0.1, "lr_chosen_by": "x", "failed": None, "runs": [],
                                  "software": machine.software()}, shapes.TRAIN)
    assert not path.exists()
    records.write_json(path, {"arch": "base", "lr": 0.1, "lr_chosen_by": "x", "failed": None,
                              "runs": [{"seed": 1, "epochs_run": 1, "best_epoch": 0, "failed": None}],
                              "software": machine.software()}, shapes.TRAIN)
    assert json.loads(path.read_text())["lr"] == 0.1


def test_a_range_test_without_every_rules_pick_is_damaged(tmp_path):
    """One from before the rules were renamed, say: the report's rules table needs each rule's pick."""
    record = {"arch": "base", "steps": 3, "stop_step": None, "stop_reason": "sweep ran to the end",
              "min_smoothed_loss": 0.5, "lr_at_min": 0.2, "picks": {"min_halved": {"lr": 0.1, "step": 1}}}
    path = tmp_path / "base.json"
    path.write_text(json.dumps(record))
    with pytest.raises(StageError, match="picks.notebook is missing"):
        records.read(path, shapes.LR_RANGE)
    record["picks"] = {rule: {"error": "too short"} for rule in RULES}
    path.write_text(json.dumps(record))
    records.read(path, shapes.LR_RANGE)


# --- the report's checks across files ----------------------------------------------------------------


def arch_result(stop_step: int | None) -> report.ArchResult:
    return report.ArchResult("base", (8,), "relu", {}, {"stop_step": stop_step}, {})


@pytest.mark.parametrize("stop_step, fine", [(None, True), (0, True), (2, True), (3, False), (-1, False)])
def test_where_a_sweep_stopped_is_a_row_of_its_curve(stop_step, fine):
    """The figure marks the stop at curve["lr"][stop_step]: an IndexError before this check."""
    curves = {"base": {"lr": np.array([0.1, 0.2, 0.3])}}
    if fine:
        report.check_against_curves([arch_result(stop_step)], curves)
        return
    with pytest.raises(StageError, match=f"^reports/lr_range/base.json: stop_step {stop_step} is not a row of "
                                         r"reports/lr_range/base.csv \(3 rows\): .*`dvc repro -f lr_range@base`$"):
        report.check_against_curves([arch_result(stop_step)], curves)


@pytest.mark.parametrize("index, fine", [(0, True), (99, True), (100, False), (-1, False)])
def test_confidently_wrong_digits_are_test_images_that_exist(index, fine):
    """The figure draws x_test[index]: an IndexError before this check."""
    errors = {"base": {"confident_errors": [{"index": index}]}}
    if fine:
        report.check_against_test_set(errors, 100)
        return
    with pytest.raises(StageError, match=rf"^reports/errors/base.json: confident_errors name test images \[{index}\], "
                                         r"but there are 100: .*`dvc repro -f evaluate@base`$"):
        report.check_against_test_set(errors, 100)


@pytest.mark.parametrize("shape, good, bad", [
    (spec.FRACTION, [0, 0.5, 1], [-0.1, 1.01, 98.3]),
    (spec.NONNEGATIVE, [0, 2.5], [-1e-9, -3]),
    (spec.COUNT, [1, 7], [0, -1, 1.5]),
    (spec.INDEX, [0, 3], [-1, 0.5]),
])
def test_numbers_are_bounded_by_what_they_mean(shape, good, bad):
    for value in good:
        check(value, shape, "x")
    for value in bad:
        with pytest.raises(Wrong, match=rf"^x is {value!r}, not {shape.name}$"):
            check(value, shape, "x")


FIRST_RULE = next(iter(RULES))  # the first a record's picks are checked for


@pytest.mark.parametrize("module, argv, damaged", [
    ("picks", ["base", "1"], ("reports/evidence/range/base/seed-1.json", f"picks.{FIRST_RULE} is missing")),
    ("long", ["base", "1"], ("reports/lr_range/base.json", f"picks.{FIRST_RULE} is {{'lr': 'fast', 'step': 3}}")),
    ("long_rules", ["notebook", "101"], ("reports/lr_range/base.json", f"picks.{FIRST_RULE} is {{'lr': 'fast'")),
])
def test_the_evidence_stages_check_what_they_read_before_training(tmp_path, monkeypatch, module, argv, damaged):
    """What picks, long and long_rules read of earlier stages' records goes through records.read and its shape."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(example_params(), sort_keys=False))
    range_record = {"arch": "base", "kind": "range", "seed": 1, "picks": {}, "steps": 10, "stop_step": None,
                    "stop_reason": "end", "min_smoothed_loss": None, "lr_at_min": None}
    lr_range = {"arch": "base", "picks": {rule: {"lr": "fast", "step": 3} for rule in RULES}}
    for path, record in ((paths.evidence_json("range", "base", 1), range_record),
                         (paths.lr_range_json("base"), lr_range)):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(json.dumps(record))
    monkeypatch.chdir(tmp_path)
    stage = importlib.import_module(f"stages.evidence.{module}")
    with pytest.raises(StageError) as err:
        stage.main(argv)
    path, what = damaged
    assert str(err.value).startswith(f"{path}: {what}") and "damaged" in str(err.value)
