"""The branch comparison's Markdown, from hand-made `dvc ... diff --json` output."""

from __future__ import annotations

import subprocess

import pytest
from harness import example_params

from scripts import compare
from scripts.compare import metrics_rows, params_rows, render, results_table
from stages.lib.schema import ParamsError
from stages.plumbing.params import dump_raw

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
    assert metrics_rows(METRICS_DIFF) == [["base", "test_accuracy", "0.9651", "0.9702", "+0.0051"]]


def test_params_rows_show_old_and_new_values():
    assert params_rows(PARAMS_DIFF) == [["`archs.base.hidden`", "[300, 100]", "[256, 128]"]]


def test_results_table_is_cut_from_the_report():
    assert results_table(REPORT) == "| arch | acc |\n|---|---|\n| base | 96 % |"
    assert results_table(None) == "_no report at this revision_"


def test_render_puts_both_sides_together():
    md = render("main", METRICS_DIFF, PARAMS_DIFF, REPORT, REPORT.replace("96 %", "97 %"))
    assert md.startswith("# Workspace vs `main`")
    assert "| base | 96 % |" in md.split("## Results at `main`")[1].split("## Results in the workspace")[0]
    assert "| base | 97 % |" in md.split("## Results in the workspace")[1]
    assert ("| arch | metric | main | workspace | change |\n|---|---|---:|---:|---:|\n"
            "| base | test_accuracy | 0.9651 | 0.9702 | +0.0051 |\n") in md
    assert "| param | main | workspace |\n|---|---|---|\n| `archs.base.hidden` | [300, 100] | [256, 128] |\n" in md


def test_render_says_none_when_nothing_changed():
    md = render("main", {}, {}, REPORT, REPORT)
    assert md.count("_none_") == 2


def git(root, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True,
                   capture_output=True, timeout=60)


@pytest.mark.parametrize("broken, message", [
    ("seed: [1\n", "broken:params.yaml: not valid YAML"),
    ("seed: 42\nseed: 43\n", "broken:params.yaml: seed: duplicate key"),
    ("- a list\n", "broken:params.yaml: (top level): not a mapping (got a list of 1 items"),
])
def test_compare_refuses_a_branch_whose_params_it_cannot_read(tmp_path, monkeypatch, broken, message):
    """Instead of showing every value as changed and exiting 0."""
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "params.yaml").write_text(dump_raw(example_params()), encoding="utf-8")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "good")
    git(tmp_path, "checkout", "-qb", "broken")
    (tmp_path / "params.yaml").write_text(broken, encoding="utf-8")
    git(tmp_path, "commit", "-qam", "broken")
    git(tmp_path, "checkout", "-q", "main")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ParamsError) as err:
        compare.check_params_at("broken")
    assert err.value.problems[0] == "broken's params.yaml cannot be compared: fix it on broken first"
    assert any(line.startswith(message) for line in err.value.problems[1:]), err.value.problems
    compare.check_params_at("main")  # the good one passes
