"""How scripts/check_lock.py judges each stage `dvc status` reports, from its JSON and the lock file (no dvc run
here: tests/test_evidence_pipeline.py runs the script on a real project)."""

from __future__ import annotations

from pathlib import Path

from scripts.check_lock import classify, locked_stages

PIPELINE = "evidence/dvc.yaml"
NEVER_RUN = [{"changed deps": {"stages/evidence/grid.py": "modified", "params.yaml": "new"}},
             {"changed outs": {"reports/evidence/grid/base/seed-2.json": "deleted"}}]
NO_DATA = [{"changed deps": {"data/prepared": "deleted"}}]
PARAM = [{"changed deps": {"data/prepared": "deleted", "params.yaml": {"evidence.grid": "modified"}}}]
EDITED = [{"changed outs": {"reports/evidence/long/base/seed-1.json": "modified"}}]
PARAM_GONE = [{"changed deps": {"params.yaml": {"evidence.grid": "deleted"}}}]
RECORD_GONE = [{"changed deps": {"data/prepared": "deleted"}},
               {"changed outs": {"reports/evidence/grid/base/seed-1.json": "deleted"}}]


def test_a_stage_without_a_lock_entry_is_not_yet_run_whatever_dvc_says_of_it():
    verdicts = classify({f"{PIPELINE}:grid@base-2": NEVER_RUN}, {"grid@base-1"})
    assert verdicts == {"not yet run": {"grid@base-2": ["stages/evidence/grid.py modified", "params.yaml new",
                                                        "reports/evidence/grid/base/seed-2.json deleted"]},
                        "missing data": {}, "stale": {}}


def test_a_locked_stage_missing_only_deps_is_not_stale():
    verdicts = classify({f"{PIPELINE}:range@base-1": NO_DATA}, {"range@base-1"})
    assert verdicts["missing data"] == {"range@base-1": ["data/prepared"]} and verdicts["stale"] == {}


def test_a_locked_stage_with_anything_else_changed_is_stale():
    status = {f"{PIPELINE}:grid@base-1": PARAM, f"{PIPELINE}:long@base-1": EDITED,
              f"{PIPELINE}:picks@base-1": PARAM_GONE, f"{PIPELINE}:answer": ["changed command"],
              f"{PIPELINE}:grid@base-2": RECORD_GONE}
    verdicts = classify(status, {"grid@base-1", "long@base-1", "picks@base-1", "answer", "grid@base-2"})
    assert verdicts["stale"] == {
        "grid@base-1": ["params.yaml: evidence.grid modified"],  # the missing data is not what made it stale
        "long@base-1": ["reports/evidence/long/base/seed-1.json modified"],
        "picks@base-1": ["params.yaml: evidence.grid deleted"],  # a param gone is a change, not missing data
        "answer": ["changed command"],
        # records are committed, not cached: one missing is not what the lock says, and `dvc pull` cannot bring it
        "grid@base-2": ["reports/evidence/grid/base/seed-1.json deleted"],
    }
    assert verdicts["not yet run"] == verdicts["missing data"] == {}


def test_the_lock_is_read_with_its_stage_names(tmp_path):
    lock = tmp_path / "dvc.lock"
    assert locked_stages(lock) == set()  # no lock yet: nothing was run
    lock.write_text("schema: '2.0'\nstages:\n  grid@base-1:\n    cmd: python -m stages.evidence.grid base 1\n"
                    "  long_rules@grid_best-1:\n    cmd: python -m stages.evidence.long_rules grid_best 1\n")
    assert locked_stages(lock) == {"grid@base-1", "long_rules@grid_best-1"}


def gone(*deps: str) -> dict:
    return {"changed deps": dict.fromkeys(deps, "deleted")}


def not_cached(*outs: str) -> dict:
    return {"changed outs": dict.fromkeys(outs, "not in cache")}


TRAIN_EDITED = {"params.yaml": {"train": "modified"}}
# `dvc status --json dvc.yaml` in a fresh clone (no data, empty cache) after a `train.epochs` edit
FRESH_CLONE_TRAIN_EDITED = {
    "download": [not_cached("data/raw")],
    "split": [gone("data/raw"), not_cached("data/prepared")],
    **{f"lr_range@{arch}": [gone("data/prepared")] for arch in ("base", "wide3")},
    **{f"train@{arch}": [{"changed deps": {**gone("data/prepared")["changed deps"], **TRAIN_EDITED}},
                         not_cached(f"models/{arch}", f"reports/train/{arch}.json")] for arch in ("base", "wide3")},
    **{f"evaluate@{arch}": [gone("data/prepared", f"models/{arch}", f"reports/train/{arch}.json"),
                            not_cached(f"reports/evaluation/{arch}.json", f"reports/errors/{arch}.json")]
       for arch in ("base", "wide3")},
    "report": [{"changed deps": {**gone("data/prepared", "reports/evaluation")["changed deps"], **TRAIN_EDITED}}],
}
QUICK_STAGES = set(FRESH_CLONE_TRAIN_EDITED)


def test_every_stale_quick_study_stage_is_named_apart_from_the_missing_data_of_a_fresh_clone():
    verdicts = classify(FRESH_CLONE_TRAIN_EDITED, QUICK_STAGES, Path("dvc.yaml"))
    assert verdicts["stale"] == {stage: ["params.yaml: train modified"]
                                 for stage in ("train@base", "train@wide3", "report")}
    assert set(verdicts["missing data"]) == QUICK_STAGES - set(verdicts["stale"])
    assert verdicts["missing data"]["evaluate@base"] == [
        "data/prepared", "models/base", "reports/errors/base.json", "reports/evaluation/base.json",
        "reports/train/base.json"]
    assert verdicts["not yet run"] == {}


def test_a_committed_quick_study_output_missing_or_edited_is_stale_a_cached_one_missing_is_not():
    status = {"report": [{"changed outs": {"reports/figures": "deleted"}}],
              "evaluate@base": [{"changed outs": {"reports/metrics/base.json": "modified",
                                                  "reports/evaluation/base.json": "deleted"}}],
              "train@base": [{"changed outs": {"models/base": "deleted"}}]}
    verdicts = classify(status, {"report", "evaluate@base", "train@base"}, Path("dvc.yaml"))
    assert verdicts["stale"] == {"report": ["reports/figures deleted"],
                                 "evaluate@base": ["reports/metrics/base.json modified"]}
    assert verdicts["missing data"] == {"train@base": ["models/base"]}
