"""Every committed range test's picks are what each rule's source picks on that very curve.

The curve is rebuilt from the committed CSV (losses to 6 digits) and the params dvc.lock recorded for the stage
that wrote it, so an edited params.yaml changes nothing here. Rates are rebuilt exactly from the schedule and
checked against the CSV's. Skipped for a stage whose record is not there (not yet run).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from harness import ROOT
from upstream import source_pick

from stages.lib.lr_finder import RULES, Curve, batch_sizes, exponential_lrs, smooth
from stages.plumbing import paths

TRAIN_AND_VAL = 60_000  # MNIST's training file: split into train and the first val_size images


def locked(lock: str) -> dict:
    return yaml.safe_load((ROOT / lock).read_text(encoding="utf-8"))["stages"]


def range_tests() -> list:
    quick, evidence = locked("dvc.lock"), locked("evidence/dvc.lock")
    val_size = quick["split"]["params"]["params.yaml"]["data.val_size"]
    out = []
    for stage, entry in {**quick, **{f"evidence:{k}": v for k, v in evidence.items()}}.items():
        name = stage.removeprefix("evidence:")
        if not name.startswith(("lr_range@", "range@")):
            continue
        arch = name.split("@")[1]
        if name.startswith("range@"):
            arch, seed = arch.rsplit("-", 1)
            files = paths.evidence_curve_csv(arch, int(seed)), paths.evidence_json("range", arch, int(seed))
        else:
            files = paths.lr_range_csv(arch), paths.lr_range_json(arch)
        out.append(pytest.param(entry["params"]["params.yaml"], TRAIN_AND_VAL - val_size, *files, id=stage))
    return out


def rebuilt(params: dict, n_train: int, csv_path: Path, record: dict) -> Curve:
    with open(ROOT / csv_path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    n = len(rows)
    lrs = exponential_lrs(params["lr_range.start_lr"], params["lr_range.factor"], n)
    assert [f"{lr:.6g}" for lr in lrs] == [row["lr"] for row in rows], "the schedule is not the CSV's"
    steps_per_epoch = -(-n_train // params["lr_range.batch_size"])
    losses = np.array([float(row["loss"]) for row in rows])
    return Curve(lrs, losses, smooth(losses, params["lr_range.smoothing"]),
                 batch_sizes(n_train, params["lr_range.batch_size"], n), steps_per_epoch,
                 steps_per_epoch * params["lr_range.epochs"], record["stop_step"], params["lr_range.smoothing"],
                 params["lr_range.stop_factor"])


@pytest.mark.parametrize("params, n_train, csv_path, json_path", range_tests())
def test_the_recorded_picks_are_the_sources_picks_on_the_recorded_curve(params, n_train, csv_path, json_path):
    if not (ROOT / json_path).is_file():
        pytest.skip(f"{json_path} not made yet")
    record = json.loads((ROOT / json_path).read_text(encoding="utf-8"))
    curve = rebuilt(params, n_train, csv_path, record)
    recorded = {rule: record["picks"][rule].get("lr") for rule in RULES if rule != "flat_center"}
    assert recorded == {rule: source_pick(rule, curve) for rule in recorded}
