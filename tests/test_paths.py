"""Which leftovers of removed archs `make prune` removes, and which files it never touches; and that
the paths helpers name what both dvc.yaml files declare."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from harness import ROOT, example_params

from stages.lib import shapes
from stages.plumbing import paths
from stages.plumbing.params import parse_params
from stages.plumbing.paths import left_alone, prunable, recorded_archs

EVIDENCE_DVC_YAML = "evidence/dvc.yaml"
PRUNE_TIMEOUT_S = 60  # reads params.yaml and a few folders: well under a second


def make(root, *rels):
    for rel in rels:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith("/"):
            path.mkdir(exist_ok=True)
        else:
            path.write_text("x")


def record(root, arch, folder="train"):
    (root / "reports" / folder).mkdir(parents=True, exist_ok=True)
    (root / "reports" / folder / f"{arch}.json").write_text(json.dumps({"arch": arch}))


def ran(root, *archs):
    """What the pipeline writes for each arch."""
    for arch in archs:
        make(root, f"models/{arch}/seed-42.keras", f"models/{arch}/seed-43.keras",
             f"models/logs/{arch}/seed-42/train/events.out.tfevents.1796403177.vm.9476.0.v2",
             f"models/logs/{arch}/seed-42/validation/events.out.tfevents.1796403190.vm.9476.1.v2",
             f"reports/lr_range/{arch}.csv", f"reports/history/{arch}.csv", f"reports/metrics/{arch}.json",
             f"reports/errors/{arch}.json",
             *(f"reports/timings/{arch}.{s}.json" for s in ("lr_range", "train", "evaluate")))
        record(root, arch, "train")
        record(root, arch, "lr_range")


def evidence_ran(root, arch, seeds=(1, 2), sources=("notebook", "grid_best")):
    """What the evidence stages write for ``arch``: a record and a timing per stage, a curve per range test."""
    for seed in seeds:
        files = [paths.evidence_curve_csv(arch, seed)]
        for kind in paths.EVIDENCE_KINDS:
            for rate in sources if paths.by_rate(kind) else (None,):
                record = paths.evidence_json(kind, arch, seed, rate)
                files += [record, paths.evidence_timing(kind, arch, seed, rate)]
        for file in files:
            (root / file).parent.mkdir(parents=True, exist_ok=True)
            (root / file).write_text(json.dumps({"kind": file.parts[2], "arch": arch, "seed": seed}))


def evidence_folders(arch):
    return [folder.as_posix() for _, folder in paths.evidence_folders(arch)]


def rel(root, found):
    return [p.relative_to(root).as_posix() for p in found]


def test_a_removed_archs_outputs_are_prunable_and_the_kept_archs_are_not(tmp_path):
    ran(tmp_path, "base", "gone")
    assert rel(tmp_path, prunable(["base"], tmp_path)) == [  # in the order the stages write them
        "reports/lr_range/gone.csv", "reports/lr_range/gone.json", "reports/timings/gone.lr_range.json",
        "models/gone", "models/logs/gone", "reports/train/gone.json", "reports/history/gone.csv",
        "reports/timings/gone.train.json", "reports/errors/gone.json", "reports/metrics/gone.json",
        "reports/timings/gone.evaluate.json",
    ]


def test_what_a_user_put_in_models_and_reports_is_never_prunable(tmp_path):
    ran(tmp_path, "base")
    make(tmp_path, "models/base-backup/seed-42.keras", "models/pretrained/", "models/notes.txt",
         "models/logs/mine/seed-1/", "reports/metrics/mine.json", "reports/my-notes.md")
    record(tmp_path, "impostor")  # a record that names another arch is not the pipeline's
    (tmp_path / "reports" / "train" / "impostor.json").write_text(json.dumps({"arch": "base"}))
    assert recorded_archs(tmp_path) == {"base"}
    assert prunable(["base"], tmp_path) == []


def test_a_removed_archs_folder_with_a_users_file_in_it_is_left_alone(tmp_path):
    ran(tmp_path, "gone")
    make(tmp_path, "models/gone/my-finetuned.h5", "models/logs/gone/notes.txt")
    found = rel(tmp_path, prunable([], tmp_path))
    assert "models/gone" not in found and "models/logs/gone" not in found
    assert "reports/metrics/gone.json" in found


@pytest.mark.parametrize("mine", ["models/logs/gone/seed-42/notes.txt",
                                  "models/logs/gone/seed-42/train/plugins/profile/run.xplane.pb",
                                  "models/logs/gone/seed-42/validation/my-summary.csv"])
def test_a_file_a_user_or_the_profiler_put_inside_a_log_folder_keeps_it(tmp_path, mine):
    ran(tmp_path, "gone")
    make(tmp_path, mine)
    assert "models/logs/gone" not in rel(tmp_path, prunable([], tmp_path))
    assert "models/logs/gone" in rel(tmp_path, left_alone([], tmp_path))
    assert "models/gone" in rel(tmp_path, prunable([], tmp_path))  # the models beside it are the stages'


def test_nothing_is_prunable_in_a_fresh_project(tmp_path):
    assert prunable(["base"], tmp_path) == [] and left_alone(["base"], tmp_path) == []


def test_a_removed_archs_evidence_folders_are_prunable_whole(tmp_path):
    ran(tmp_path, "base", "gone")
    evidence_ran(tmp_path, "base")
    evidence_ran(tmp_path, "gone")
    found = rel(tmp_path, prunable(["base"], tmp_path))
    assert found[-len(paths.EVIDENCE_KINDS) * 2:] == evidence_folders("gone")
    assert "reports/evidence/range/gone" in found and "reports/evidence/timings/long_rules/gone" in found
    assert not any("base" in path for path in found)
    assert left_alone(["base"], tmp_path) == []


def test_an_arch_only_the_evidence_recorded_is_pruned_too(tmp_path):
    """The quick study's outputs were pruned before `make prune` knew the evidence: its records still name the arch."""
    evidence_ran(tmp_path, "gone")
    assert recorded_archs(tmp_path) == {"gone"}
    assert rel(tmp_path, prunable([], tmp_path)) == evidence_folders("gone")


def test_what_a_user_put_in_a_removed_archs_evidence_folders_is_kept_and_listed(tmp_path):
    evidence_ran(tmp_path, "gone", seeds=(1,))
    mine = ["reports/evidence/grid/gone/notes.md", "reports/evidence/grid/gone/seed-01.json",
            "reports/evidence/grid/gone/seed-1.csv", "reports/evidence/long_rules/gone/mine-seed-1.json",
            "reports/evidence/timings/range/gone/seed-1.json.bak"]
    make(tmp_path, *mine, "reports/evidence/picks/gone/seed-2.json/")
    (tmp_path / "reports/evidence/long/gone/seed-3.json").symlink_to(tmp_path / mine[0])
    kept = rel(tmp_path, left_alone([], tmp_path))
    assert sorted(kept) == sorted([*mine, "reports/evidence/picks/gone/seed-2.json",
                                   "reports/evidence/long/gone/seed-3.json"])
    found = rel(tmp_path, prunable([], tmp_path))
    # The stages' own files in those folders go; folders with nothing of a user's go whole.
    assert {"reports/evidence/grid/gone/seed-1.json", "reports/evidence/long_rules/gone/notebook-seed-1.json",
            "reports/evidence/timings/range/gone/seed-1.json", "reports/evidence/picks/gone/seed-1.json",
            "reports/evidence/long/gone/seed-1.json", "reports/evidence/timings/grid/gone"} <= set(found)
    assert not set(found) & set(kept) and not any(path.startswith(tuple(kept)) for path in found)


def test_an_evidence_record_that_names_another_arch_is_not_the_pipelines(tmp_path):
    make(tmp_path, "reports/evidence/grid/mine/seed-1.json")
    (tmp_path / "reports/evidence/grid/mine/seed-1.json").write_text(json.dumps({"kind": "grid", "arch": "base"}))
    assert recorded_archs(tmp_path) == set() and prunable([], tmp_path) == []


def prune(root, *args):
    return subprocess.run([sys.executable, "-m", "scripts.prune", *args], cwd=root, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": ""}, check=False, timeout=PRUNE_TIMEOUT_S)


def test_make_prune_lists_and_removes_exactly_the_leftovers(tmp_path):
    params = example_params()
    params["archs"] = {"base": {"hidden": [4]}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    ran(tmp_path, "base", "gone")
    evidence_ran(tmp_path, "base")
    evidence_ran(tmp_path, "gone")
    make(tmp_path, "models/base-backup/seed-42.keras", "models/pretrained/", "reports/evidence/grid/gone/notes.md")
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))

    dry = prune(tmp_path, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == before
    would = [line for line in dry.stdout.splitlines() if line.startswith("prune: would remove ")]
    # 11 quick-study outputs, 9 whole evidence folders, grid's 2 records beside the user's notes
    assert len(would) == 11 + 9 + 2 and all("gone" in line for line in would)
    notes = "reports/evidence/grid/gone/notes.md"
    keeps = f"prune: keeps {notes}: no stage writes it"
    assert dry.stdout.splitlines() == [*would, keeps]

    done = prune(tmp_path)
    assert done.returncode == 0, done.stderr
    assert [line.replace("removed", "would remove") for line in done.stdout.splitlines()] == dry.stdout.splitlines()
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert [path for path in left if "gone" in path] == ["reports/evidence/grid/gone", notes]
    assert {"models/base-backup/seed-42.keras", "models/pretrained", "models/base/seed-42.keras",
            "reports/evidence/grid/base/seed-1.json"} <= set(left)
    assert prune(tmp_path).stdout == "prune: nothing to remove\n"  # no record names gone any more


def test_prune_refuses_unknown_arguments(tmp_path):
    done = prune(tmp_path, "--all")
    assert done.returncode == 2 and done.stderr.startswith("error: usage:") and "Traceback" not in done.stderr


ARCH, SEED, RATE = "zz9", 7, "notebook"  # stand-ins for a matrix stage's ${item.*}


def test_each_stages_outputs_are_what_dvc_yaml_declares_with_its_cache_setting():
    from stages.plumbing.paths import stage_outputs

    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        declared = declared_outputs(stage.get("do", stage), {"${key}": ARCH})
        stage_name = f"{name}@{ARCH}" if "foreach" in stage else name
        assert {p.as_posix(): how for p, how in stage_outputs(stage_name).items()} == declared, stage_name
    assert stage_outputs("nonesuch") is None and stage_outputs("nonesuch@base") is None


def test_the_only_metrics_are_the_headline_scores():
    """What `dvc exp show`, `dvc metrics diff`, VS Code and DVC Studio list: reports/metrics/ and the answer's."""
    metrics = [path for pipeline, items in ((ROOT / "dvc.yaml", {"${key}": ARCH}), (ROOT / EVIDENCE_DVC_YAML,
                                                                                   EVIDENCE_ITEMS))
               for stage in yaml.safe_load(pipeline.read_text())["stages"].values()
               for path, how in declared_outputs(stage.get("do", stage), items).items() if how == "metric"]
    assert sorted(metrics) == sorted([paths.metrics_json(ARCH).as_posix(), paths.ANSWER_JSON.as_posix()])


def test_what_is_no_output_is_what_git_ignores(tmp_path):
    """Timings and TensorBoard logs differ on every run: neither DVC nor git tracks them."""
    side = [out for out in paths.OUTPUTS.values() if out.declared is None]
    assert {out.stage for out in side} == {"lr_range", "train", "evaluate"}
    # in a repository of its own with the project's .gitignore: the suite may run in a copy that is no checkout
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, timeout=60)
    (tmp_path / ".gitignore").write_text((ROOT / ".gitignore").read_text())
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *(out.at(ARCH).as_posix() for out in side),
                              paths.metrics_json(ARCH).as_posix()],
                             cwd=tmp_path, capture_output=True, text=True, timeout=60).stdout.split()
    assert ignored == [out.at(ARCH).as_posix() for out in side]
    assert all(paths.stage_timing(f"{out.stage}@{ARCH}") == [out.at(ARCH)] for out in side if "timing" in out.path)


def test_each_output_names_the_stage_that_writes_it():
    for out in paths.OUTPUTS.values():
        assert paths.writer(out.at(ARCH)) == (f"{out.stage}@{ARCH}" if out.per_arch else out.stage)
        if out.declared:
            assert out.at(ARCH) in paths.stage_outputs(paths.writer(out.at(ARCH)))
    assert paths.writer(Path("reports/notes.json")) is None
    assert paths.writer(paths.model_file(ARCH, 1)) is None  # a file inside an output: not an output itself


def declared_outputs(spec: dict, substitutions: dict[str, str]) -> dict[str, str]:
    """A dvc.yaml stage's outputs with ``substitutions`` made, each as paths.Output.declared names it: "out" (cached),
    "committed" (a plain `cache: false` out), "metric" or "plot" (always `cache: false`: committed)."""
    declared = {}
    for kind in ("outs", "metrics", "plots"):
        for entry in spec.get(kind, []):
            path, options = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
            for old, new in substitutions.items():
                path = path.replace(old, new)
            cached = options.get("cache", True)
            assert kind == "outs" or not cached, f"{path}: a metric or plot in DVC's cache is not in git"
            declared[path] = {"outs": "out" if cached else "committed", "metrics": "metric", "plots": "plot"}[kind]
    return declared


EVIDENCE_ITEMS = {"${item.arch}": ARCH, "${item.seed}": str(SEED), "${item.rate}": RATE,
                  "${evidence.long_rules.arch}": ARCH}


def evidence_stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / EVIDENCE_DVC_YAML).read_text())["stages"]


def looked_up(value: str, params: dict) -> list:
    """What a matrix entry of evidence/dvc.yaml (``${evidence.seeds}``) names in params.yaml."""
    for key in value.removeprefix("${").removesuffix("}").split("."):
        params = params[key]
    return list(params)


@pytest.mark.parametrize("kind", paths.EVIDENCE_KINDS)
def test_the_registry_runs_each_kind_as_evidence_dvc_yaml_does(kind):
    """Its stage module, its record's shape, and its stages (evidence_units) in the matrix's order: per (arch,
    seed), or per (rate source, seed) for a by_rate kind; and over evidence.heldout too when it is heldout."""
    raw = example_params()
    params = parse_params(raw)
    stage = evidence_stages()[kind]
    assert stage["cmd"].startswith(f"python -m stages.evidence.{kind} ")
    assert kind in shapes.EVIDENCE
    spec = paths.EVIDENCE_KINDS[kind]
    assert stage["matrix"]["seed"] == f"${{evidence.{spec.seeds}}}"
    first = "rate" if paths.by_rate(kind) else "arch"
    assert list(stage["matrix"]) == [first, "seed"]
    matrix = [(value, seed) for value in looked_up(stage["matrix"][first], raw)
              for seed in looked_up(stage["matrix"]["seed"], raw)]
    units = paths.evidence_units(kind, params.evidence, params.archs)
    assert [(unit.rate if paths.by_rate(kind) else unit.arch, unit.seed) for unit in units] == matrix
    assert stage["matrix"][first] == ("${evidence.long_rules.rates}" if paths.by_rate(kind) else "${archs}")
    assert {unit.arch for unit in units} == ({params.evidence.long_rules.arch} if paths.by_rate(kind) else
                                             set(params.archs))
    assert (f"heldout_{kind}" in evidence_stages()) == spec.heldout


def test_every_record_shape_is_a_registered_kinds():
    assert list(shapes.EVIDENCE) == list(paths.EVIDENCE_KINDS)


def test_every_evidence_kind_is_a_matrix_stage_of_evidence_dvc_yaml():
    matrix = sorted(name for name, spec in evidence_stages().items() if "matrix" in spec)
    assert matrix == sorted((*paths.EVIDENCE_KINDS, *paths.HELDOUT_STAGES))


@pytest.mark.parametrize("stage", paths.HELDOUT_STAGES)
def test_a_heldout_stage_is_its_kinds_stage_over_evidence_heldout(stage):
    """The same command, outputs and deps; params name evidence.heldout.<arch> where the kind's name archs.<arch>."""
    stages = evidence_stages()
    ours, theirs = stages[stage], stages[paths.HELDOUT_STAGES[stage]]
    assert ours["matrix"] == {**theirs["matrix"], "arch": "${evidence.heldout}"}
    assert (ours["cmd"], ours["deps"], ours.get("metrics"), ours["plots"]) == (
        theirs["cmd"], theirs["deps"], theirs.get("metrics"), theirs["plots"])
    assert ours["params"] == [p.replace("archs.", "evidence.heldout.") for p in theirs["params"]]


@pytest.mark.parametrize("kind", paths.EVIDENCE_KINDS)
def test_each_evidence_stages_outputs_are_what_the_paths_helpers_name(kind):
    rate = RATE if paths.by_rate(kind) else None
    expected = [paths.evidence_json(kind, ARCH, SEED, rate), paths.evidence_timing(kind, ARCH, SEED, rate)]
    if paths.EVIDENCE_KINDS[kind].curve:
        expected.append(paths.evidence_curve_csv(ARCH, SEED))
    declared = declared_outputs(evidence_stages()[kind], EVIDENCE_ITEMS)
    assert declared == {path.as_posix(): "plot" for path in expected}


@pytest.mark.parametrize("kind", paths.EVIDENCE_KINDS)
def test_each_evidence_stages_reports_deps_are_what_the_paths_helpers_name(kind):
    """A stage that reads another's records depends on the folder or file the paths helpers name."""
    named = {paths.lr_range_json(ARCH).as_posix(),
             *(paths.evidence_dir(other, ARCH).as_posix() for other in paths.EVIDENCE_KINDS)}
    deps = [dep for dep in evidence_stages()[kind]["deps"] if dep.startswith(f"{paths.REPORTS}/")]
    for dep in deps:
        for old, new in EVIDENCE_ITEMS.items():
            dep = dep.replace(old, new)
        assert dep in named, f"{kind}: dep {dep} is not named by stages/plumbing/paths.py"


def test_the_names_in_each_folder_output_are_those_its_stage_writes():
    from stages.evidence.answer import FIGURES
    from stages.lib.data import PARTS
    from stages.lib.idx import IDX_FILES
    from stages.report import FIGURE_FILES

    folders = {out.path for out in paths.OUTPUTS.values() if out.declared and not Path(out.path).suffix}
    assert set(paths.FOLDER_FILES) == folders | {paths.ANSWER_FIGURES.as_posix()}
    named = {folder: {name for name in names if paths.stage_wrote(Path(folder.format(arch=ARCH)), name)}
             for folder, names in (("data/raw", IDX_FILES),
                                   ("data/prepared", [f"{k}_{part}.npy" for k in "xy" for part in PARTS]),
                                   ("reports/figures", FIGURE_FILES.values()),
                                   ("reports/answer", FIGURES.values()))}
    assert named == {"data/raw": set(IDX_FILES), "data/prepared": {f"{k}_{p}.npy" for k in "xy" for p in PARTS},
                     "reports/figures": set(FIGURE_FILES.values()), "reports/answer": set(FIGURES.values())}
    assert set(paths.REPORT_FIGURE_NAMES) == set(FIGURE_FILES.values())
    assert set(paths.ANSWER_FIGURE_NAMES) == set(FIGURES.values())


def test_a_users_files_in_a_folder_output_are_found_the_stages_and_dvcs_are_not(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = Path(f"models/{ARCH}")
    make(tmp_path, f"models/{ARCH}/seed-42.keras", f"models/{ARCH}/.seed-43.keras.k2j4_x.tmp",
         f"models/{ARCH}/notes.txt", f"models/{ARCH}/old/seed-1.keras", f"models/{ARCH}/recorded.bin",
         f"models/{ARCH}/seed-42.keras.bak")
    (folder / "elsewhere").symlink_to(tmp_path, target_is_directory=True)
    assert paths.foreign_files(folder, {"recorded.bin"}) == [
        folder / "elsewhere", folder / "notes.txt", folder / "seed-42.keras.bak", folder / "old/seed-1.keras"]
    # a folder no table knows: only DVC's record of it says what is the stage's
    make(tmp_path, "reports/other/a.png", "reports/other/b.png")
    assert paths.foreign_files(Path("reports/other"), {"a.png"}) == [Path("reports/other/b.png")]
    assert paths.foreign_files(Path("reports/figures"), set()) == []  # no folder: nothing to lose
