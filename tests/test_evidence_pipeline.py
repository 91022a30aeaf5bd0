"""The evidence pipeline (evidence/dvc.yaml) end to end: real `make evidence`, `dvc repro` and `dvc status`
on tiny data in a temporary project, with tiny evidence params: one arch, one training seed, two range-test
seeds, two grid rates, a 3-epoch long budget, two long_rules sources and one held-out network.

One module-scoped fixture builds the project as a user would: `make evidence JOBS=2` (every evidence stage
and the quick-study stages they read, two at a time), then `dvc repro` (the rest of the quick study), all
committed. Checks that change it work on their own copy, and most ask only `dvc status`, which starts no TensorFlow.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass

import pytest
import yaml
from harness import (
    ARCH,
    ROOT,
    Project,
    as_after_make_setup,
    ran,
    snapshot,
    tiny_mnist,
    tiny_params,
    tiny_project,
    write_idx_folder,
)

from scripts.check_lock import EVIDENCE_FIX, ROOT_FIX
from stages.lib.evidence import distinct_picks, grid_best, rate_for
from stages.lib.lr_finder import CURVE_COLUMNS, RULES
from stages.lib.shapes import RUN_HISTORY_KEYS
from stages.plumbing import paths

pytestmark = pytest.mark.slow

PIPELINE = "evidence/dvc.yaml"
N_TRAIN, N_TEST = 300, 100
EVIDENCE = {"seeds": [1, 2], "range_seeds": [1, 2], "grid": [0.05, 0.2], "max_epochs": 3, "patience": 1,
            "long_rules": {"arch": ARCH, "seeds": [3, 4], "rates": ["flat_center", "grid_best"]},
            "heldout": {"held": {"hidden": [8], "activation": "tanh", "batch_size": 16}}}
HELD = "held"
QUICK_STUDY = {"download", "split", "report", *(f"{stage}@{ARCH}" for stage in ("lr_range", "train", "evaluate"))}
RUN_KEYS = {"lr", "epochs_run", "best_epoch", "failed", "history"}
SCORE_KEYS = {f"{part}_{score}" for part in ("val", "test") for score in ("accuracy", "loss")}


def evidence_stages(evidence: dict) -> set[str]:
    """The matrix stages evidence/dvc.yaml makes of ``evidence`` params, as evidence/dvc.lock names them."""
    return {
        *(f"range@{ARCH}-{seed}" for seed in evidence["range_seeds"]),
        *(f"{kind}@{ARCH}-{seed}" for kind in ("grid", "picks", "long") for seed in evidence["seeds"]),
        *(f"long_rules@{rate}-{seed}" for rate in evidence["long_rules"]["rates"]
          for seed in evidence["long_rules"]["seeds"]),
        *(f"heldout_range@{name}-{seed}" for name in evidence["heldout"] for seed in evidence["range_seeds"]),
        *(f"heldout_{kind}@{name}-{seed}" for kind in ("grid", "picks") for name in evidence["heldout"]
          for seed in evidence["seeds"]),
    }


def single_stages() -> set[str]:
    """The stages of evidence/dvc.yaml that are no matrix (the answer, once it is there)."""
    return {name for name, stage in yaml.safe_load((ROOT / PIPELINE).read_text())["stages"].items()
            if "matrix" not in stage}


def named(stages) -> set[str]:
    """Stages as `dvc repro` and `dvc status` name them."""
    return {f"{PIPELINE}:{stage}" for stage in stages}


def changed(p: Project) -> dict:
    """`dvc status` of the evidence pipeline, keyed by the stages' names in evidence/dvc.lock."""
    return {name.removeprefix(f"{PIPELINE}:"): entries for name, entries in p.status(PIPELINE).items()}


@dataclass
class Built:
    p: Project
    make_output: str  # `make evidence`
    evidence_made: dict[str, bytes | None]  # reports/evidence right after it
    repro_output: str  # the `dvc repro` (the quick study) after it


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    base = tmp_path_factory.mktemp("evidence")
    sums = write_idx_folder(base / "mnist", tiny_mnist(n_train=N_TRAIN, n_test=N_TEST))
    p = tiny_project(base, tiny_params(base / "mnist", sums, lr_range={"epochs": 2}, train={"epochs": 2},
                                      evidence=EVIDENCE), ("dvc.yaml", PIPELINE))
    as_after_make_setup(p)
    make_output = p.run("make", "evidence", "JOBS=2")
    evidence_made = snapshot(p.root / paths.EVIDENCE)
    repro_output = p.dvc("repro")
    p.commit("results and evidence")
    return Built(p, make_output, evidence_made, repro_output)


@pytest.fixture
def project(built, tmp_path) -> Project:
    """A copy of the built project, free to change."""
    return built.p.copy(tmp_path / "project")


def write_param(p: Project, section: str, **values) -> None:
    params = p.read_params()
    params[section].update(values)
    p.write_params(params)


# --- the first run ---------------------------------------------------------------------------------


def test_make_evidence_runs_every_evidence_stage_and_the_quick_study_stages_they_read_two_at_a_time(built):
    stages = ran(built.make_output)
    assert stages[:2] == ["download", "split"], built.make_output
    assert sorted(stages[2:]) == sorted({f"lr_range@{ARCH}", *named(evidence_stages(EVIDENCE) | single_stages())})
    # the long runs train at the quick study's pick: after its range test
    assert all(stages.index(f"lr_range@{ARCH}") < stages.index(stage) for stage in stages
               if stage.startswith((f"{PIPELINE}:long@", f"{PIPELINE}:long_rules@"))), built.make_output
    assert "up to 2 at once" in built.make_output


def test_the_quick_studys_dvc_repro_runs_no_evidence_stage(built):
    assert sorted(ran(built.repro_output)) == sorted(QUICK_STUDY - set(ran(built.make_output))), built.repro_output
    assert snapshot(built.p.root / paths.EVIDENCE) == built.evidence_made
    assert built.p.status() == {}  # both pipelines current


def test_make_evidence_again_runs_nothing(project):
    assert ran(project.run("make", "evidence")) == []


def expected_files() -> set[str]:
    """Every file the evidence stages write for the tiny params, named by the paths helpers."""
    files = {paths.evidence_curve_csv(ARCH, seed) for seed in EVIDENCE["range_seeds"]}
    units = [("range", seed, None) for seed in EVIDENCE["range_seeds"]]
    units += [(kind, seed, None) for kind in ("grid", "picks", "long") for seed in EVIDENCE["seeds"]]
    units += [("long_rules", seed, rate) for rate in EVIDENCE["long_rules"]["rates"]
              for seed in EVIDENCE["long_rules"]["seeds"]]
    for kind, seed, rate in units:
        files |= {paths.evidence_json(kind, ARCH, seed, rate), paths.evidence_timing(kind, ARCH, seed, rate)}
    for seed in EVIDENCE["range_seeds"]:
        files |= {paths.evidence_curve_csv(HELD, seed), paths.evidence_json("range", HELD, seed),
                  paths.evidence_timing("range", HELD, seed)}
    for kind in ("grid", "picks"):
        for seed in EVIDENCE["seeds"]:
            files |= {paths.evidence_json(kind, HELD, seed), paths.evidence_timing(kind, HELD, seed)}
    return {path.relative_to(paths.EVIDENCE).as_posix() for path in files}


def test_the_evidence_stages_write_exactly_their_records_timings_and_curves(built):
    assert {name for name, content in built.evidence_made.items() if content is not None} == expected_files()


def check_run(run: dict, lr: float, max_epochs: int) -> None:
    """One training run's record (stages.lib.evidence.run_record)."""
    assert RUN_KEYS <= set(run) and run["lr"] == pytest.approx(lr), run
    assert 1 <= run["epochs_run"] <= max_epochs and len(run["history"]) == run["epochs_run"]
    assert all(set(row) == set(RUN_HISTORY_KEYS) for row in run["history"])
    scored = SCORE_KEYS & set(run)
    assert scored in (set(), SCORE_KEYS), run  # a run whose weights are not finite has no scores
    if scored:
        assert 0 <= run["best_epoch"] < run["epochs_run"] and 0 <= run["test_accuracy"] <= 1


def test_range_records(built):
    p = built.p
    for seed in EVIDENCE["range_seeds"]:
        record = p.json(paths.evidence_json("range", ARCH, seed).as_posix())
        assert (record["kind"], record["arch"], record["seed"]) == ("range", ARCH, seed)
        assert set(record["picks"]) == set(RULES)
        with open(p.root / paths.evidence_curve_csv(ARCH, seed), newline="") as f:
            rows = list(csv.DictReader(f))
        assert list(rows[0]) == list(CURVE_COLUMNS) and len(rows) == record["steps"]
        timing = p.json(paths.evidence_timing("range", ARCH, seed).as_posix())
        assert timing["seconds"] >= 0 and timing["cpu_seconds"] > 0 and timing["machine"]
        assert "other_cores_busy" in timing


@pytest.mark.parametrize("arch", [ARCH, HELD])
def test_grid_and_picks_records_train_one_epoch_at_each_rate(built, arch):
    p = built.p
    ranges = [p.json(paths.evidence_json("range", arch, s).as_posix()) for s in EVIDENCE["range_seeds"]]
    for kind, rates in (("grid", EVIDENCE["grid"]), ("picks", distinct_picks(ranges))):
        for seed in EVIDENCE["seeds"]:
            record = p.json(paths.evidence_json(kind, arch, seed).as_posix())
            assert (record["kind"], record["arch"], record["seed"]) == (kind, arch, seed)
            assert [run["lr"] for run in record["runs"]] == pytest.approx(rates), kind
            for run, lr in zip(record["runs"], rates):
                check_run(run, lr, max_epochs=1)
            assert p.json(paths.evidence_timing(kind, arch, seed).as_posix())["epochs"] == len(rates)



def test_long_records_train_the_quick_studys_rate_until_early_stopping(built):
    p = built.p
    rule = p.read_params()["lr_range"]["rule"]
    quick = p.json(paths.lr_range_json(ARCH).as_posix())["picks"][rule]["lr"]
    for seed in EVIDENCE["seeds"]:
        record = p.json(paths.evidence_json("long", ARCH, seed).as_posix())
        assert (record["kind"], record["arch"], record["seed"], record["lr_chosen_by"]) == ("long", ARCH, seed, rule)
        check_run(record, quick, EVIDENCE["max_epochs"])
        assert {"test_correct", "confusion"} <= set(record)  # the details paired comparisons need
        timing = p.json(paths.evidence_timing("long", ARCH, seed).as_posix())
        assert timing["epochs"] == record["epochs_run"]


def test_long_rules_records_train_each_sources_rate(built):
    p = built.p
    quick = p.json(paths.lr_range_json(ARCH).as_posix())["picks"]
    grids = [p.json(paths.evidence_json("grid", ARCH, s).as_posix()) for s in EVIDENCE["seeds"]]
    grid = tuple(EVIDENCE["grid"])
    for source in EVIDENCE["long_rules"]["rates"]:
        for seed in EVIDENCE["long_rules"]["seeds"]:
            record = p.json(paths.evidence_json("long_rules", ARCH, seed, source).as_posix())
            assert (record["kind"], record["arch"], record["seed"], record["lr_chosen_by"]) == (
                "long_rules", ARCH, seed, source)
            check_run(record, rate_for(source, quick, grid, grid_best(grid, grids)), EVIDENCE["max_epochs"])


def test_make_prune_would_remove_every_evidence_file_once_the_arch_is_gone(built):
    """The names the stages really write match prune's patterns: all of them, whole folders, nothing left."""
    found = paths.prunable([HELD], built.p.root)
    folders = [built.p.root / folder for _, folder in paths.evidence_folders(ARCH)]
    assert [path for path in found if paths.EVIDENCE in path.relative_to(built.p.root).parents] == folders
    assert paths.left_alone([HELD], built.p.root) == []
    held = [built.p.root / folder for kind, folder in paths.evidence_folders(HELD)
            if kind in paths.HELDOUT_STAGES.values()]
    assert [path for path in paths.prunable([ARCH], built.p.root) if path.parent.parent.name != "models"
            and paths.EVIDENCE in path.relative_to(built.p.root).parents] == held


# --- what a change marks as changed ------------------------------------------------------------------


def test_changing_the_range_tests_factor_marks_range_then_what_reads_the_range_records(project):
    """`dvc status` judges each stage by its own deps: a stage that reads another's records is marked once
    those records are rewritten. long and long_rules read the quick study's whole range-test record, so any
    change to it marks them, whether or not the pick they train at moved."""
    write_param(project, "lr_range", factor=1.2)
    ranges = {f"{kind}@{arch}-{seed}" for kind, arch in (("range", ARCH), ("heldout_range", HELD))
              for seed in EVIDENCE["range_seeds"]}
    assert changed(project) == {stage: [{"changed deps": {"params.yaml": {"lr_range.factor": "modified"}}}]
                                for stage in ranges}

    project.repro("lr_range")  # the quick study's range test, as `make evidence` starts
    readers = {f"long@{ARCH}-{seed}" for seed in EVIDENCE["seeds"]} | {
        f"long_rules@{rate}-{seed}" for rate in EVIDENCE["long_rules"]["rates"]
        for seed in EVIDENCE["long_rules"]["seeds"]}
    status = changed(project)
    assert set(status) == ranges | readers | {"answer"}, status  # the answer reads every range test too
    assert status["answer"] == [{"changed deps": {paths.lr_range_json(ARCH).parent.as_posix(): "modified"}}]
    for stage in readers:
        assert status[stage] == [{"changed deps": {paths.lr_range_json(ARCH).as_posix(): "modified"}}], stage

    project.repro("--single-item", *named(ranges))
    picks = {f"{kind}@{arch}-{seed}": arch for kind, arch in (("picks", ARCH), ("heldout_picks", HELD))
             for seed in EVIDENCE["seeds"]}
    status = changed(project)
    assert set(status) == readers | set(picks) | {"answer"}, status
    for stage, arch in picks.items():
        assert status[stage] == [{"changed deps": {paths.evidence_dir("range", arch).as_posix(): "modified"}}]


def test_changing_the_grid_marks_grid_and_long_rules_but_not_long(project):
    write_param(project, "evidence", grid=[0.05, 0.3])
    grid_changed = [{"changed deps": {"params.yaml": {"evidence.grid": "modified"}}}]
    expected = {f"{kind}@{arch}-{seed}" for kind, arch in (("grid", ARCH), ("heldout_grid", HELD))
                for seed in EVIDENCE["seeds"]} | {
        f"long_rules@{rate}-{seed}" for rate in EVIDENCE["long_rules"]["rates"]
        for seed in EVIDENCE["long_rules"]["seeds"]}
    status = changed(project)
    # The answer reads the whole evidence section (and every record): it is marked too.
    assert status.pop("answer") == [{"changed deps": {"params.yaml": {"evidence": "modified"}}}]
    assert status == {stage: grid_changed for stage in expected}


def test_adding_a_seed_adds_its_stages_and_leaves_the_others_current(project):
    """Except long_rules: the grid's best rate is chosen over every seed's grid record."""
    evidence = json.loads(json.dumps(EVIDENCE))
    added = max(evidence["seeds"]) + 1
    evidence["seeds"].append(added)
    write_param(project, "evidence", seeds=evidence["seeds"])
    new = evidence_stages(evidence) - evidence_stages(EVIDENCE)
    assert new == {f"{kind}@{ARCH}-{added}" for kind in ("grid", "picks", "long")} | {
        f"heldout_{kind}@{HELD}-{added}" for kind in ("grid", "picks")}
    locked = set(yaml.safe_load(project.read(PIPELINE.replace(".yaml", ".lock")))["stages"])
    assert not new & locked
    long_rules = {f"long_rules@{rate}-{seed}" for rate in EVIDENCE["long_rules"]["rates"]
                  for seed in EVIDENCE["long_rules"]["seeds"]}
    status = changed(project)
    assert set(status) == new | long_rules | {"answer"}, status
    for stage in long_rules:
        assert status[stage] == [{"changed deps": {"params.yaml": {"evidence.seeds": "modified"}}}]


# --- a fresh clone ----------------------------------------------------------------------------------


def test_a_fresh_clone_with_the_committed_records_is_current_without_running_anything(project, tmp_path):
    remote = tmp_path / "remote"
    project.dvc("remote", "add", "-d", "store", str(remote))
    project.commit("a remote")
    project.dvc("push")
    clone = Project(tmp_path / "clone", project.env)
    project.run("git", "clone", "-q", str(project.root), str(clone.root))

    # Before `dvc pull`: only the cached data is missing, which `--allow-missing` lets pass.
    missing = [{"changed deps": {paths.PREPARED_DIR.as_posix(): "deleted"}}]
    status = changed(clone)
    assert {stage: status.get(stage) for stage in evidence_stages(EVIDENCE)} == {
        stage: missing for stage in evidence_stages(EVIDENCE)}
    assert set(status) <= evidence_stages(EVIDENCE) | single_stages(), status
    stages, output = clone.repro("--dry", "--allow-missing", PIPELINE)
    assert stages == [], output

    clone.dvc("pull")
    assert clone.status() == {}  # both pipelines
    assert clone.run("git", "status", "--porcelain") == ""


# --- make check-lock -------------------------------------------------------------------------------


def check_lock(p: Project) -> tuple[int, list[str], list[str]]:
    done = p.call(sys.executable, "-m", "scripts.check_lock")
    return done.returncode, done.stdout.splitlines(), done.stderr.splitlines()


def test_check_lock_passes_when_everything_is_current(project):
    output = project.run("make", "check-lock")
    assert output.splitlines() == ["dvc.lock and evidence/dvc.lock match code and params"], output


def test_check_lock_lists_a_stage_not_yet_run_and_passes(project):
    pipeline = yaml.safe_load(project.read(PIPELINE))
    pipeline["stages"]["summary"] = {"wdir": "..", "cmd": "python -c pass",
                                     "deps": [paths.evidence_dir("grid", ARCH).as_posix()],
                                     "outs": [{"reports/summary.md": {"cache": False}}]}
    (project.root / PIPELINE).write_text(yaml.safe_dump(pipeline, sort_keys=False))
    code, out, err = check_lock(project)
    assert code == 0, out + err
    assert out == ["evidence: summary: not yet run (allowed; `make evidence` runs it)",
                   "dvc.lock and evidence/dvc.lock match code and params"]


def test_check_lock_fails_on_a_stale_stage_naming_the_fix(project):
    write_param(project, "evidence", grid=[0.05, 0.3])
    code, out, err = check_lock(project)
    assert code == 1
    assert f"evidence: grid@{ARCH}-1: stale: params.yaml: evidence.grid modified" in out
    assert len(err) == 1 and err[0].startswith("error: evidence/dvc.lock is stale (") and err[0].endswith(
        f"; listed above): {EVIDENCE_FIX}"), err


def test_check_lock_names_every_stale_stage_of_a_fresh_clone_with_no_data(project, tmp_path):
    clone = Project(tmp_path / "clone", project.env)
    project.run("git", "clone", "-q", str(project.root), str(clone.root))
    write_param(clone, "train", epochs=3)
    code, out, err = check_lock(clone)
    assert code == 1
    stale = [f"train@{ARCH}", "report"]  # the stages whose params include train; nothing runs to find them
    assert [line.partition(": stale: ")[0] for line in out if ": stale: " in line] == [
        f"quick study: {stage}" for stage in stale], out
    assert all(line.endswith("params.yaml: train modified") for line in out if ": stale: " in line), out
    assert not any("such file" in line for line in out + err), out + err
    assert err == [f"error: dvc.lock is stale (2 stages: {', '.join(stale)}; listed above): {ROOT_FIX}"]
