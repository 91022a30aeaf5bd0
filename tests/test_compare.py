"""The branch comparison's Markdown, from hand-made `dvc ... diff --json` output."""

from __future__ import annotations

from scripts.compare import metrics_rows, params_rows, render, results_table

METRICS_DIFF = {
    "reports/metrics/base.json": {
        "test_accuracy": {"old": 0.9651, "new": 0.9702, "diff": 0.0051},
        "train_seconds": {"old": 4.8, "new": 5.1, "diff": 0.3},
    },
    "reports/lr_range/base.json": {"seconds": {"old": 3.2, "new": 3.4, "diff": 0.2}},
}
PARAMS_DIFF = {"params.yaml": {"archs.base.hidden": {"old": [300, 100], "new": [256, 128]}}}
REPORT = "# t\n\n## Results\n\n| arch | acc |\n|---|---|\n| base | 96 % |\n\n## Conclusion\n\n- x\n"


def test_metrics_rows_keep_only_per_arch_metrics_worth_reading():
    assert metrics_rows(METRICS_DIFF) == ["| base | test_accuracy | 0.9651 | 0.9702 | +0.0051 |"]


def test_params_rows_show_old_and_new_values():
    assert params_rows(PARAMS_DIFF) == ["| `archs.base.hidden` | [300, 100] | [256, 128] |"]


def test_results_table_is_cut_from_the_report():
    assert results_table(REPORT) == "| arch | acc |\n|---|---|\n| base | 96 % |"
    assert results_table(None) == "_no report at this revision_"


def test_render_puts_both_sides_together():
    md = render("main", METRICS_DIFF, PARAMS_DIFF, REPORT, REPORT.replace("96 %", "97 %"))
    assert md.startswith("# Workspace vs `main`")
    assert "| base | 96 % |" in md.split("## Results at `main`")[1].split("## Results in the workspace")[0]
    assert "| base | 97 % |" in md.split("## Results in the workspace")[1]
    assert "`archs.base.hidden`" in md


def test_render_says_none_when_nothing_changed():
    md = render("main", {}, {}, REPORT, REPORT)
    assert md.count("_none_") == 2
