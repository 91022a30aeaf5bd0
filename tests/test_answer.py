"""The answer (stages/lib/answer.py, answer_md.py, stages/evidence/answer.py) on small synthetic records:
numbers against hand and scipy computations, choices on validation even when test disagrees, honest
wording, and the stage end to end in a temporary folder, without TensorFlow."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from harness import ROOT, example_params, shaping_imports
from scipy import stats

from stages.evidence import answer as stage
from stages.ground.errors import StageError
from stages.lib.answer import (
    CHANCE,
    LongBudget,
    Ranking,
    Target,
    long_budget,
    most_accurate_epoch,
    rank,
    rule_gap,
    rule_regret,
    summarize,
    target,
)
from stages.lib.answer_md import acc, budget_section, gaps_sentence, render, standing, target_section
from stages.lib.evidence import pack_bits, unpack_bits
from stages.lib.schema import ParamsError
from stages.lib.shapes import RUN_HISTORY_KEYS
from stages.lib.stats import Interval, detectable_difference
from stages.plumbing import paths
from stages.plumbing.params import load_params

# The synthetic study: two archs, three grid rates, three training seeds, two range tests.
ARCHS = {"base": {"hidden": [300, 100]}, "deep3": {"hidden": [300, 200, 100]}}
GRID = [0.01, 0.1, 1.0]
SEEDS = [1, 2, 3]
RANGE_SEEDS = [1, 2]
LONG_RULES = {"arch": "base", "seeds": [11, 12], "rates": ["notebook", "flat_center", "grid_best"]}
HELDOUT = {"held": {"hidden": [64], "activation": "tanh", "batch_size": 64}}
N_TEST = 1000
# One-epoch validation: (best accuracy, best rate). On the held-out network the best rate is lower, so rules
# whose picks are low do better there than on the archs.
PEAK = {"base": (0.93, 0.1), "deep3": (0.95, 0.3), "held": (0.90, 0.02)}
DIVERGES = 4.0  # one epoch at this rate or above leaves no finite weights
# Each rule's pick in range tests 1 and 2 (the same for both archs); lightning diverges once.
PICKS = {"notebook": (0.5, 0.6), "fastai_valley": (0.1, 0.2), "fastai_slide": (0.8, 0.9),
         "fastai_minimum": (0.02, 0.03), "fastai_steep": (0.01, 0.012), "lightning": (0.001, 5.0),
         "flat_center": (0.7, 0.8)}
QUICK = {"notebook": 0.45, "flat_center": 0.22}  # the quick study's picks (the rest as range test 1)
# Long runs: deep3 is higher on validation, base on test: the answer must follow validation.
LONG = {"base": {"val": [0.975, 0.978, 0.976], "test": [0.981, 0.983, 0.982]},
        "deep3": {"val": [0.979, 0.981, 0.980], "test": [0.977, 0.978, 0.976]}}
# The long budget for base, per source and seed: grid_best is higher on validation, notebook on test.
BUDGET = {"notebook": {"val": [0.970, 0.972], "test": [0.985, 0.986]},
          "flat_center": {"val": LONG["base"]["val"][:2], "test": LONG["base"]["test"][:2]},
          "grid_best": {"val": [0.982, 0.984], "test": [0.979, 0.980]}}
MACHINE = {"cpu": "Test CPU", "isa": "avx2", "cores": 2, "python": "3.11.7", "numerics": "portable",
           "onednn": {"ONEDNN_MAX_CPU_ISA": "AVX2"}}
OTHER_MACHINE = {**MACHINE, "cpu": "Other CPU"}


def one_epoch_val(arch: str, lr: float, seed: int) -> float | None:
    """Validation accuracy after one epoch: a parabola in log rate, a little seed noise; None: diverged."""
    if lr >= DIVERGES:
        return None
    peak, best = PEAK[arch]
    return round(peak - 0.03 * math.log10(lr / best) ** 2 + 0.002 * (seed - 2) ** 2, 6)


def one_epoch_run(arch: str, lr: float, seed: int) -> dict:
    val = one_epoch_val(arch, lr, seed)
    if val is None:
        return {"lr": lr, "epochs_run": 1, "best_epoch": None, "failed": "loss became nan",
                "history": [{key: None for key in RUN_HISTORY_KEYS}]}
    scores = {"val_accuracy": val, "val_loss": 0.3, "test_accuracy": round(val - 0.01, 6), "test_loss": 0.3}
    return {"lr": lr, "epochs_run": 1, "best_epoch": 0, "failed": None,
            "history": [{"loss": 0.4, "accuracy": 0.9, **scores}], **scores}


def image_detail(accuracy: float, seed: int) -> dict:
    """Which test images a run gets right (a random subset of the right size) and its confusion matrix."""
    right = round(accuracy * N_TEST)
    flags = np.zeros(N_TEST, dtype=bool)
    flags[np.random.default_rng(seed).permutation(N_TEST)[:right]] = True
    labels = np.arange(N_TEST) % 10
    confusion = np.zeros((10, 10), dtype=int)
    np.add.at(confusion, (labels, np.where(flags, labels, (labels + 1) % 10)), 1)
    return {"test_correct": pack_bits(flags), "confusion": confusion.tolist()}


def long_run(lr: float, val: float, test: float, seed: int, epochs: int = 8, chosen_by: str = "flat_center") -> dict:
    """Kept (lowest validation loss) at epoch ``epochs - 3``, where validation is ``val`` and test ``test``; both
    accuracies keep rising by 0.1 points an epoch after it: the most accurate epoch is the last."""
    kept = epochs - 3
    history = [{"loss": 0.1, "accuracy": 0.99, "val_loss": 0.1 + 0.01 * abs(e - kept),
                "val_accuracy": round(val + 0.001 * (e - kept), 6), "test_loss": 0.1,
                "test_accuracy": round(test + 0.001 * (e - kept), 6)} for e in range(epochs)]
    return {"lr": lr, "lr_chosen_by": chosen_by, "epochs_run": epochs, "best_epoch": kept, "failed": None,
            "history": history,
            "val_accuracy": val, "val_loss": 0.08, "test_accuracy": test, "test_loss": 0.08}


def timing(seconds: float, machine: dict, **more) -> dict:
    return {"seconds": seconds, "cpu_seconds": seconds / 2, "other_cores_busy": 0.5, **more, "machine": machine}


def quick_picks() -> dict:
    return {rule: {"lr": QUICK.get(rule, lrs[0]), "step": 1} for rule, lrs in PICKS.items()}


def grid_best_rate(arch: str) -> float:
    return max(GRID, key=lambda lr: np.mean([one_epoch_val(arch, lr, s) for s in SEEDS]))


def records() -> dict[Path, dict]:
    """Every file the answer reads, by path (relative to the project root)."""
    files = {}
    for arch in ARCHS:
        files[paths.lr_range_json(arch)] = {"arch": arch, "picks": quick_picks()}
    for arch in (*ARCHS, *HELDOUT):
        for r, _ in enumerate(RANGE_SEEDS):
            seed = RANGE_SEEDS[r]
            files[paths.evidence_json("range", arch, seed)] = {
                "kind": "range", "arch": arch, "seed": seed, "steps": 100, "stop_step": 99,
                "stop_reason": "smoothed loss above 4 x its best", "min_smoothed_loss": 0.3, "lr_at_min": 0.5,
                "picks": {rule: {"lr": lrs[r], "step": 1} for rule, lrs in PICKS.items()}}
            files[paths.evidence_timing("range", arch, seed)] = timing(2.0, MACHINE)
        picked = sorted({lr for lrs in PICKS.values() for lr in lrs})
        for s in SEEDS:
            for kind, rates in (("grid", GRID), ("picks", picked)):
                files[paths.evidence_json(kind, arch, s)] = {
                    "kind": kind, "arch": arch, "seed": s, "runs": [one_epoch_run(arch, lr, s) for lr in rates]}
                files[paths.evidence_timing(kind, arch, s)] = timing(10.0, MACHINE, epochs=len(rates))
            if arch in HELDOUT:
                continue
            val, test = LONG[arch]["val"][s - 1], LONG[arch]["test"][s - 1]
            files[paths.evidence_json("long", arch, s)] = {
                "kind": "long", "arch": arch, "seed": s, **long_run(QUICK["flat_center"], val, test, s),
                **image_detail(test, 100 * s + len(arch))}
            files[paths.evidence_timing("long", arch, s)] = timing(40.0 * (1 + len(arch) % 2), MACHINE, epochs=8)
    rates = {"notebook": QUICK["notebook"], "flat_center": QUICK["flat_center"], "grid_best": grid_best_rate("base")}
    for source, lr in rates.items():
        for k, s in enumerate(LONG_RULES["seeds"]):
            files[paths.evidence_json("long_rules", "base", s, source)] = {
                "kind": "long_rules", "arch": "base", "seed": s,
                **long_run(lr, BUDGET[source]["val"][k], BUDGET[source]["test"][k], s, chosen_by=source)}
            files[paths.evidence_timing("long_rules", "base", s, source)] = timing(30.0, OTHER_MACHINE, epochs=8)
    return files


def params_dict() -> dict:
    p = example_params()
    p["archs"] = ARCHS
    p["evidence"] = {"seeds": SEEDS, "range_seeds": RANGE_SEEDS, "grid": GRID, "max_epochs": 8, "patience": 3,
                     "long_rules": LONG_RULES, "heldout": HELDOUT}
    return p


def write_project(root: Path, files: dict[Path, dict] | None = None, params: dict | None = None) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump(params or params_dict(), sort_keys=False))
    for path, record in (files or records()).items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder with the synthetic records, as the working directory."""
    write_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def result(project):
    params = load_params()
    return stage.answer(params, stage.load_records(params))


def welch(a, b) -> tuple[float, float]:
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    return 100 * ci.low, 100 * ci.high


# The numbers


def tukey(groups: list[list[float]], i: int, j: int) -> tuple[float, float]:
    ci = stats.tukey_hsd(*groups).confidence_interval(0.95)
    return 100 * ci.low[i, j], 100 * ci.high[i, j]


def test_rank_is_tukey_and_pooled_sd_by_hand():
    a, b, c = [0.97, 0.98, 0.99], [0.96, 0.97, 0.975], [0.95, 0.955, 0.96]
    r = rank({"b": b, "a": a, "c": c})
    assert r.best == "a" and r.order == ("a", "b", "c") and r.pairs == 3
    assert r.gaps["b"].estimate == pytest.approx(100 * (0.98 - np.mean(b)))
    # Tukey's HSD over the three groups, in the ranking's order: a is group 0
    assert (r.gaps["b"].low, r.gaps["b"].high) == pytest.approx(tukey([a, b, c], 0, 1))
    assert (r.gaps["c"].low, r.gaps["c"].high) == pytest.approx(tukey([a, b, c], 0, 2))
    # squares about the means: a 200e-6; b (mean 0.968333) 1050/9 e-6; c 50e-6; over 2 + 2 + 2 degrees of freedom
    sd = math.sqrt((200e-6 + 1050 / 9 * 1e-6 + 50e-6) / 6)
    assert r.sd == pytest.approx(100 * sd)
    assert r.detectable == pytest.approx(100 * detectable_difference(sd, 3, 3))
    assert r.n == 3


def test_each_gap_is_worded_separated_or_not_and_the_winners_curse_is_stated():
    r = rank({"a": [0.98, 0.99, 0.97], "b": [0.99, 0.96, 0.975], "c": [0.90, 0.91, 0.905]})
    sentence = gaps_sentence(r, "network")
    assert "(Tukey 95 % simultaneous intervals over all 3 pairs of the 3 networks)" in sentence
    b = r.gaps["b"]
    assert f"b {b.estimate:+.2f} [{b.low:+.2f}, {b.high:+.2f}] (not separated)" in sentence
    assert "c +" in sentence and "(separated)" in sentence
    assert "a was picked as best from these same runs, so its lead leans high (winner's curse)." in sentence


def test_the_most_accurate_epoch_is_the_first_highest_validation_accuracy():
    run = long_run(0.1, 0.98, 0.97, 1)
    assert run["best_epoch"] == 5 and most_accurate_epoch(run) == 7
    run["history"][6]["val_accuracy"] = run["history"][7]["val_accuracy"]
    assert most_accurate_epoch(run) == 6
    run["history"] = [{**row, "val_accuracy": None} for row in run["history"]]
    assert most_accurate_epoch(run) is None


def test_a_diverged_run_counts_as_chance():
    runs = [long_run(0.1, 0.98, 0.97, 1), {"lr": 0.1, "lr_chosen_by": "flat_center", "epochs_run": 2,
                                          "best_epoch": None, "failed": "nan", "history": []}]
    s = summarize(runs)
    assert s.val.estimate == pytest.approx(100 * (0.98 + CHANCE) / 2)
    assert s.test.estimate == pytest.approx(100 * (0.97 + CHANCE) / 2)
    assert s.diverged == 1
    assert s.epochs_kept == 6  # only the run that kept an epoch
    # its most accurate epoch is the last, 0.2 points above the kept one
    assert s.val_acc.estimate == pytest.approx(100 * (0.982 + CHANCE) / 2)
    assert s.test_acc.estimate == pytest.approx(100 * (0.972 + CHANCE) / 2)
    assert s.epochs_acc == 8


def test_long_answer_follows_validation_not_test(result):
    la = result.long
    assert la.ranking.best == la.ranking_acc.best == "deep3"  # higher on validation, lower on test
    assert la.summaries["deep3"].val.estimate == pytest.approx(100 * np.mean(LONG["deep3"]["val"]))
    ci = stats.ttest_1samp(LONG["base"]["test"], 0).confidence_interval(0.95)
    base = la.summaries["base"].test
    assert (base.low, base.high) == pytest.approx((100 * ci.low, 100 * ci.high))
    gap = la.ranking.gaps["base"]
    assert gap.estimate == pytest.approx(100 * (np.mean(LONG["deep3"]["val"]) - np.mean(LONG["base"]["val"])))
    assert (gap.low, gap.high) == pytest.approx(tukey([LONG["deep3"]["val"], LONG["base"]["val"]], 0, 1))
    # at the most accurate epoch (the last), every validation accuracy is 0.2 points higher
    at_best = {arch: [v + 0.002 for v in LONG[arch]["val"]] for arch in ARCHS}
    assert la.summaries["base"].val_acc.estimate == pytest.approx(100 * np.mean(at_best["base"]))
    assert la.summaries["base"].test_acc.estimate == pytest.approx(100 * (np.mean(LONG["base"]["test"]) + 0.002))
    assert (la.ranking_acc.gaps["base"].low, la.ranking_acc.gaps["base"].high) == pytest.approx(
        tukey([at_best["deep3"], at_best["base"]], 0, 1))


def test_test_set_view_is_paired_over_images(project, result):
    # per image: the fraction of seeds that got it right, deep3 minus base
    files = records()
    flags = {arch: np.mean([unpack_bits(files[paths.evidence_json("long", arch, s)]["test_correct"], N_TEST)
                            for s in SEEDS], axis=0) for arch in ARCHS}
    differences = flags["deep3"] - flags["base"]
    ci = stats.ttest_1samp(differences, 0).confidence_interval(0.95)
    g = result.long.image_gaps["base"]
    assert g.estimate == pytest.approx(100 * (np.mean(LONG["deep3"]["test"]) - np.mean(LONG["base"]["test"])))
    assert (g.low, g.high) == pytest.approx((100 * ci.low, 100 * ci.high))
    assert g.n == N_TEST


def test_one_epoch_picks_the_grid_best_on_validation(result):
    o = result.one_epoch
    for arch in ARCHS:
        assert o.grid[o.best[arch]] == grid_best_rate(arch)
        at_best = [one_epoch_val(arch, grid_best_rate(arch), s) for s in SEEDS]
        assert o.curves[arch][o.best[arch]].estimate == pytest.approx(100 * np.mean(at_best))
    assert o.ranking.best == "deep3"


@pytest.mark.parametrize("networks", [ARCHS, HELDOUT], ids=["in-sample", "held-out"])
def test_rule_regret_by_hand(result, networks):
    by_rule = {t.rule: t for t in (result.rules.in_sample if networks is ARCHS else result.rules.heldout)}
    for rule, lrs in PICKS.items():
        t = by_rule[rule]
        cells = []
        for arch in networks:
            best = grid_best_rate(arch)
            for r, lr in zip(RANGE_SEEDS, lrs):
                regrets = [one_epoch_val(arch, best, s) - (one_epoch_val(arch, lr, s) or CHANCE) for s in SEEDS]
                assert t.cells[arch, r] == pytest.approx(100 * np.mean(regrets))
                cells.append(100 * np.mean(regrets))
        ci = stats.ttest_1samp(cells, 0).confidence_interval(0.95)
        assert (t.regret.estimate, t.regret.low, t.regret.high) == pytest.approx((np.mean(cells), ci.low, ci.high))
        assert t.wander == pytest.approx(math.log10(max(lrs) / min(lrs)))
        assert t.runs == len(networks) * len(RANGE_SEEDS) * len(SEEDS)
        assert t.diverged == (len(networks) * len(SEEDS) if rule == "lightning" else 0)
    means = [t.regret.estimate for t in by_rule.values()]
    assert means == sorted(means)


def test_the_default_follows_the_heldout_regret_not_the_in_sample_one(result):
    c = result.rules
    assert c.recommended == c.heldout[0].rule and c.in_sample_best == c.in_sample[0].rule
    assert c.recommended != c.in_sample_best  # the held-out network wants lower rates: the synthetic study's point


def test_rule_without_a_pick_is_counted_not_scored():
    grids = {"a": {1: {"kind": "grid", "arch": "a", "seed": 1, "runs": [one_epoch_run("base", 0.1, 1)]}}}
    picks = {"a": {1: {"kind": "picks", "arch": "a", "seed": 1, "runs": [one_epoch_run("base", 0.02, 1)]}}}
    ranges = {"a": {1: {"picks": {"x": {"lr": 0.02, "step": 3}}}, 2: {"picks": {"x": {"error": "too short"}}}}}
    t = rule_regret("x", (0.1,), grids, picks, ranges)
    assert t.no_pick == 1 and len(t.cells) == 1 and t.regret is None and t.wander == 0
    assert rule_gap(t, t) is None  # one shared cell: no interval


def test_every_rule_against_the_recommended_one_is_paired_over_heldout_cells_with_bonferroni(result):
    c = result.rules
    by_rule = {t.rule: t for t in c.heldout}
    best = by_rule[c.recommended]
    assert set(c.leads) == set(PICKS) - {c.recommended}
    for rule, g in c.leads.items():
        differences = [by_rule[rule].cells[key] - best.cells[key] for key in best.cells]
        ci = stats.ttest_1samp(differences, 0).confidence_interval(1 - 0.05 / (len(PICKS) - 1))
        assert (g.estimate, g.low, g.high) == pytest.approx((np.mean(differences), ci.low, ci.high))


def test_long_budget_and_target_follow_validation(result):
    b = result.budget
    assert b.arch == "base" and b.ranking_acc.best == "grid_best"  # notebook is higher on test
    at_best = {source: [v + 0.002 for v in BUDGET[source]["val"]] for source in BUDGET}
    order = list(b.ranking_acc.order)
    assert (b.ranking_acc.gaps["notebook"].low, b.ranking_acc.gaps["notebook"].high) == pytest.approx(
        tukey([at_best[source] for source in order], 0, order.index("notebook")))
    t = result.target
    assert t.met == (np.mean(LONG["base"]["test"]) + 0.002 >= 0.98)
    assert t.best_source == "grid_best"
    assert (t.gap.low, t.gap.high) == pytest.approx(
        welch(at_best["grid_best"], [v + 0.002 for v in LONG["base"]["val"]]))


def test_target_without_long_budget_for_its_arch():
    s = summarize([long_run(0.1, 0.97, 0.975, 1), long_run(0.1, 0.971, 0.976, 2)])
    other = LongBudget("deep3", {}, rank({"x": [0.9, 0.91], "y": [0.8, 0.82]}),
                       rank({"x": [0.9, 0.91], "y": [0.8, 0.82]}), (), None)
    t = target(s, other)
    assert not t.met and t.best_source is None and t.gap is None


def test_cost_sums_stage_time_per_kind_and_groups_machines(result):
    c = result.cost
    k = c.kinds["range"]
    assert (k.stages, k.seconds, k.cpu_seconds, k.epochs, k.other_cores_busy) == (4, 8.0, 4.0, None, 0.5)
    k = c.kinds["grid"]
    assert (k.stages, k.seconds, k.cpu_seconds, k.epochs) == (6, 60.0, 30.0, 6 * len(GRID))
    assert (c.kinds["long_rules"].stages, c.kinds["long_rules"].seconds, c.kinds["long_rules"].epochs) == (6, 180.0,
                                                                                                         48)
    assert c.kinds["heldout_grid"].stages == len(HELDOUT) * len(SEEDS)
    assert [counts for _, counts in c.machines] == [
        {"range": 4, "grid": 6, "picks": 6, "long": 6, "heldout_range": 2, "heldout_grid": 3, "heldout_picks": 3},
        {"long_rules": 6}]
    assert c.cpu_seconds_per_epoch == {"base": 20.0 / 8, "deep3": 40.0 / 8}


def test_long_budget_of_constant_runs():
    runs = {source: {1: long_run(0.1, 0.98, 0.98, 1), 2: long_run(0.1, 0.98, 0.98, 2)} for source in ("x", "y")}
    b = long_budget("base", runs)
    assert b.ranking.best == "x" and b.summaries["x"].val.low == b.summaries["x"].val.high == 98.0
    assert (b.ranking.gaps["y"].low, b.ranking.gaps["y"].high) == (0.0, 0.0)


# The report


BANNED = ("as good", "does as well", "do as well", "equivalent", "the same as", "no difference", "indistinguishable")


def rendered(result) -> str:
    return render(load_params(), result, {key: f"answer/{name}" for key, name in stage.FIGURES.items()})


def test_report_never_claims_equality(result):
    text = rendered(result).lower()
    for phrase in BANNED:
        assert phrase not in text, phrase
    assert "(not separated)" in text  # there is a non-separated pair to word


def test_report_opens_with_the_long_answer(result):
    text = rendered(result)
    first = text.split("\n\n")[1]
    assert first.startswith("**Answer.**") and "**deep3 has the highest mean validation accuracy**" in first
    assert "base +" in first and "winner's curse" in first


def test_every_table_names_its_split_and_seeds(result):
    blocks = rendered(result).split("\n\n")
    for i, block in enumerate(blocks):
        if block.startswith("|"):
            before = blocks[i - 1].lower()
            if "cpu time" in before or "gaps to" in before:
                continue  # compute; the gaps' table follows the long runs' table, which names both
            assert "seed" in before and ("validation" in before or "regret" in before), before


def test_recommendation_states_whether_params_agree(result):
    text = rendered(result)
    assert f"Default: **{result.rules.recommended}**, the lowest held-out regret." in text
    assert "`lr_range.rule` is `flat_center`: it does not follow the held-out result" in text
    assert f"Its lead did not survive on the held-out networks: {result.rules.recommended} is lowest there" in text


# The stage, end to end


def test_stage_writes_answer_and_figures_deterministically(project, capsys):
    mine = project / paths.ANSWER_FIGURES / "my-sketch.png"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"\x89PNG")
    other = project / paths.ANSWER_FIGURES / "notes.txt"
    other.write_text("kept")
    stage.main([])
    first = {p.name: p.read_bytes() for p in (project / paths.ANSWER_FIGURES).iterdir()}
    text = (project / paths.ANSWER_MD).read_text()
    assert sorted(first) == sorted([*stage.FIGURES.values(), "my-sketch.png", "notes.txt"])  # nothing of a user's goes
    for name in stage.FIGURES.values():
        assert first[name].startswith(b"\x89PNG") and f"](answer/{name})" in text
    assert "answer: reports/answer.md: deep3 has the highest mean validation accuracy" in capsys.readouterr().out
    stage.main([])
    assert (project / paths.ANSWER_MD).read_text() == text
    assert {p.name: p.read_bytes() for p in (project / paths.ANSWER_FIGURES).iterdir()} == first


def test_stage_does_not_import_tensorflow():
    code = "import sys, stages.evidence.answer; assert 'tensorflow' not in sys.modules, 'TensorFlow imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def fails_with(message: str) -> None:
    with pytest.raises(StageError) as err:
        stage.main([])
    assert message in str(err.value) and "`dvc repro evidence/dvc.yaml`" in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_record_names_it(project):
    path = paths.evidence_json("picks", "deep3", 2)
    (project / path).unlink()
    fails_with(f"{path} is missing")
    assert not (project / paths.ANSWER_MD).exists()


@pytest.mark.parametrize("damage, message", [
    (lambda r: r.update(kind="grid"), "kind is 'grid', not 'long'"),
    (lambda r: r.update(val_accuracy="high"), "val_accuracy is 'high', not a fraction from 0 to 1"),
    (lambda r: r.update(val_accuracy=98.3), "val_accuracy is 98.3, not a fraction from 0 to 1"),  # a percent
    (lambda r: r.update(test_accuracy=-0.5), "test_accuracy is -0.5, not a fraction from 0 to 1"),
    (lambda r: r.update(epochs_run=0), "epochs_run is 0, not an integer >= 1"),
    (lambda r: r["history"][0].update(val_loss=-1.0), "history[0].val_loss is -1.0, not a number >= 0"),
    (lambda r: r.pop("test_loss"), "the run at rate 0.22 has some of val_accuracy"),
    (lambda r: r.update(best_epoch=8), "the run at rate 0.22 has 8 epochs of history, epochs_run 8 and best_epoch 8"),
    (lambda r: r.update(lr=0.3), "trained at rate 0.3 (flat_center), but its source now names 0.22"),
    (lambda r: r.update(test_accuracy=0.5), "test_correct (983 right), confusion (983 of 1000 right) and "
                                            "test_accuracy 0.5 disagree"),
    (lambda r: r.update(test_correct="AAA"), "test_correct is not base64 (Incorrect padding)"),
    (lambda r: r.update(test_correct="AAAA"), "test_correct holds 24 images' results, but confusion counts 1000"),
])
def test_damaged_long_record_names_it(project, damage, message):
    path = project / paths.evidence_json("long", "base", 2)
    record = json.loads(path.read_text())
    damage(record)
    path.write_text(json.dumps(record))
    fails_with(f"{paths.evidence_json('long', 'base', 2)}: {message}")


def test_nan_infinity_and_invalid_json_are_damage(project):
    path = paths.evidence_json("grid", "base", 1)
    text = (project / path).read_text()
    (project / path).write_text(text.replace("0.3,", "NaN,", 1))
    fails_with(f"{path}: runs[0].history[0].test_loss is nan, which is not a JSON number")
    (project / path).write_text(text.replace("0.3,", "1e400,", 1))
    fails_with(f"{path}: runs[0].history[0].test_loss is inf, which is not a JSON number")
    (project / path).write_text("{")
    fails_with(f"{path} is not valid JSON (Expecting property name")


@pytest.mark.parametrize("damage, message", [
    (lambda t: t.update(epochs=0), "epochs is 0, not an integer >= 1"),
    (lambda t: t.update(seconds=-3.0), "seconds is -3.0, not a number >= 0"),
    (lambda t: t.pop("cpu_seconds"), "cpu_seconds is missing"),
])
def test_an_absurd_timing_is_refused_by_file_and_field(project, damage, message):
    path = paths.evidence_timing("long", "deep3", 1)
    record = json.loads((project / path).read_text())
    damage(record)
    (project / path).write_text(json.dumps(record))
    fails_with(f"{path}: {message}")


def test_grid_record_without_a_grid_rate(project):
    path = paths.evidence_json("grid", "deep3", 3)
    record = json.loads((project / path).read_text())
    record["runs"] = record["runs"][:-1]
    (project / path).write_text(json.dumps(record))
    fails_with(f"{path}: no run at rate(s) 1")


def test_one_seed_is_refused_as_params(tmp_path, monkeypatch):
    p = params_dict()
    p["evidence"]["long_rules"] = {**LONG_RULES, "seeds": [11]}
    write_project(tmp_path, params=p)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ParamsError, match="evidence.long_rules.seeds: too few seeds"):
        stage.main([])


def test_answer_stage_deps_are_the_modules_it_imports():
    spec = yaml.safe_load((ROOT / "evidence/dvc.yaml").read_text())["stages"]["answer"]
    code = {dep for dep in spec["deps"] if dep.endswith(".py")}
    assert code == shaping_imports(Path("stages/evidence/answer.py"))
    assert {"reports/evidence", "reports/lr_range"} <= set(spec["deps"])
    assert [next(iter(out)) for out in spec["outs"]] == [paths.ANSWER_MD.as_posix(), paths.ANSWER_FIGURES.as_posix()]


def diverge(record: dict) -> None:
    """What a long run whose kept weights were not finite leaves: no scores, no per-image results."""
    for key in ("val_accuracy", "val_loss", "test_accuracy", "test_loss", "test_correct", "confusion"):
        record.pop(key)
    record.update(best_epoch=None, failed="loss became nan in epoch 2")


def test_diverged_long_run_counts_as_chance_and_the_report_says_so(tmp_path, monkeypatch):
    files = records()
    diverge(files[paths.evidence_json("long", "base", 3)])
    write_project(tmp_path, files)
    monkeypatch.chdir(tmp_path)
    params = load_params()
    result = stage.answer(params, stage.load_records(params))
    base = result.long.summaries["base"]
    assert base.diverged == 1
    assert base.val.estimate == pytest.approx(100 * np.mean([*LONG["base"]["val"][:2], CHANCE]))
    # per image, the diverged run is right with probability 1/10
    g = result.long.image_gaps["base"]
    assert g.estimate == pytest.approx(100 * (np.mean(LONG["deep3"]["test"]) - np.mean([*LONG["base"]["test"][:2],
                                                                                           CHANCE])))
    assert "1 run(s) ended without finite weights; each counts as chance (10 % accuracy)" in rendered(result)


def target_text(val_gap: tuple[float, float], best_test: float) -> str:
    long = summarize([long_run(0.2, 0.975, 0.973, 1), long_run(0.2, 0.977, 0.974, 2)])
    best = summarize([long_run(0.1, 0.98, best_test, 1), long_run(0.1, 0.982, best_test, 2)])
    t = Target(long, False, "grid_best", best, Interval(sum(val_gap) / 2, *val_gap, 4))
    return "\n".join(target_section(SimpleNamespace(target=t)))


def test_the_target_sentence_says_whether_the_seeds_can_tell():
    def said(tests: list[float]) -> str:
        long = summarize([long_run(0.2, 0.98, test - 0.002, seed) for seed, test in enumerate(tests, 1)])
        t = Target(long, long.test_acc.estimate >= 98.0, None, None, None)
        return "\n".join(target_section(SimpleNamespace(target=t)))

    assert "The mean, 97.500 %, is below 98.0 %, and its interval lies below it." in said([0.975, 0.9751, 0.9749])
    assert "The mean, 98.200 %, meets 98.0 %, and its interval lies above it." in said([0.982, 0.9821, 0.9819])
    assert "The mean, 97.999 %, is below 98.0 %; its interval holds 98.0 %" in said([0.97999, 0.97989, 0.98009])


def test_the_configured_rule_first_at_the_long_budget_says_from_how_many_it_is_not_separated():
    def said(gaps: dict[str, tuple[float, float]]) -> list[str]:
        ranking = Ranking("flat_center", ("flat_center", *gaps),
                          {name: Interval(sum(g) / 2, *g, 3) for name, g in gaps.items()}, 0.2, 0.5, 3)
        params = SimpleNamespace(lr_range=SimpleNamespace(rule="flat_center"))
        return standing(params, SimpleNamespace(budget=SimpleNamespace(ranking_acc=ranking, left_out=())))

    assert said({"notebook": (-0.3, 1.0), "lightning": (0.4, 1.9)}) == [
        "- flat_center (the configured rule, `lr_range.rule`) ranks 1 of 3 by mean: first, not separated from 1 of "
        "the other 2.",
        "- notebook (the original notebook's rule) ranks 2 of 3 by mean: flat_center minus it +0.35 [-0.30, +1.00] "
        "points (Tukey 95 %: not separated)."]
    assert said({"lightning": (0.4, 1.9)})[0].endswith("first, separated from every other source.")


def diverged_long_run(lr: float, seed: int) -> dict:
    """What a long run that diverged in its first epoch records (no scores, no kept epoch)."""
    return {"lr": lr, "lr_chosen_by": "grid_higher", "epochs_run": 1, "best_epoch": None, "failed": "loss became nan",
            "history": [{"loss": None, "accuracy": 0.3, "val_loss": None, "val_accuracy": 0.0958, "test_loss": None,
                         "test_accuracy": None}]}


def test_a_source_with_a_diverged_run_is_left_out_of_the_long_budgets_ranking_but_stays_in_its_table():
    runs = {"x": {1: long_run(0.1, 0.980, 0.98, 1), 2: long_run(0.1, 0.982, 0.98, 2)},
            "y": {1: long_run(0.2, 0.970, 0.97, 1), 2: long_run(0.2, 0.971, 0.97, 2)},
            "z": {1: long_run(1.0, 0.95, 0.95, 1), 2: diverged_long_run(1.0, 2)}}
    b = long_budget("base", runs)
    assert b.left_out == ("z",) and b.ranking_acc.order == ("x", "y") and b.ranking.order == ("x", "y")
    every = rank({source: summarize(list(by_seed.values())).vals_acc for source, by_seed in runs.items()})
    assert b.width_with_left_out == pytest.approx(max((g.high - g.low) / 2 for g in every.gaps.values()))
    assert b.width_with_left_out > 10 * (b.ranking_acc.gaps["y"].high - b.ranking_acc.gaps["y"].low)
    said = "\n".join(budget_section(SimpleNamespace(evidence=SimpleNamespace(long_rules=SimpleNamespace(seeds=[1, 2])),
                                                    lr_range=SimpleNamespace(rule="z")),
                                    SimpleNamespace(budget=b)))
    assert "Left out of the ranking, for a diverged run counted as chance: z (1 of 2 runs)." in said
    assert f"the widest interval would be ±{b.width_with_left_out:.2f} points" in said
    assert "| z | 1 |" in said and said.index("| y |") < said.index("| z |")
    assert "- z (the configured rule, `lr_range.rule`) is left out of the ranking: a run at its rate diverged." in said


def test_every_source_diverging_ranks_them_all():
    runs = {source: {1: long_run(0.1, 0.98, 0.98, 1), 2: diverged_long_run(0.1, 2)} for source in ("x", "y")}
    b = long_budget("base", runs)
    assert b.left_out == () and b.width_with_left_out is None and set(b.ranking_acc.order) == {"x", "y"}


def test_an_accuracy_interval_is_cut_at_0_and_100_percent():
    assert acc(Interval(77.27, 35.85, 118.70, 2)) == "77.27 % [35.85, 100.00]"
    assert acc(Interval(3.0, -1.5, 7.5, 2)) == "3.00 % [0.00, 7.50]"
    assert acc(Interval(98.0, 97.5, 98.5, 2)) == "98.00 % [97.50, 98.50]"


def test_target_asks_whether_another_rate_does_better():
    assert ("The mean, 97.550 %, is below 98.0 %; its interval holds 98.0 %, so these seeds do not tell on which "
            "side of it base's true mean lies.") in target_text((0.1, 0.5), 0.985)
    assert "Separated: a better rate helps on validation, with test at or above the target at it (98.70 %)" in \
        target_text((0.1, 0.5), 0.985)
    assert "with test still below the target at it (97.70 %)" in target_text((0.1, 0.5), 0.975)
    assert "Not separated: these runs do not show another rate doing better, nor rule it out." in \
        target_text((-0.4, 0.3), 0.985)
    assert "(Welch 95 %; other seeds, so other runs)" in target_text((0.1, 0.5), 0.975)
    for reference in ("Géron", "98.00 %", "LeCun", "96.95 %"):
        assert reference in target_text((0.1, 0.5), 0.975)


def test_missing_quick_study_names_its_pipeline(project):
    (project / paths.lr_range_json("deep3")).unlink()
    with pytest.raises(StageError, match=r"reports/lr_range/deep3.json is missing: rebuild it with `dvc repro` "
                                         r"\(the quick study\), then `dvc repro evidence/dvc.yaml`"):
        stage.main([])


def test_one_group_ranks_with_nothing_to_compare():
    r = rank({"a": [0.97, 0.98]})
    assert r.best == "a" and r.gaps == {} and r.pairs == 0
    assert gaps_sentence(r, "network") == "a is the only network: there is nothing to compare it with."
