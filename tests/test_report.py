"""report.md, the quick check, from hand-made results: tables, figures, what the run shows and its intervals.

Expected intervals come from scipy directly (scipy.stats.ttest_ind with equal_var=False), not from
stages.lib.stats, and everything else is worked out by hand.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from harness import example_params
from scipy import stats as scipy_stats

from stages import report as report_stage
from stages.ground.errors import StageError
from stages.lib.lr_finder import RULES
from stages.lib.report import ArchResult, conclusion, pairs, render_report
from stages.plumbing import paths
from stages.plumbing.params import parse_params

FIGURES = {"lr_range": "figures/lr_range.png", "lr_rules": "figures/lr_range_rules.png",
           "digits": "figures/digits.png", "confusion": "figures/confusion.png",
           "errors": "figures/confident_errors.png"}
# What the quick check must never say of two archs the seeds cannot tell apart, nor of a choice.
FORBIDDEN = ("as good", "does as well", "do as well", "distinguishable", "best test accuracy")


@pytest.fixture(scope="module")
def params():
    """The tests' own params (tie_margin 0.005, val_size 5000, seed 42, one seed and one epoch, rule flat_center)."""
    return parse_params(example_params())


def params_with(**changes) -> object:
    """The tests' params with some dotted keys changed, e.g. ``train__repeats=5``."""
    raw = example_params()
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = raw
        for key in parents:
            node = node[key]
        node[leaf] = value
    return parse_params(raw)


def all_picks(**changes) -> dict:
    """Every rule's pick: rule k picks 0.01 * (k + 1) unless ``changes`` says otherwise."""
    picks = {rule: {"lr": 0.01 * (k + 1), "step": 100 + k} for k, rule in enumerate(RULES)}
    return {**picks, **changes}


def result(name: str, hidden: tuple[int, ...], val: float | list[float], n_params: int, *,
           test: float | list[float] | None = None, activation: str = "relu", chosen: str = "flat_center",
           lr: float = 0.05, picks: dict | None = None) -> ArchResult:
    """One arch's result; ``val`` a list gives one run per seed (42, 43, ...); test defaults to val - 0.003."""
    vals = val if isinstance(val, list) else [val]
    tests = test if isinstance(test, list) else [v - 0.003 for v in vals] if test is None else [test]
    runs = {str(42 + i): {"epochs_run": 1, "best_epoch": 0, "val_accuracy": v, "val_loss": 0.11,
                          "test_accuracy": t, "test_loss": 0.1234} for i, (v, t) in enumerate(zip(vals, tests))}
    metrics = {
        "failed": None, "val_accuracy": float(np.mean(vals)), "val_loss": 0.11, "test_accuracy": float(np.mean(tests)),
        "test_accuracy_std": float(np.std(tests, ddof=1)) if len(tests) > 1 else None, "test_loss": 0.1234,
        "params": n_params, "size_bytes": 3 * 2**20, "lr": lr, "lr_chosen_by": chosen, "n_train": 55000,
        "n_test": 10000, "repeats": len(vals), "seeds": runs,
    }
    lr_range = {"steps": 900, "stop_step": 890, "stop_reason": "smoothed loss above 4 x its best",
                "min_smoothed_loss": 0.2345, "lr_at_min": 0.1, "picks": all_picks() if picks is None else picks}
    return ArchResult(name, hidden, activation, metrics, lr_range, SOFTWARE)


SOFTWARE = {"python": "3.11", "tensorflow": "2.21.0", "keras": "3.15.1", "numpy": "2.4.6"}


def failed_result(**arch) -> ArchResult:
    r = result(**arch, val=0.0)
    metrics = {**r.metrics, "failed": "training loss became nan in epoch 1", "test_accuracy": None,
               "test_loss": None, "val_accuracy": None, "val_loss": None, "test_accuracy_std": None,
               "seeds": {"42": {"epochs_run": 1, "best_epoch": None}}}
    return ArchResult(r.name, r.hidden, r.activation, metrics, r.lr_range, r.software)


def render(params, results, **kwargs) -> str:
    return render_report(params, results, FIGURES, paths.ANSWER_FROM_REPORT, **kwargs)


def seeds_in(results: list[ArchResult]) -> int:
    """The seeds the results were made with, as the report has them from params.seeds."""
    return max(len(r.metrics["seeds"]) for r in results)


def conclude(results: list[ArchResult], tie_margin: float = 0.005) -> list[str]:
    return conclusion(results, pairs(results, seeds_in(results)), seeds_in(results), tie_margin,
                      paths.ANSWER_FROM_REPORT)


# hidden sizes of the example params; parameter counts of Dense 784 -> hidden... -> 10
BASE = dict(name="base", hidden=(300, 100), n_params=266_610)
DEEP3 = dict(name="deep3", hidden=(300, 200, 100), n_params=316_810)
DEEP4 = dict(name="deep4", hidden=(400, 300, 200, 100), n_params=515_610)
WIDE3 = dict(name="wide3", hidden=(800, 700, 600), n_params=1_615_310)


def section(markdown: str, heading: str) -> str:
    """The text under ``## heading`` up to the next ## heading."""
    return markdown.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def table_rows(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith(("| arch", "| pair"))]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def results_table(markdown: str) -> list[list[str]]:
    return table_rows(section(markdown, "Results"))


def shown_lines(markdown: str) -> list[str]:
    return [line for line in section(markdown, "What this run shows").splitlines() if line.startswith("- ")]


def assert_never_claims_equality(markdown: str) -> None:
    for phrase in FORBIDDEN:
        assert phrase not in markdown.lower(), phrase


# --- what the report is -------------------------------------------------------------------------


def test_it_opens_as_a_quick_check_that_points_to_the_answer(params):
    md = render(params, [result(**BASE, val=0.97)])
    lines = md.splitlines()
    assert lines[0] == "# Quick check: one run per architecture (seed 42), 1 epoch"
    assert lines[2].startswith("This is a quick check, not the answer: each architecture trains once for one epoch")
    assert "[answer.md](answer.md), the evidence pipeline's report (`make evidence`)" in lines[2]
    assert ("Choices are made on validation accuracy; test accuracy is reported for what was chosen, never used "
            "to choose.") in md
    assert "55,000 training, 5,000 validation and 10,000 test images" in md
    assert md.endswith("\n")


def test_the_title_says_how_many_seeds_and_epochs(params):
    md = render(params_with(train__repeats=3, train__epochs=50), [result(**BASE, val=[0.97, 0.971, 0.972])])
    assert md.startswith("# Quick check: 3 runs per architecture (seeds 42–44), up to 50 epochs\n")
    assert "each architecture trains 3 times for up to 50 epochs" in md


def test_every_figure_is_linked(params):
    md = render(params, [result(**BASE, val=0.97)])
    for path in FIGURES.values():
        assert f"]({path})" in md
    assert "learning_curves" not in md  # one epoch: no learning curves


def test_learning_curves_are_linked_when_given(params):
    md = render_report(params, [result(**BASE, val=0.97)], {**FIGURES, "curves": "figures/learning_curves.png"},
                       paths.ANSWER_FROM_REPORT)
    assert "![Learning curves](figures/learning_curves.png)" in md


def test_cost_table_gives_the_work_each_arch_took_never_a_time(params):
    several = result(**BASE, val=[0.96, 0.97])
    several.metrics["seeds"]["43"]["epochs_run"] = 3
    md = render(params, [result(**WIDE3, val=0.97), several])
    assert table_rows(section(md, "Cost per architecture")) == [
        ["base", "266,610", "3.00 MiB", "900", "4"], ["wide3", "1,615,310", "3.00 MiB", "900", "1"]]
    assert "reports/timings/" in section(md, "Cost per architecture")


def test_mistakes_are_shown_when_an_arch_has_a_result(params):
    text = section(render(params, [result(**BASE, val=0.97)]), "Mistakes")
    assert "](figures/confusion.png)" in text and "](figures/confident_errors.png)" in text


# --- one seed: chosen on validation, ranks nothing ----------------------------------------------------


def test_the_table_is_ordered_by_validation_not_test_accuracy(params):
    # deep3 has the highest test accuracy but the lowest validation accuracy: it comes last.
    results = [result(**BASE, val=0.9701, test=0.9650), result(**DEEP3, val=0.9688, test=0.9790),
               result(**WIDE3, val=0.9732, test=0.9600)]
    rows = results_table(render(params, results))
    assert [row[0] for row in rows] == ["wide3", "base", "deep3"]
    assert rows[0][1:] == ["800 → 700 → 600", "0.05 (flat_center)", "1", "97.32 %", "96.00 %", "0.1234"]
    assert len(rows[0]) == 7  # one seed: no per-seed column


def test_the_layers_cell_names_an_activation_other_than_relu_and_a_dropout_rate(params):
    plain, tanh = result(**BASE, val=0.97), result(**{**BASE, "name": "slim", "activation": "tanh"}, val=0.96)
    dropped = replace(result(**DEEP3, val=0.95), dropout=0.2)
    both = replace(result(**{**WIDE3, "activation": "tanh"}, val=0.94), dropout=0.5)
    rows = results_table(render(params, [plain, tanh, dropped, both]))
    assert [row[1] for row in rows] == ["300 → 100", "300 → 100 (tanh)", "300 → 200 → 100 (dropout 0.2)",
                                        "800 → 700 → 600 (tanh, dropout 0.5)"]


def test_the_highest_validation_accuracy_is_named_with_its_test_accuracy_not_the_highest_test(params):
    results = [result(**BASE, val=0.9701, test=0.9650), result(**DEEP3, val=0.9688, test=0.9790)]
    lines = conclude(results)
    assert lines[0] == ("- Highest validation accuracy in this run: **base**, 97.01 % (its test accuracy: 96.50 %; "
                        "266,610 parameters).")
    assert "97.90" not in "\n".join(lines)  # deep3's higher test accuracy chooses nothing


def test_within_the_margin_on_validation_and_the_smallest_of_them(params):
    # tie_margin 0.005: base 0.3 points and wide3 0.1 points below deep3 on validation; deep4 1 point below.
    results = [result(**BASE, val=0.9720), result(**DEEP3, val=0.9750), result(**DEEP4, val=0.9650),
               result(**WIDE3, val=0.9740)]
    lines = shown_lines(render(params, results))
    assert lines[0].startswith("- Highest validation accuracy in this run: **deep3**, 97.50 %")
    assert lines[1] == ("- Within 0.5 points of it on validation (`report.tie_margin`): wide3, base. The smallest of "
                        "these is **base**, 97.20 % (266,610 parameters, 1.2x fewer).")
    assert "deep4" not in "\n".join(lines)


def test_when_the_highest_is_also_the_smallest(params):
    lines = conclude([result(**BASE, val=0.9800), result(**DEEP3, val=0.9790), result(**WIDE3, val=0.9700)])
    assert lines[1] == "- Within 0.5 points of it on validation (`report.tie_margin`): deep3."


def test_no_other_arch_within_the_margin(params):
    lines = conclude([result(**DEEP4, val=0.9)])
    assert lines[:2] == ["- Highest validation accuracy in this run: **deep4**, 90.00 % (its test accuracy: 89.70 %; "
                         "515,610 parameters).",
                         "- No other architecture comes within 0.5 points of it on validation (`report.tie_margin`)."]


def test_a_gap_of_exactly_the_tie_margin_counts_as_within(params):
    lines = conclude([result(**DEEP3, val=0.9800), result(**BASE, val=0.9750)], 0.005)
    assert lines[1].startswith("- Within 0.5 points of it on validation (`report.tie_margin`): base.")


def test_one_seed_says_it_ranks_nothing_and_where_the_answer_is(params):
    md = render(params, [result(**DEEP4, val=0.9), result(**BASE, val=0.89)])
    last = shown_lines(md)[-1]
    assert last.startswith("- One seed ranks nothing: ")
    assert "`train.repeats`" in last and "[answer.md](answer.md)" in last
    assert "Every pair" not in md  # no intervals from one seed
    assert_never_claims_equality(md)


def test_archs_absent_from_the_results_do_not_appear(params):
    md = render(params, [result(**BASE, val=0.97), result(**DEEP3, val=0.98)])
    assert "deep4" not in md and "wide3" not in md
    assert [row[0] for row in results_table(md)] == ["deep3", "base"]


# --- failed archs -------------------------------------------------------------------------------------


def test_a_failed_arch_is_shown_as_failed_and_left_out(params):
    md = render(params, [failed_result(**WIDE3), result(**BASE, val=0.9651), result(**DEEP3, val=0.9702)])
    rows = results_table(md)
    assert [row[0] for row in rows] == ["deep3", "base", "wide3"]
    assert rows[-1][4:] == ["—", "**failed**: training loss became nan in epoch 1", "—"]
    assert "nan %" not in md.lower() and "None" not in md
    lines = shown_lines(md)
    assert lines[0].startswith("- Highest validation accuracy in this run: **deep3**")
    assert "- **wide3 failed**: training loss became nan in epoch 1." in lines


def test_when_every_arch_failed_it_says_so(params):
    no_mistakes = {key: path for key, path in FIGURES.items() if key not in ("confusion", "errors")}
    md = render_report(params, [failed_result(**BASE)], no_mistakes, paths.ANSWER_FROM_REPORT)
    assert shown_lines(md) == ["- **base failed**: training loss became nan in epoch 1.",
                               "- No architecture produced a result."]
    assert "## Mistakes" not in md


# --- several seeds: every pair with a 95 % Welch interval ---------------------------------------------

LOW = [0.9600, 0.9605, 0.9610, 0.9615, 0.9620]
HIGH = [0.9700, 0.9705, 0.9710, 0.9715, 0.9720]
HIGH_TOO = [0.9701, 0.9707, 0.9709, 0.9712, 0.9716]  # interleaved with HIGH


def scipy_welch(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """(difference, low, high) in points: scipy's Welch interval of mean(a) - mean(b) at 95 %."""
    ci = scipy_stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    return 100 * (np.mean(a) - np.mean(b)), 100 * ci.low, 100 * ci.high


def test_several_seeds_show_mean_sd_and_each_seed(params):
    md = render(params_with(train__repeats=5), [result(**BASE, val=LOW)])
    row = results_table(md)[0]
    # sd of LOW: deviations -0.1 .. +0.1 points in steps of 0.05 -> sqrt(0.025 / 4) = 0.079 points
    assert row[4] == "96.10 ± 0.08 %"
    assert row[5] == "95.80 ± 0.08 %"
    assert row[7] == "96.00, 96.05, 96.10, 96.15, 96.20"


def test_every_pair_has_its_welch_interval_and_reading(params):
    results = [result(**BASE, val=HIGH_TOO), result(**WIDE3, val=HIGH), result(**DEEP3, val=LOW)]
    md = render(params_with(train__repeats=5), results)
    rows = table_rows(section(md, "What this run shows"))
    # by mean validation accuracy: wide3 97.10, base 97.09, deep3 96.10
    assert [row[0] for row in rows] == ["wide3 − base", "wide3 − deep3", "base − deep3"]
    for row, (a, b) in zip(rows, [(HIGH, HIGH_TOO), (HIGH, LOW), (HIGH_TOO, LOW)]):
        difference, low, high = scipy_welch(a, b)
        assert row[1] == f"{difference:+.2f}"
        assert row[2] == f"{low:+.2f} to {high:+.2f}"
    not_separated = scipy_welch(HIGH, HIGH_TOO)
    assert rows[0][3] == ("not separated at this number of seeds; differences larger than "
                          f"{max(abs(not_separated[1]), abs(not_separated[2])):.2f} points are ruled out")
    assert rows[1][3] == "wide3 higher" and rows[2][3] == "base higher"
    assert_never_claims_equality(md)


def test_the_conclusion_over_seeds_names_what_is_and_is_not_separated(params):
    results = [result(**BASE, val=HIGH_TOO), result(**WIDE3, val=HIGH), result(**DEEP3, val=LOW)]
    lines = conclude(results)
    assert lines[0] == ("- Highest mean validation accuracy over 5 seeds: **wide3**, 97.10 ± 0.08 % (its test "
                        "accuracy: 96.80 ± 0.08 %; 1,615,310 parameters).")
    difference, low, high = scipy_welch(HIGH, LOW)
    assert lines[1] == (f"- Separated from it (the interval excludes 0): deep3 ({difference:.2f} points lower, 95 % "
                        f"interval {low:+.2f} to {high:+.2f}).")
    difference, low, high = scipy_welch(HIGH, HIGH_TOO)
    assert lines[2] == (f"- Not separated from it at this number of seeds: base ({difference:.2f} points lower; "
                        f"differences larger than {max(abs(low), abs(high)):.2f} points are ruled out).")
    assert "Welch" in lines[-1] and "not adjusted for the 3 pairs" in lines[-1] and "[answer.md]" in lines[-1]


def test_test_accuracy_never_chooses_over_seeds(params):
    # wide3 has the higher test accuracy on every seed, base the higher validation accuracy.
    results = [result(**BASE, val=HIGH, test=LOW), result(**WIDE3, val=LOW, test=HIGH)]
    (pair,) = pairs(results, seeds_in(results))
    assert (pair.a, pair.b) == ("base", "wide3") and pair.interval.estimate > 0
    assert conclude(results)[0].startswith("- Highest mean validation accuracy over 5 seeds: **base**")


def test_a_failed_arch_with_several_seeds_stays_out_of_the_pairs(params):
    results = [result(**BASE, val=LOW), result(**WIDE3, val=HIGH), failed_result(**DEEP3)]
    assert [(p.a, p.b) for p in pairs(results, seeds_in(results))] == [("wide3", "base")]
    lines = conclude(results)
    assert "not adjusted for the 1 pairs" in lines[-1]
    assert "- **deep3 failed**: training loss became nan in epoch 1." in lines


def test_one_seed_gives_no_pairs():
    assert pairs([result(**BASE, val=0.97), result(**WIDE3, val=0.98)], 1) == []


# --- LR range tests: every rule's pick, the one used in bold -----------------------------------------


def rules_rows(markdown: str) -> dict[str, str]:
    text = section(markdown, "LR range tests")
    return {line.split(" | ")[0][2:]: line for line in text.splitlines() if line.startswith("| ")}


def test_the_rules_table_has_every_rule_in_order(params):
    md = render(params, [result(**BASE, val=0.97)])
    header = rules_rows(md)["arch"]
    assert header.endswith(" | ".join(f"`{rule}`" for rule in RULES) + " |")
    assert list(RULES) == ["notebook", "fastai_valley", "fastai_slide", "fastai_minimum", "fastai_steep",
                           "lightning", "flat_center"]


def test_the_rule_each_arch_used_is_in_bold(params):
    # base uses lr_range.rule (flat_center); deep3 its own rule; wide3 a fixed rate, so no rule.
    p = params_with(archs__deep3={"hidden": [300, 200, 100], "rule": "fastai_valley"},
                    archs__wide3={"hidden": [800, 700, 600], "lr": 0.1})
    picks = all_picks(fastai_slide={"error": "only 12 usable points"}, notebook={"lr": 0.0123456, "step": 600})
    results = [result(**BASE, val=0.97, picks=picks),
               result(**DEEP3, val=0.98, activation="tanh", chosen="fastai_valley"),
               result(**WIDE3, val=0.96, chosen="fixed in params", lr=0.1)]
    rows = rules_rows(render(p, results))
    assert rows["base"] == ("| base | 900 | smoothed loss above 4 x its best | 0.2345 | 0.1 | "
                            "0.0123 | 0.02 | n/a | 0.04 | 0.05 | 0.06 | **0.07** |")
    assert rows["deep3"].endswith("| 0.01 | **0.02** | 0.03 | 0.04 | 0.05 | 0.06 | 0.07 |")
    assert "**" not in rows["wide3"]


def test_the_rule_marked_is_the_one_training_recorded_not_lr_range_rule(params):
    """The old study table marked lr_range.rule whatever the arch used. The mark follows the training's own
    record (lr_chosen_by), so it holds for an arch with its own rule, whatever params say now."""
    assert params.lr_range.rule == "flat_center"
    row = rules_rows(render(params, [result(**BASE, val=0.97, chosen="lightning")]))["base"]
    assert row.endswith("| **0.06** | 0.07 |")


# --- where the numbers were made ----------------------------------------------------------------------


def test_the_report_names_the_software_that_trained_each_arch_and_no_machine(params):
    other = result(**DEEP3, val=0.96)
    other = ArchResult(other.name, other.hidden, other.activation, other.metrics, other.lr_range,
                       {**SOFTWARE, "python": "3.10", "keras": "3.12.4"})
    text = section(render(params, [result(**BASE, val=0.97), other, result(**WIDE3, val=0.95)]), "Software")
    lines = [line for line in text.splitlines() if line.startswith("- ")]
    assert lines == ["- Python 3.11, TensorFlow 2.21.0, Keras 3.15.1, numpy 2.4.6: `train@base`, `train@wide3`",
                     "- Python 3.10, TensorFlow 2.21.0, Keras 3.12.4, numpy 2.4.6: `train@deep3`"]
    assert "Numerics `portable`" in text and "reports/timings/" in text


# --- what the stage reads -----------------------------------------------------------------------------


def write_evaluation(tmp_path, change) -> object:
    metrics = dict(result(**BASE, val=[0.97, 0.98]).metrics)
    change(metrics)
    path = tmp_path / "base.json"
    path.write_text(json.dumps(metrics))
    return path


def test_an_evaluation_with_every_seed_scored_reads_clean(tmp_path):
    assert report_stage.read_evaluation(write_evaluation(tmp_path, lambda m: None))["repeats"] == 2


def test_an_evaluation_with_an_unscored_seed_is_damaged(tmp_path):
    """The pairs rest on every seed's validation accuracy: one missing would quietly shrink an interval's n."""
    path = write_evaluation(tmp_path, lambda m: m["seeds"]["43"].pop("val_accuracy"))
    with pytest.raises(StageError, match=r"seeds\.43\.val_accuracy missing for an arch that did not fail: .*"
                                         r"rebuild it with `dvc repro -f` on the stage that writes it$"):
        report_stage.read_evaluation(path)


def test_the_report_removes_only_its_own_unused_figures(tmp_path, monkeypatch):
    from stages import report as report_stage

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "reports" / "figures"
    folder.mkdir(parents=True)
    for name in ("lr_range.png", "learning_curves.png", "my-sketch.png"):
        (folder / name).write_bytes(b"png")
    report_stage.remove_unused_figures({"lr_range.png"})
    assert sorted(p.name for p in folder.iterdir()) == ["lr_range.png", "my-sketch.png"]
