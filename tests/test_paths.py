"""Which leftovers of removed archs `make prune` removes, and which files it never touches."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml
from conftest import ROOT, example_params

from stages.lib.paths import prunable, recorded_archs


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
        make(root, f"models/{arch}/seed-42.keras", f"models/{arch}/seed-43.keras", f"models/logs/{arch}/seed-42/",
             f"reports/lr_range/{arch}.csv", f"reports/history/{arch}.csv", f"reports/metrics/{arch}.json",
             f"reports/errors/{arch}.json",
             *(f"reports/timings/{arch}.{s}.json" for s in ("lr_range", "train", "evaluate")))
        record(root, arch, "train")
        record(root, arch, "lr_range")


def rel(root, found):
    return [p.relative_to(root).as_posix() for p in found]


def test_a_removed_archs_outputs_are_prunable_and_the_kept_archs_are_not(tmp_path):
    ran(tmp_path, "base", "gone")
    assert rel(tmp_path, prunable(["base"], tmp_path)) == [
        "reports/train/gone.json", "reports/lr_range/gone.json", "models/gone", "models/logs/gone",
        "reports/lr_range/gone.csv", "reports/history/gone.csv", "reports/metrics/gone.json",
        "reports/errors/gone.json", "reports/timings/gone.lr_range.json", "reports/timings/gone.train.json",
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


def test_nothing_is_prunable_in_a_fresh_project(tmp_path):
    assert prunable(["base"], tmp_path) == []


def prune(root, *args):
    return subprocess.run([sys.executable, "-m", "scripts.prune", *args], cwd=root, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": ""}, check=False)


def test_make_prune_lists_and_removes_exactly_the_leftovers(tmp_path):
    params = example_params()
    params["archs"] = {"base": {"hidden": [4]}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    ran(tmp_path, "base", "gone")
    make(tmp_path, "models/base-backup/seed-42.keras", "models/pretrained/")
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))

    dry = prune(tmp_path, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == before
    assert len(dry.stdout.splitlines()) == 11 and all("gone" in line for line in dry.stdout.splitlines())

    done = prune(tmp_path)
    assert done.returncode == 0, done.stderr
    assert [line.replace("removed", "would remove") for line in done.stdout.splitlines()] == dry.stdout.splitlines()
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert not any("gone" in path for path in left)
    assert {"models/base-backup/seed-42.keras", "models/pretrained", "models/base/seed-42.keras"} <= set(left)
    assert prune(tmp_path).stdout == "prune: nothing to remove\n"


def test_prune_refuses_unknown_arguments(tmp_path):
    done = prune(tmp_path, "--all")
    assert done.returncode == 1 and done.stderr.startswith("error: usage:") and "Traceback" not in done.stderr


def test_each_stages_outputs_are_what_dvc_yaml_declares_with_its_cache_setting():
    from stages.lib.paths import stage_outputs

    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        spec = stage.get("do", stage)
        declared = {}
        for kind in ("outs", "metrics", "plots"):
            for entry in spec.get(kind, []):
                path, options = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
                declared[path.replace("${key}", "zz9")] = options.get("cache", True)
        stage_name = f"{name}@zz9" if "foreach" in stage else name
        assert {p.as_posix(): cached for p, cached in stage_outputs(stage_name).items()} == declared, stage_name
    assert stage_outputs("nonesuch") is None and stage_outputs("nonesuch@base") is None
