"""Which leftovers of removed archs the report stage deletes, and which files it never touches."""

from __future__ import annotations

from stages.lib.paths import stale_outputs


def make(root, *rels):
    for rel in rels:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith("/"):
            path.mkdir(exist_ok=True)
        else:
            path.write_text("x")


def test_stale_outputs_are_the_removed_archs_files_only(tmp_path):
    make(tmp_path,
         "models/base/seed-42.keras", "models/gone/seed-42.keras", "models/.gitignore", "models/notes.txt",
         "models/logs/base/seed-42/", "models/logs/gone/seed-42/",
         "reports/lr_range/base.csv", "reports/errors/base.json", "reports/errors/gone.json", "reports/lr_range/gone.csv", "reports/lr_range/gone.json",
         "reports/history/gone.csv", "reports/train/gone.json", "reports/metrics/gone.json",
         "reports/timings/base.train.json", "reports/timings/gone.lr_range.json", "reports/timings/gone.train.json",
         "reports/report.md", "reports/lr_study.json", "reports/figures/lr_range.png")
    stale = [p.relative_to(tmp_path).as_posix() for p in stale_outputs(["base"], tmp_path)]
    assert stale == [
        "models/gone", "models/logs/gone",
        "reports/errors/gone.json", "reports/history/gone.csv", "reports/lr_range/gone.csv", "reports/lr_range/gone.json",
        "reports/metrics/gone.json", "reports/timings/gone.lr_range.json", "reports/timings/gone.train.json",
        "reports/train/gone.json",
    ]


def test_nothing_is_stale_in_a_fresh_project(tmp_path):
    assert stale_outputs(["base"], tmp_path) == []
