"""Every number of reports/answer.md, from the evidence records: pure functions, no TensorFlow, no files.

"Which network learns best when each gets its own tuned learning rate?" Every choice here (the best
arch, the epoch a run keeps, an arch's best grid rate, the rule to recommend, the best rate for the long
budget) is made on validation; test accuracy is only reported for what was chosen. Where the best is picked
from several groups, the gaps to it are Tukey's simultaneous intervals over every pair of those groups.
Records hold accuracies as fractions; every Interval returned here is in percentage points. A run whose
kept weights were not finite has no scores: it counts as chance (evidence.CHANCE), and the report says how
many did.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from stages.lib.evidence import CHANCE, grid_best, record_at, unpack_bits
from stages.lib.lr_finder import RULES
from stages.lib.schema import Params
from stages.lib.stats import (
    CONFIDENCE,
    Interval,
    bonferroni,
    detectable_difference,
    mean_interval,
    paired_interval,
    pooled_sd,
    simultaneous_gaps,
    welch_interval,
)

POINTS = 100.0  # fractions -> percentage points
TARGET_ARCH = "base"  # the network (300-100) and its target test accuracy
TARGET = 0.98


@dataclass(frozen=True)
class OneEpochRecords:
    """The regret protocol's records of some networks: network -> seed -> record."""
    ranges: dict[str, dict[int, dict]]
    grids: dict[str, dict[int, dict]]
    picks: dict[str, dict[int, dict]]


@dataclass(frozen=True)
class Records:
    """What the answer stage read and checked, keyed as the evidence is laid out."""
    ranges: dict[str, dict[int, dict]]  # arch -> range seed -> range test record
    grids: dict[str, dict[int, dict]]  # arch -> training seed -> grid record
    picks: dict[str, dict[int, dict]]  # arch -> training seed -> picks record
    heldout: "OneEpochRecords"  # the same three for evidence.heldout's networks
    longs: dict[str, dict[int, dict]]  # arch -> training seed -> long record
    long_rules: dict[str, dict[int, dict]]  # rate source -> seed -> long_rules record (evidence.long_rules.arch)
    timings: dict[str, dict[str, list[dict]]]  # kind -> arch -> its stages' timing records
    n_test: int  # test images (every long run's confusion matrix sums to it)


def score(run: dict, part: str = "val") -> float:
    """A run's accuracy on ``part`` (val or test); chance for a run without scores."""
    return run.get(f"{part}_accuracy", CHANCE)


def diverged(run: dict) -> bool:
    return "val_accuracy" not in run


def most_accurate_epoch(run: dict) -> int | None:
    """The epoch (0-based) of the highest validation accuracy Keras logged, the first on a tie; None when no epoch
    has one."""
    accuracies = [row["val_accuracy"] for row in run["history"]]
    finite = [a for a in accuracies if a is not None]
    return accuracies.index(max(finite)) if finite else None


def at_epoch(run: dict, epoch: int | None, part: str) -> float:
    """Accuracy on ``part`` at ``epoch`` from the run's history; chance where there is none."""
    value = None if epoch is None else run["history"][epoch][f"{part}_accuracy"]
    return CHANCE if value is None else value


# Groups of runs over training seeds, and ranking them on validation.


@dataclass(frozen=True)
class Summary:
    """One group of runs (an arch's, or a rate source's) over training seeds, at the epoch each run keeps (lowest
    validation loss, what early stopping restores) and at its most accurate epoch on validation."""
    lr: float
    chosen_by: str  # what named the rate (the records' lr_chosen_by)
    vals: tuple[float, ...]  # per seed, validation accuracy at the kept epoch (fractions)
    val: Interval  # mean and 95 % t interval over seeds, points
    test: Interval
    epochs_run: float  # mean over seeds
    epochs_kept: float | None  # mean kept epoch (1-based) over the runs that kept one
    diverged: int  # runs without scores, counted as chance
    vals_acc: tuple[float, ...]  # per seed, validation accuracy at its most accurate epoch (fractions)
    val_acc: Interval  # the same at each run's most accurate epoch on validation, points
    test_acc: Interval
    epochs_acc: float | None  # mean most accurate epoch (1-based)


def summarize(runs: Sequence[dict]) -> Summary:
    kept = [run["best_epoch"] + 1 for run in runs if run["best_epoch"] is not None]
    vals = tuple(score(run) for run in runs)
    accurate = [most_accurate_epoch(run) for run in runs]
    vals_acc = tuple(at_epoch(run, e, "val") for run, e in zip(runs, accurate))
    return Summary(
        lr=runs[0]["lr"],
        chosen_by=runs[0]["lr_chosen_by"],
        vals=vals,
        val=mean_interval(vals).scaled(POINTS),
        test=mean_interval([score(run, "test") for run in runs]).scaled(POINTS),
        epochs_run=float(np.mean([run["epochs_run"] for run in runs])),
        epochs_kept=float(np.mean(kept)) if kept else None,
        diverged=sum(diverged(run) for run in runs),
        vals_acc=vals_acc,
        val_acc=mean_interval(vals_acc).scaled(POINTS),
        test_acc=mean_interval([at_epoch(run, e, "test") for run, e in zip(runs, accurate)]).scaled(POINTS),
        epochs_acc=float(np.mean([e + 1 for e in accurate if e is not None])) if any(
            e is not None for e in accurate) else None,
    )


@dataclass(frozen=True)
class Ranking:
    """Groups ranked by mean validation accuracy; each other group's gap to the best, as Tukey's simultaneous
    intervals over every pair of the groups (the best was picked from these same values)."""
    best: str
    order: tuple[str, ...]  # best first; ties keep the given order
    gaps: dict[str, Interval]  # other -> best minus other, Tukey HSD 95 % simultaneous interval, points
    sd: float  # within-group standard deviation pooled over groups, points
    detectable: float  # smallest true gap a two-sided test at 5 % finds with 80 % power at these seeds, points
    n: int  # seeds per group (the smallest group)

    @property
    def pairs(self) -> int:
        """The family the gaps' intervals hold over together: every pair of groups."""
        return len(self.order) * (len(self.order) - 1) // 2


def rank(values: dict[str, Sequence[float]]) -> Ranking:
    """``values``: group -> its per-seed validation accuracies (fractions)."""
    means = {name: float(np.mean(v)) for name, v in values.items()}
    order = tuple(sorted(values, key=lambda name: -means[name]))
    best = order[0]
    gaps = simultaneous_gaps({name: values[name] for name in order}, best)
    sd = pooled_sd(list(values.values()))
    n = min(len(v) for v in values.values())
    return Ranking(best, order, {name: g.scaled(POINTS) for name, g in gaps.items()}, POINTS * sd,
                   POINTS * detectable_difference(sd, n, n), n)


# The answer: the quick study's rate per arch, trained until early stopping.


@dataclass(frozen=True)
class LongAnswer:
    summaries: dict[str, Summary]  # arch -> its long runs
    ranking: Ranking  # on validation at the kept epoch (lowest validation loss), over training seeds
    ranking_acc: Ranking  # on validation at each run's most accurate epoch: the headline's
    image_gaps: dict[str, Interval]  # other arch -> chosen minus other on test at the kept epoch, paired over
    # images, points; Bonferroni over the other archs
    n_test: int


def image_scores(runs: Sequence[dict], n_test: int) -> np.ndarray:
    """Per test image, the fraction of runs (seeds) that got it right; a run without scores counts as
    chance on every image."""
    return np.mean([np.full(n_test, CHANCE) if diverged(run) else unpack_bits(run["test_correct"], n_test)
                    for run in runs], axis=0)


def long_answer(longs: dict[str, dict[int, dict]], n_test: int) -> LongAnswer:
    runs = {arch: list(by_seed.values()) for arch, by_seed in longs.items()}
    summaries = {arch: summarize(r) for arch, r in runs.items()}
    ranking = rank({arch: s.vals for arch, s in summaries.items()})
    scores = {arch: image_scores(r, n_test) for arch, r in runs.items()}
    chosen = scores[ranking.best]
    level = bonferroni(CONFIDENCE, len(ranking.order) - 1)
    gaps = {arch: paired_interval(chosen - scores[arch], level).scaled(POINTS) for arch in ranking.order[1:]}
    return LongAnswer(summaries, ranking, rank({arch: s.vals_acc for arch, s in summaries.items()}), gaps, n_test)


def per_class(runs: Sequence[dict]) -> list[Interval]:
    """Per digit, the share of its test images classified right (from each run's confusion matrix):
    mean and t interval over seeds, points; a run without scores counts as chance."""
    recalls = [np.full(10, CHANCE) if diverged(run) else
               np.diag(np.array(run["confusion"])) / np.array(run["confusion"]).sum(axis=1) for run in runs]
    return [mean_interval(column).scaled(POINTS) for column in np.array(recalls).T]


# One epoch: the grid.


@dataclass(frozen=True)
class OneEpoch:
    grid: tuple[float, ...]
    curves: dict[str, list[Interval]]  # arch -> per grid rate, validation over seeds, points
    best: dict[str, int]  # arch -> index of its best grid rate (mean validation over seeds)
    test: dict[str, Interval]  # arch -> test at its best grid rate, points
    ranking: Ranking  # the archs at their best grid rates, on validation


def one_epoch(grid: tuple[float, ...], grids: dict[str, dict[int, dict]]) -> OneEpoch:
    curves, best, at_best, test = {}, {}, {}, {}
    for arch, by_seed in grids.items():
        records = list(by_seed.values())
        curves[arch] = [mean_interval([score(record_at(r, lr)) for r in records]).scaled(POINTS) for lr in grid]
        best[arch] = grid_best(grid, records)
        runs = [record_at(r, grid[best[arch]]) for r in records]
        at_best[arch] = [score(run) for run in runs]
        test[arch] = mean_interval([score(run, "test") for run in runs]).scaled(POINTS)
    return OneEpoch(grid, curves, best, test, rank(at_best))


# The LR rules against the grid.


@dataclass(frozen=True)
class RuleRegret:
    rule: str
    cells: dict[tuple[str, int], float]  # (arch, range seed) -> regret averaged over training seeds, points
    regret: Interval | None  # t interval over the cells (None below two)
    wander: float | None  # decades: the largest log10(max pick / min pick) across range seeds, over archs
    wander_arch: str | None  # the arch it is largest for
    diverged: int  # one-epoch runs at the rule's picks without scores (counted as chance)
    runs: int  # one-epoch runs at the rule's picks
    no_pick: int  # range tests in which the rule picked no rate


def rule_regret(rule: str, grid: tuple[float, ...], grids: dict[str, dict[int, dict]],
                picks: dict[str, dict[int, dict]], ranges: dict[str, dict[int, dict]]) -> RuleRegret:
    """Regret of one rule: for each arch, range seed r and training seed s, validation accuracy at the
    arch's best grid rate minus validation accuracy at the rule's pick in range test r, both trained with
    seed s for one epoch.

    Args:
        rule: one of lr_finder.RULES.
        grid: evidence.grid.
        grids: arch -> training seed -> grid record.
        picks: arch -> training seed -> picks record (a run at every rate any rule picked).
        ranges: arch -> range seed -> range test record: the archs ``rule`` is measured on.
    """
    cells, wander, diverged_runs, runs, no_pick = {}, {}, 0, 0, 0
    for arch, by_range_seed in ranges.items():
        best_lr = grid[grid_best(grid, list(grids[arch].values()))]
        lrs = []
        for r, range_record in by_range_seed.items():
            pick = range_record["picks"][rule]
            if "lr" not in pick:
                no_pick += 1
                continue
            lrs.append(pick["lr"])
            at_pick = [record_at(picks[arch][s], pick["lr"]) for s in grids[arch]]
            regrets = [score(record_at(grids[arch][s], best_lr)) - score(run) for s, run in zip(grids[arch], at_pick)]
            cells[arch, r] = POINTS * float(np.mean(regrets))
            diverged_runs += sum(diverged(run) for run in at_pick)
            runs += len(at_pick)
        if lrs:
            wander[arch] = float(np.log10(max(lrs) / min(lrs)))
    widest = max(wander, key=wander.get) if wander else None
    regret = mean_interval(list(cells.values())) if len(cells) >= 2 else None
    return RuleRegret(rule, cells, regret, wander.get(widest), widest, diverged_runs, runs, no_pick)


def rule_regrets(rules: Sequence[str], grid: tuple[float, ...], grids: dict[str, dict[int, dict]],
                 picks: dict[str, dict[int, dict]], ranges: dict[str, dict[int, dict]]) -> list[RuleRegret]:
    """Every rule's regret (rule_regret, whose arguments these are), lowest mean first (a rule without an interval
    last)."""
    table = [rule_regret(rule, grid, grids, picks, ranges) for rule in rules]
    return sorted(table, key=lambda t: (t.regret is None, t.regret.estimate if t.regret else 0.0))


def rule_gap(a: RuleRegret, b: RuleRegret, confidence: float = CONFIDENCE) -> Interval | None:
    """Regret of ``a`` minus regret of ``b``, paired over the (arch, range seed) cells both picked in:
    t interval, points (None below two shared cells)."""
    shared = [key for key in a.cells if key in b.cells]
    return paired_interval([a.cells[key] - b.cells[key] for key in shared], confidence) if len(shared) >= 2 else None


@dataclass(frozen=True)
class RuleChoice:
    """The rules' regret on the networks they were chosen on (in sample) and on the held-out ones; the default
    follows the held-out regret."""
    in_sample: list[RuleRegret]  # lowest mean regret first
    heldout: list[RuleRegret]
    recommended: str | None  # the lowest held-out mean regret (None: no rule has an interval there)
    in_sample_best: str | None  # the lowest in-sample mean regret
    leads: dict[str, Interval]  # other rule -> its held-out regret minus the recommended one's, paired over the
    # held-out cells, Bonferroni over the other rules


def rule_choice(in_sample: list[RuleRegret], heldout: list[RuleRegret]) -> RuleChoice:
    recommended = heldout[0].rule if heldout and heldout[0].regret is not None else None
    by_name = {t.rule: t for t in heldout}
    level = bonferroni(CONFIDENCE, len(heldout) - 1)
    leads = {t.rule: g for t in heldout if recommended is not None and t.rule != recommended
             and (g := rule_gap(t, by_name[recommended], level)) is not None}
    best_in = in_sample[0].rule if in_sample and in_sample[0].regret is not None else None
    return RuleChoice(in_sample, heldout, recommended, best_in, leads)


# The long budget for evidence.long_rules.arch, and the target.


@dataclass(frozen=True)
class LongBudget:
    arch: str
    summaries: dict[str, Summary]  # rate source -> its runs
    ranking: Ranking  # ranked sources on validation at the kept epoch
    ranking_acc: Ranking  # ranked sources on validation at each run's most accurate epoch
    left_out: tuple[str, ...]  # sources with a diverged run, not ranked
    width_with_left_out: float | None  # half-width of the widest Tukey interval had they been ranked, points


def long_budget(arch: str, long_rules: dict[str, dict[int, dict]]) -> LongBudget:
    """Sources with a diverged run are left out of the ranking: a run at chance, pooled into Tukey's variance,
    would widen every other source's interval until none could be told apart. They stay in the table."""
    summaries = {source: summarize(list(by_seed.values())) for source, by_seed in long_rules.items()}
    left_out = tuple(source for source, s in summaries.items() if s.diverged)
    if len(left_out) == len(summaries):
        left_out = ()
    ranked = {source: s for source, s in summaries.items() if source not in left_out}
    width = None
    if left_out:
        every = rank({source: s.vals_acc for source, s in summaries.items()})
        width = max((g.high - g.low) / 2 for g in every.gaps.values())
    return LongBudget(arch, summaries, rank({source: s.vals for source, s in ranked.items()}),
                      rank({source: s.vals_acc for source, s in ranked.items()}), left_out, width)


@dataclass(frozen=True)
class Target:
    """Does TARGET_ARCH reach TARGET on test (at the headline's epoch, its most accurate on validation), and if
    not, is its rate what holds it back?"""
    long: Summary  # its long runs, at the quick study's rate
    met: bool  # mean test accuracy >= TARGET
    best_source: str | None  # the best long-budget source on validation (when the long budget trains it)
    best: Summary | None
    gap: Interval | None  # best source's validation minus the long runs', Welch, points: other seeds, other runs


def target(long: Summary, budget: LongBudget) -> Target:
    """``long``: TARGET_ARCH's long runs; ``budget``: the long budget, which may train another arch."""
    met = long.test_acc.estimate >= POINTS * TARGET
    if budget.arch != TARGET_ARCH:
        return Target(long, met, None, None, None)
    best = budget.summaries[budget.ranking_acc.best]
    return Target(long, met, budget.ranking_acc.best, best,
                  welch_interval(best.vals_acc, long.vals_acc).scaled(POINTS))


# What it cost, and where it ran.


@dataclass(frozen=True)
class KindCost:
    stages: int
    cpu_seconds: float  # user + sys of the stages' processes: what load inflates least
    seconds: float  # wall
    epochs: int | None  # epochs trained (None for range tests: a sweep)
    other_cores_busy: float | None  # mean over the stages of the cores other work kept busy (None: not recorded)


@dataclass(frozen=True)
class Cost:
    kinds: dict[str, KindCost]
    machines: list[tuple[dict, dict[str, int]]]  # each distinct machine record -> stages per kind that ran on it
    cpu_seconds_per_epoch: dict[str, float]  # arch -> its long runs' CPU seconds over epochs


def cost(timings: dict[str, dict[str, list[dict]]]) -> Cost:
    kinds, machines = {}, {}
    for kind, by_arch in timings.items():
        records = [t for ts in by_arch.values() for t in ts]
        epochs = sum(t["epochs"] for t in records) if all("epochs" in t for t in records) else None  # range: a sweep
        loads = [t["other_cores_busy"] for t in records]
        kinds[kind] = KindCost(len(records), sum(t["cpu_seconds"] for t in records),
                               sum(t["seconds"] for t in records), epochs,
                               None if None in loads else float(np.mean(loads)))
        for t in records:
            _, counts = machines.setdefault(json.dumps(t["machine"], sort_keys=True), (t["machine"], {}))
            counts[kind] = counts.get(kind, 0) + 1
    per_epoch = {arch: sum(t["cpu_seconds"] for t in ts) / sum(t["epochs"] for t in ts)
                 for arch, ts in timings["long"].items()}
    return Cost(kinds, list(machines.values()), per_epoch)


# Everything together.


@dataclass(frozen=True)
class Answer:
    long: LongAnswer
    one_epoch: OneEpoch
    rules: RuleChoice
    budget: LongBudget
    target: Target | None  # None when params has no TARGET_ARCH
    cost: Cost


def answer(params: Params, records: Records) -> Answer:
    grid = params.evidence.grid
    held = records.heldout
    rules = rule_choice(rule_regrets(list(RULES), grid, records.grids, records.picks, records.ranges),
                        rule_regrets(list(RULES), grid, held.grids, held.picks, held.ranges))
    long = long_answer(records.longs, records.n_test)
    budget = long_budget(params.evidence.long_rules.arch, records.long_rules)
    return Answer(long, one_epoch(grid, records.grids), rules, budget,
                  target(long.summaries[TARGET_ARCH], budget) if TARGET_ARCH in long.summaries else None,
                  cost(records.timings))


# What the figures draw.


def pick_points(records: Records, rules: Sequence[str]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """arch -> rule -> (its pick in each range test, the mean one-epoch validation accuracy there, points)."""
    out = {}
    for arch, by_range_seed in records.ranges.items():
        units = list(records.picks[arch].values())
        lrs = {rule: [r["picks"][rule]["lr"] for r in by_range_seed.values() if "lr" in r["picks"][rule]]
               for rule in rules}
        out[arch] = {rule: [(lr, POINTS * float(np.mean([score(record_at(u, lr)) for u in units]))) for lr in picked]
                     for rule, picked in lrs.items()}
    return out


def learning_curves(longs: dict[str, dict[int, dict]], key: str = "val_accuracy") -> dict[str, dict[int, tuple]]:
    """arch -> seed -> (``key`` per epoch (accuracies in points), None where not finite; the kept epoch's index;
    the most accurate epoch's index on validation)."""
    factor = POINTS if key.endswith("accuracy") else 1.0
    return {arch: {seed: ([None if row[key] is None else factor * row[key] for row in run["history"]],
                          run["best_epoch"], most_accurate_epoch(run))
                   for seed, run in by_seed.items()} for arch, by_seed in longs.items()}


def headline(a: Answer) -> dict:
    """The answer's metric file (shapes.ANSWER_METRICS): the few numbers `dvc exp show` and `dvc metrics diff`
    show of the evidence."""
    networks = {arch: {"val_accuracy": round(s.val_acc.estimate / POINTS, 6),
                       "test_accuracy": round(s.test_acc.estimate / POINTS, 6)} for arch, s in a.long.summaries.items()}
    c = a.rules

    def regret_of(regrets: list[RuleRegret]) -> float | None:
        found = [t.regret for t in regrets if t.rule == c.recommended and t.regret is not None]
        return round(found[0].estimate, 4) if found else None

    return {"networks": networks,
            "default_rule": {"in_sample_regret": regret_of(c.in_sample), "heldout_regret": regret_of(c.heldout)}}
