"""report.md from hand-made results: tables, figures, the conclusion and its statistics."""

from __future__ import annotations

import pytest
from conftest import example_params

from stages.lib.params import parse_params
from stages.lib.report import ArchResult, Study, conclusion, pairwise, render_report

FIGURES = {"lr_range": "figures/lr_range.png", "lr_rules": "figures/lr_range_rules.png",
           "digits": "figures/digits.png", "confusion": "figures/confusion.png",
           "errors": "figures/confident_errors.png"}
FIGURE = FIGURES["lr_range"]
RULE_NAMES = ("min_halved", "min_div10", "steepest", "valley")


@pytest.fixture(scope="module")
def params():
    """The tests' own params (tie_margin 0.005, val_size 5000, seed 42, one seed and one epoch)."""
    return parse_params(example_params())


def result(name: str, hidden: tuple[int, ...], acc: float | list[float], n_params: int, *, activation: str = "relu",
           chosen: str = "min_halved", lr: float = 0.05, picks: dict | None = None) -> ArchResult:
    """One arch's result; ``acc`` a list gives one run per seed (42, 43, ...)."""
    accs = acc if isinstance(acc, list) else [acc]
    mean = sum(accs) / len(accs)
    std = None if len(accs) == 1 else (sum((a - mean) ** 2 for a in accs) / (len(accs) - 1)) ** 0.5
    metrics = {
        "failed": None, "test_accuracy": mean, "test_accuracy_std": std, "test_loss": 0.1234,
        "val_accuracy": mean - 0.001, "val_loss": 0.11, "params": n_params, "size_bytes": 3 * 2**20,
        "lr": lr, "lr_chosen_by": chosen, "n_train": 55000, "n_test": 10000, "repeats": len(accs),
        "seeds": {str(42 + i): {"epochs_run": 1, "best_epoch": 0, "test_accuracy": a, "test_loss": 0.1234,
                                "val_accuracy": a - 0.001, "val_loss": 0.11} for i, a in enumerate(accs)},
        "lr_range_seconds": 3.21, "train_seconds_per_epoch": 4.56, "inference_ms": 7.89,
    }
    if picks is None:
        picks = {"min_halved": {"lr": 0.05, "step": 700}, "min_div10": {"lr": 0.01, "step": 700},
                 "steepest": {"lr": 0.02, "step": 600}, "valley": {"lr": 0.03, "step": 650}}
    lr_range = {"steps": 900, "stop_step": 890, "stop_reason": "smoothed loss above 4 x its best",
                "min_smoothed_loss": 0.2345, "lr_at_min": 0.1, "picks": picks}
    return ArchResult(name, hidden, activation, metrics, lr_range)


def conclude(results: list[ArchResult], tie_margin: float) -> list[str]:
    return conclusion(results, pairwise(results), tie_margin)


def render(params, results, **kwargs) -> str:
    return render_report(params, results, FIGURES, **kwargs)


# hidden sizes of the example params; parameter counts of Dense 784 -> hidden... -> 10
BASE = dict(name="base", hidden=(300, 100), n_params=266_610)
DEEP3 = dict(name="deep3", hidden=(300, 200, 100), n_params=316_810)
DEEP4 = dict(name="deep4", hidden=(400, 300, 200, 100), n_params=515_610)
WIDE3 = dict(name="wide3", hidden=(800, 700, 600), n_params=1_615_310)


def section(markdown: str, heading: str) -> str:
    """The text under ``## heading`` up to the next ## heading."""
    return markdown.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]


def table_rows(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith(("| arch", "| pair"))]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def results_table(markdown: str) -> list[list[str]]:
    return table_rows(section(markdown, "Results"))


def conclusion_lines(markdown: str) -> list[str]:
    return [line for line in section(markdown, "Conclusion").splitlines() if line.startswith("- ")]


def test_table_has_one_row_per_arch_sorted_by_test_accuracy(params):
    results = [result(**BASE, acc=0.9701), result(**DEEP3, acc=0.9755), result(**DEEP4, acc=0.9688),
               result(**WIDE3, acc=0.9732)]
    md = render(params, results)
    rows = results_table(md)
    assert [row[0] for row in rows] == ["deep3", "wide3", "base", "deep4"]
    assert rows[0][1] == "300 → 200 → 100"
    assert rows[0][2] == "0.05 (min_halved)"
    assert rows[0][3] == "1"
    assert rows[0][5] == "**97.55 %**"
    assert rows[2][5] == "**97.01 %**"
    assert len(rows[0]) == 7  # one seed: no per-seed column


def test_every_figure_is_linked_and_header_facts(params):
    md = render(params, [result(**BASE, acc=0.97)])
    for path in FIGURES.values():
        assert f"]({path})" in md
    assert "learning_curves" not in md  # one epoch: no learning curves
    assert md.startswith("# Which network learns best")
    assert "55,000 training, 5,000 validation and 10,000 test images" in md
    assert "seed 42)" in md and "; seed 42)" in md
    assert md.endswith("\n")


def test_learning_curves_are_linked_when_given(params):
    md = render_report(params, [result(**BASE, acc=0.97)], {**FIGURES, "curves": "figures/learning_curves.png"})
    assert "![Learning curves](figures/learning_curves.png)" in md


def test_cost_table_from_the_stages_figures(params):
    md = render(params, [result(**WIDE3, acc=0.97), result(**BASE, acc=0.96)])
    rows = table_rows(section(md, "Cost per architecture"))
    assert rows == [["base", "266,610", "3.00 MiB", "3.2", "4.6", "7.9"],
                    ["wide3", "1,615,310", "3.00 MiB", "3.2", "4.6", "7.9"]]


def test_conclusion_names_best_and_smallest_within_the_margin(params):
    # tie_margin 0.005: base is 0.3 points below deep3 and the smallest -> named;
    # wide3 is within the margin too, deep4 is 1 point below -> not close.
    results = [result(**BASE, acc=0.9720), result(**DEEP3, acc=0.9750), result(**DEEP4, acc=0.9650),
               result(**WIDE3, acc=0.9740)]
    lines = conclusion_lines(render(params, results))
    assert lines[0] == "- Best test accuracy: **deep3**, 97.50 % (316,810 parameters)."
    assert lines[1].startswith("- Smallest network within 0.5 points of it: **base**, 97.20 % (0.30 points lower)")
    assert "266,610 parameters (1.2x fewer)" in lines[1]
    assert lines[2] == "- Also within 0.5 points of the best: wide3."
    assert "deep4" not in "\n".join(lines)


def test_a_smaller_arch_outside_the_margin_is_not_chosen(params):
    results = [result(**BASE, acc=0.9600), result(**DEEP4, acc=0.9750), result(**WIDE3, acc=0.9760)]
    lines = conclude(results, params.report.tie_margin)
    assert lines[0].startswith("- Best test accuracy: **wide3**")
    assert lines[1].startswith("- Smallest network within 0.5 points of it: **deep4**")
    assert "base" not in "\n".join(lines)


def test_conclusion_when_the_best_is_also_the_smallest(params):
    results = [result(**BASE, acc=0.9800), result(**DEEP3, acc=0.9790), result(**WIDE3, acc=0.9700)]
    lines = conclusion_lines(render(params, results))
    assert lines[0] == "- Best test accuracy: **base**, 98.00 % (266,610 parameters)."
    assert lines[1] == "- No smaller network comes within 0.5 points of it."
    assert lines[2] == "- Also within 0.5 points of the best: deep3."
    assert not any("Smallest network" in line for line in lines)


def test_conclusion_with_a_single_arch(params):
    lines = conclude([result(**DEEP4, acc=0.9)], 0.005)
    assert lines[:2] == ["- Best test accuracy: **deep4**, 90.00 % (515,610 parameters).",
                         "- No smaller network comes within 0.5 points of it."]


def test_one_seed_says_it_cannot_rank(params):
    lines = conclude([result(**DEEP4, acc=0.9), result(**BASE, acc=0.89)], 0.005)
    assert "one training run with one seed" in lines[-1] and "train.repeats" in lines[-1]


def test_archs_absent_from_the_results_do_not_appear(params):
    assert set(params.archs) == {"base", "deep3", "deep4", "wide3"}
    results = [result(**BASE, acc=0.97), result(**DEEP3, acc=0.98)]
    md = render(params, results)
    assert "deep4" not in md and "wide3" not in md
    assert [row[0] for row in results_table(md)] == ["deep3", "base"]


def test_lr_range_table(params):
    picks = {"min_halved": {"lr": 0.05, "step": 700}, "min_div10": {"error": "only 3 finite points"},
             "steepest": {"lr": 0.0123456, "step": 600}, "valley": {"lr": 0.03, "step": 650}}
    results = [result(**BASE, acc=0.97, chosen="steepest", lr=0.0123456, picks=picks),
               result(**DEEP3, acc=0.98, activation="tanh", chosen="fixed in params", lr=0.1)]
    md = render(params, results)
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
    assert results_rows[0][2] == "0.1 (fixed in params)"


def test_a_gap_of_exactly_the_tie_margin_counts_as_within(params):
    results = [result(**DEEP3, acc=0.9800), result(**BASE, acc=0.9750)]
    lines = conclude(results, 0.005)
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
    md = render(params, [result(**BASE, acc=0.95)], lr_study=study)
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
    md = render(params, [result(**BASE, acc=0.95)], lr_study=study)
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
    md = render(params, results)
    rows = results_table(md)
    assert [row[0] for row in rows] == ["deep3", "base", "wide3"]
    assert "**failed**: training loss became nan in epoch 1" in rows[-1]
    assert "nan %" not in md.lower() and "None" not in md
    lines = conclusion_lines(md)
    assert lines[0].startswith("- Best test accuracy: **deep3**")
    assert any(line.startswith("- **wide3 failed**: training loss became nan") for line in lines)


def test_when_every_arch_failed_the_conclusion_says_so(params):
    no_mistakes = {key: path for key, path in FIGURES.items() if key not in ("confusion", "errors")}
    md = render_report(params, [failed_result(**BASE)], no_mistakes)
    assert "- No architecture produced a result." in conclusion_lines(md)
    assert "## Mistakes" not in md


# --- several seeds: mean ± std and which differences are real ---------------------------------

# Separated 5-seed samples: the exact permutation p is 2/252 for each pair.
LOW = [0.9600, 0.9605, 0.9610, 0.9615, 0.9620]
HIGH = [0.9700, 0.9705, 0.9710, 0.9715, 0.9720]
HIGH_TOO = [0.9701, 0.9707, 0.9709, 0.9712, 0.9716]  # interleaved with HIGH


def test_several_seeds_show_mean_std_and_each_seed(params):
    md = render(params, [result(**BASE, acc=LOW)])
    row = results_table(md)[0]
    assert row[5] == "**96.10 ± 0.08 %**"
    assert row[7] == "96.00, 96.05, 96.10, 96.15, 96.20"


def test_a_difference_beyond_the_noise_is_called_real(params):
    # one pair: Holm changes nothing, p = 2/252 = 0.0079 < 0.05
    lines = conclude([result(**BASE, acc=LOW), result(**WIDE3, acc=HIGH)], 0.005)
    assert lines[0] == "- Best mean test accuracy over 5 seeds: **wide3**, 97.10 ± 0.08 % (1,615,310 parameters)."
    assert lines[1] == "- Below it by more than seed-to-seed noise: base (1.00 points lower, adjusted p = 0.00794)."
    assert not any(line.startswith("- Not distinguishable") for line in lines)
    assert lines[-2] == ("- For scale: the standard deviation over seeds is 0.08–0.08 points per architecture; "
                         "the means span 1.00 points.")
    assert "permutation test" in lines[-1] and "Holm-corrected over all 1 pairs" in lines[-1]


def test_overlapping_seeds_are_not_distinguishable_and_the_smaller_net_is_named(params):
    results = [result(**BASE, acc=HIGH_TOO), result(**WIDE3, acc=HIGH), result(**DEEP3, acc=LOW)]
    lines = conclude(results, 0.005)
    # 3 pairs; wide3-base p close to 1 (means differ by 0.01 points), deep3 separated from both:
    # raw 2/252 each, Holm: 3 x 2/252 = 0.0238 and 2 x 2/252 -> 0.0238 (monotone).
    assert lines[0].startswith("- Best mean test accuracy over 5 seeds: **wide3**")
    assert lines[1] == "- Below it by more than seed-to-seed noise: deep3 (1.00 points lower, adjusted p = 0.0238)."
    assert lines[2].startswith("- Not distinguishable from it at this number of seeds: base (0.01 points lower")
    assert lines[3].startswith("- So the smallest network that does as well as the best, as far as these runs can "
                               "tell, is **base** (266,610 parameters, 6.1x fewer than wide3).")


def test_every_pair_is_listed_with_raw_and_adjusted_p(params):
    md = render(params, [result(**BASE, acc=HIGH_TOO), result(**WIDE3, acc=HIGH), result(**DEEP3, acc=LOW)])
    rows = table_rows(section(md, "Conclusion"))
    assert [(row[0], row[4]) for row in rows] == [
        ("base − deep3", "different"), ("wide3 − deep3", "different"), ("base − wide3", "not distinguishable")]
    assert rows[0][1:4] == ["+0.99", "0.00794", "0.0238"]


def test_a_failed_arch_with_several_seeds_stays_out_of_the_tests(params):
    results = [result(**BASE, acc=LOW), result(**WIDE3, acc=HIGH), failed_result(**DEEP3)]
    lines = conclude(results, 0.005)
    assert "over all 1 pairs" in lines[-2]
    assert lines[-1].startswith("- **deep3 failed**")


# --- the opt-in studies -----------------------------------------------------------------------

def test_a_study_section_has_its_own_table_conclusion_and_figure(params):
    study = Study("five_seeds", {"train.repeats": 5}, [result(**BASE, acc=LOW), result(**WIDE3, acc=HIGH)],
                  stale=["deep3", "deep4"], figure="figures/learning_curves_five_seeds.png")
    md = render(params, [result(**BASE, acc=0.97)], studies=[study])
    text = section(md, "Study `five_seeds`")
    assert text.startswith(": `train.repeats=5`")
    assert [row[0] for row in table_rows(text)[:2]] == ["wide3", "base"]
    assert "- Below it by more than seed-to-seed noise: base (1.00 points lower, adjusted p = 0.00794)." in text
    assert "deep3, deep4" in next(line for line in text.splitlines() if "rerun `make studies`" in line)
    assert "](figures/learning_curves_five_seeds.png)" in text
    # the run's own section still has one seed
    assert conclusion_lines(md)[0].startswith("- Best test accuracy: **base**")


def test_a_study_with_no_matching_results_shows_no_numbers(params):
    study = Study("multi_epoch", {"train.epochs": 50}, [], stale=["base"], figure=None)
    text = section(render(params, [result(**BASE, acc=0.97)], studies=[study]), "Study `multi_epoch`")
    assert "rerun `make studies`" in text and "%" not in text


def test_the_summary_comes_from_the_study_with_the_most_seeds(params):
    five = Study("five_seeds", {"train.repeats": 5}, [result(**BASE, acc=LOW), result(**WIDE3, acc=HIGH)],
                 stale=[], figure=None)
    long = Study("multi_epoch", {"train.epochs": 50}, [result(**BASE, acc=0.98)], stale=[], figure=None)
    md = render(params, [result(**BASE, acc=0.97)], studies=[long, five])
    text = section(md, "Summary")
    assert "study `five_seeds` (5 seeds per architecture" in text
    assert "- Best mean test accuracy over 5 seeds: **wide3**" in text
    assert md.index("## Summary") < md.index("## Results")


def test_no_summary_without_a_multi_seed_study(params):
    long = Study("multi_epoch", {"train.epochs": 50}, [result(**BASE, acc=0.98)], stale=[], figure=None)
    assert "## Summary" not in render(params, [result(**BASE, acc=0.97)], studies=[long])


def machine(cpu: str, **extra) -> dict:
    return {"cpu": cpu, "isa": "avx avx2", "cores": 2, "python": "3.11.7", "numpy": "2.4.6", **extra}


def test_the_report_says_which_machine_and_software_ran_each_stage(params):
    trained = machine("CPU A", tensorflow="2.21.0", keras="3.15.1", numerics="portable",
                      onednn={"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "AVX2"}, intra_op_threads=1)
    machines = {"lr_range@base": trained, "train@base": trained, "evaluate@base": machine("CPU B"),
                "lr_range@wide3": None}
    text = section(render(params, [result(**BASE, acc=0.97)], machines=machines), "Where these numbers were made")
    lines = [line for line in text.splitlines() if line.startswith("- ")]
    assert lines == [
        "- CPU A (avx, avx2), 2 cores; Python 3.11.7, TensorFlow 2.21.0, Keras 3.15.1, numpy 2.4.6; numerics "
        "`portable` (TF_ENABLE_ONEDNN_OPTS=1, ONEDNN_MAX_CPU_ISA=AVX2), 1 intra-op thread(s): `lr_range@base`, "
        "`train@base`",
        "- CPU B (avx, avx2), 2 cores; Python 3.11.7, numpy 2.4.6: `evaluate@base`",
        "- not recorded: `lr_range@wide3`",
    ]


def test_no_machine_section_without_records(params):
    assert "Where these numbers were made" not in render(params, [result(**BASE, acc=0.97)])
