"""report.md from hand-made results: table order, figure link, and the conclusion."""

from __future__ import annotations


import pytest
import yaml

from conftest import ROOT
from stages.lib.params import parse_params
from stages.lib.report import ArchResult, conclusion, render_report

FIGURE = "figures/lr_range.png"
RULES_FIGURE = "figures/lr_range_rules.png"
RULE_NAMES = ("min_halved", "min_div10", "steepest", "valley")


@pytest.fixture(scope="module")
def params():
    return parse_params(yaml.safe_load((ROOT / "params.yaml").read_text()))


def result(name: str, hidden: tuple[int, ...], acc: float, n_params: int, *, activation: str = "relu",
           chosen: str = "min_halved", lr: float = 0.05, picks: dict | None = None) -> ArchResult:
    metrics = {
        "test_accuracy": acc, "test_loss": 0.1234, "val_accuracy": acc - 0.001, "val_loss": 0.11,
        "params": n_params, "lr": lr, "lr_chosen_by": chosen, "epochs_run": 1, "best_epoch": 0,
        "lr_range_seconds": 3.21, "train_seconds": 12.5, "n_train": 55000, "n_test": 10000,
    }
    if picks is None:
        picks = {"min_halved": {"lr": 0.05, "step": 700}, "min_div10": {"lr": 0.01, "step": 700},
                 "steepest": {"lr": 0.02, "step": 600}, "valley": {"lr": 0.03, "step": 650}}
    lr_range = {"steps": 900, "stop_step": 890, "stop_reason": "smoothed loss above 4 x its best",
                "min_smoothed_loss": 0.2345, "lr_at_min": 0.1, "picks": picks}
    return ArchResult(name, hidden, activation, metrics, lr_range)


# hidden sizes of params.yaml; parameter counts of Dense 784 -> hidden... -> 10
BASE = dict(name="base", hidden=(300, 100), n_params=266_610)
DEEP3 = dict(name="deep3", hidden=(300, 200, 100), n_params=316_810)
DEEP4 = dict(name="deep4", hidden=(400, 300, 200, 100), n_params=515_610)
WIDE3 = dict(name="wide3", hidden=(800, 700, 600), n_params=1_615_310)


def results_table(markdown: str) -> list[list[str]]:
    section = markdown.split("## Results", 1)[1].split("## Conclusion", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| arch")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def conclusion_lines(markdown: str) -> list[str]:
    section = markdown.split("## Conclusion", 1)[1].split("## LR range tests", 1)[0]
    return [line for line in section.splitlines() if line.startswith("- ")]


def test_table_has_one_row_per_arch_sorted_by_test_accuracy(params):
    results = [result(**BASE, acc=0.9701), result(**DEEP3, acc=0.9755), result(**DEEP4, acc=0.9688),
               result(**WIDE3, acc=0.9732)]
    md = render_report(params, results, lr_figure=FIGURE, rules_figure=RULES_FIGURE)
    rows = results_table(md)
    assert [row[0] for row in rows] == ["deep3", "wide3", "base", "deep4"]
    assert rows[0][1] == "300 → 200 → 100"
    assert rows[0][2] == "316,810"
    assert rows[0][3] == "0.05 (min_halved)"
    assert rows[0][5] == "**97.55 %**"
    assert rows[2][5] == "**97.01 %**"


def test_figure_link_and_header_facts(params):
    md = render_report(params, [result(**BASE, acc=0.97)], lr_figure=FIGURE, rules_figure=RULES_FIGURE)
    assert f"![LR range test curves]({FIGURE})" in md
    assert md.startswith("# Which network learns best")
    assert "55,000 training, 5,000 validation and 10,000 test images" in md
    assert "Seed 42." in md
    assert md.endswith("\n")


def test_conclusion_names_best_and_smallest_within_the_margin(params):
    # tie_margin 0.005: base is 0.3 points below deep3 and the smallest -> named;
    # wide3 is within the margin too, deep4 is 1 point below -> not close.
    results = [result(**BASE, acc=0.9720), result(**DEEP3, acc=0.9750), result(**DEEP4, acc=0.9650),
               result(**WIDE3, acc=0.9740)]
    lines = conclusion_lines(render_report(params, results, lr_figure=FIGURE, rules_figure=RULES_FIGURE))
    assert lines[0] == "- Best test accuracy: **deep3**, 97.50 % (316,810 parameters)."
    assert lines[1].startswith("- Smallest network within 0.5 points of it: **base**, 97.20 % (0.30 points lower)")
    assert "266,610 parameters (1.2x fewer)" in lines[1]
    assert lines[2] == "- Also within 0.5 points of the best: wide3."
    assert "deep4" not in "\n".join(lines)


def test_a_smaller_arch_outside_the_margin_is_not_chosen(params):
    results = [result(**BASE, acc=0.9600), result(**DEEP4, acc=0.9750), result(**WIDE3, acc=0.9760)]
    lines = conclusion(results, params.report.tie_margin)
    assert lines[0].startswith("- Best test accuracy: **wide3**")
    assert lines[1].startswith("- Smallest network within 0.5 points of it: **deep4**")
    assert "base" not in "\n".join(lines)


def test_conclusion_when_the_best_is_also_the_smallest(params):
    results = [result(**BASE, acc=0.9800), result(**DEEP3, acc=0.9790), result(**WIDE3, acc=0.9700)]
    lines = conclusion_lines(render_report(params, results, lr_figure=FIGURE, rules_figure=RULES_FIGURE))
    assert lines[0] == "- Best test accuracy: **base**, 98.00 % (266,610 parameters)."
    assert lines[1] == "- No smaller network comes within 0.5 points of it."
    assert lines[2] == "- Also within 0.5 points of the best: deep3."
    assert not any("Smallest network" in line for line in lines)


def test_conclusion_with_a_single_arch(params):
    lines = conclusion([result(**DEEP4, acc=0.9)], 0.005)
    assert lines == ["- Best test accuracy: **deep4**, 90.00 % (515,610 parameters).",
                     "- No smaller network comes within 0.5 points of it."]


def test_archs_absent_from_the_results_do_not_appear(params):
    assert set(params.archs) == {"base", "deep3", "deep4", "wide3"}
    results = [result(**BASE, acc=0.97), result(**DEEP3, acc=0.98)]
    md = render_report(params, results, lr_figure=FIGURE, rules_figure=RULES_FIGURE)
    assert "deep4" not in md and "wide3" not in md
    assert [row[0] for row in results_table(md)] == ["deep3", "base"]


def test_lr_range_table(params):
    picks = {"min_halved": {"lr": 0.05, "step": 700}, "min_div10": {"error": "only 3 finite points"},
             "steepest": {"lr": 0.0123456, "step": 600}, "valley": {"lr": 0.03, "step": 650}}
    results = [result(**BASE, acc=0.97, chosen="steepest", lr=0.0123456, picks=picks),
               result(**DEEP3, acc=0.98, activation="tanh", chosen="fixed in params", lr=0.1)]
    md = render_report(params, results, lr_figure=FIGURE, rules_figure=RULES_FIGURE)
    section = md.split("## LR range tests", 1)[1]
    header = next(line for line in section.splitlines() if line.startswith("| arch"))
    for rule in RULE_NAMES:
        assert f"`{rule}`" in header
    base_row = next(line for line in section.splitlines() if line.startswith("| base |"))
    assert base_row == ("| base | 900 | smoothed loss above 4 x its best | 0.2345 | 0.1 | "
                        "0.05 | n/a | **0.0123** | 0.03 |")
    deep3_row = next(line for line in section.splitlines() if line.startswith("| deep3 |"))
    assert "**" not in deep3_row  # a fixed rate is none of the rules' picks
    results_rows = results_table(md)
    assert results_rows[0][1] == "300 → 200 → 100 (tanh)"
    assert results_rows[0][3] == "0.1 (fixed in params)"


def test_a_gap_of_exactly_the_tie_margin_counts_as_within(params):
    results = [result(**DEEP3, acc=0.9800), result(**BASE, acc=0.9750)]
    lines = conclusion(results, 0.005)
    assert lines[1].startswith("- Smallest network within 0.5 points of it: **base**")


# --- the lr_study section --------------------------------------------------------------------

def study_for(params, archs: dict) -> dict:
    from stages.lib.report import study_settings
    return {"settings": study_settings(params), "grid": [0.1, 0.3], "archs": archs}


def study_entry(hidden, runs: dict[float, float], picks: dict) -> dict:
    return {"hidden": list(hidden), "activation": "relu", "picks": picks,
            "runs": [{"lr": lr, "test_accuracy": acc, "test_loss": 0.1} for lr, acc in runs.items()]}


def test_lr_study_section_shows_grid_best_and_each_rules_gap(params):
    picks = {"min_halved": {"lr": 0.05, "step": 1}, "flat_center": {"lr": 0.2, "step": 2},
             "steepest": {"error": "too few points"}}
    study = study_for(params, {"base": study_entry((300, 100), {0.05: 0.95, 0.1: 0.96, 0.2: 0.9655, 0.3: 0.967},
                                                   picks)})
    md = render_report(params, [result(**BASE, acc=0.95)], lr_figure=FIGURE, rules_figure=RULES_FIGURE, study=study)
    section = md.split("## How good are the picked rates?", 1)[1]
    grid_row = next(line for line in section.splitlines() if line.startswith("| base | 96.00"))
    assert grid_row == "| base | 96.00 % | **96.70 %** |"
    rule_row = [line for line in section.splitlines() if line.startswith("| base |")][1]
    assert "0.05 → 95.00 % (-1.70)" in rule_row
    assert "0.2 → 96.55 % (-0.15)" in rule_row
    assert "n/a" in rule_row
    # archs of params missing from the study are named as missing, not given invented rows
    assert not any(line.startswith("| deep3") for line in section.splitlines())
    assert "deep3" in next(line for line in section.splitlines() if "rerun `make lr-study`" in line)


def test_lr_study_section_flags_a_stale_study(params):
    picks = {"min_halved": {"lr": 0.1, "step": 1}}
    study = study_for(params, {"base": study_entry((256, 128), {0.1: 0.95, 0.3: 0.96}, picks)})
    md = render_report(params, [result(**BASE, acc=0.95)], lr_figure=FIGURE, rules_figure=RULES_FIGURE, study=study)
    section = md.split("## How good are the picked rates?", 1)[1]
    assert "stale" in section and "base" in section.split("stale", 1)[1].splitlines()[0]
    assert "96.00 %" not in section


# --- failed archs ----------------------------------------------------------------------------

def failed_result(**arch) -> ArchResult:
    r = result(**arch, acc=0.0)
    metrics = {**r.metrics, "failed": "training loss became nan in epoch 1", "test_accuracy": None,
               "test_loss": None, "val_accuracy": None, "val_loss": None}
    return ArchResult(r.name, r.hidden, r.activation, metrics, r.lr_range)


def test_a_failed_arch_is_shown_as_failed_and_left_out_of_the_ranking(params):
    results = [failed_result(**WIDE3), result(**BASE, acc=0.9651), result(**DEEP3, acc=0.9702)]
    md = render_report(params, results, lr_figure=FIGURE, rules_figure=RULES_FIGURE)
    rows = results_table(md)
    assert [row[0] for row in rows] == ["deep3", "base", "wide3"]
    assert "**failed**: training loss became nan in epoch 1" in rows[-1]
    assert "nan %" not in md.lower() and "None" not in md
    lines = conclusion_lines(md)
    assert lines[0].startswith("- Best test accuracy: **deep3**")
    assert any(line.startswith("- **wide3 failed**: training loss became nan") for line in lines)


def test_when_every_arch_failed_the_conclusion_says_so(params):
    md = render_report(params, [failed_result(**BASE)], lr_figure=FIGURE, rules_figure=RULES_FIGURE)
    assert "- No architecture produced a result." in conclusion_lines(md)
