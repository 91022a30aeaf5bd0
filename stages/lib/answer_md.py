"""Render reports/answer.md from stages.lib.answer's numbers. Pure: data in, Markdown out.

Wording rules: a gap whose interval holds 0 is "not separated", never "as good"; every sentence carries the
number it rests on; where the best was picked from the runs it is compared on, the text says its lead leans high.
"""

from __future__ import annotations

import numpy as np

from stages.ground.clock import LOADED
from stages.lib.answer import (
    POINTS,
    TARGET,
    TARGET_ARCH,
    Answer,
    KindCost,
    LongAnswer,
    LongBudget,
    Ranking,
    RuleRegret,
    Summary,
    Target,
)
from stages.lib.lr_finder import RULES
from stages.lib.markdown import table
from stages.lib.schema import Params, count_params
from stages.lib.stats import CONFIDENCE, POWER, Interval

LEVEL = f"{100 * CONFIDENCE:g} %"
# External yardsticks for the 300-100 network (TARGET_ARCH).
REFERENCES = (
    ("Géron, *Hands-On Machine Learning*, ch. 10 exercise: a deep MLP on MNIST, target", 98.0),
    ("LeCun et al., the MNIST page: 3-layer NN, 300+100 hidden units, no preprocessing, 3.05 % error", 96.95),
)
# The rules' sources, as lr_finder.py follows them.
SOURCES = ("notebook: the original notebook (bench/notebook.py); fastai_*: fastai 2.8.12's `SuggestionMethod`s "
           "on its recorder's smoothing; lightning: pytorch-lightning 2.6.6's `_LRFinder.suggestion()` on what its "
           "`_LRCallback` records; flat_center: this project's")


def num(x: float, digits: int = 2, sign: bool = False) -> str:
    """Fixed decimals; a value just below 0 keeps its sign (-0.00), which tells on which side it lies."""
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def acc(i: Interval) -> str:
    """An accuracy, points: mean [interval], the interval cut at 0 and 100 % (a t interval over a few seeds, one of
    them far off, passes them)."""
    return f"{num(i.estimate)} % [{num(max(i.low, 0.0))}, {num(min(i.high, POINTS))}]"


def gap(i: Interval) -> str:
    """A difference, points: estimate [interval]."""
    return f"{num(i.estimate, sign=True)} [{num(i.low, sign=True)}, {num(i.high, sign=True)}]"


def separated(i: Interval) -> str:
    return "separated" if i.excludes(0.0) else "not separated"


def mean_epoch(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def tukey(r: Ranking) -> str:
    return f"Tukey {LEVEL} simultaneous intervals over all {r.pairs} pair{'s' * (r.pairs > 1)} of the {len(r.order)}"


def gaps_sentence(r: Ranking, what: str) -> str:
    """Each other group's gap to the best, and whether it is separated; the winner's curse."""
    if len(r.order) < 2:
        return f"{r.best} is the only {what}: there is nothing to compare it with."
    parts = [f"{name} {gap(r.gaps[name])} ({separated(r.gaps[name])})" for name in r.order[1:]]
    return (f"{r.best} minus each other {what}, points ({tukey(r)} {what}s): " + "; ".join(parts) + ". "
            f"{r.best} was picked as best from these same runs, so its lead leans high (winner's curse).")


def detectable(r: Ranking, what: str) -> str:
    return (f"With {r.n} seeds per {what} and the within-{what} standard deviation pooled over them "
            f"({num(r.sd, 3)} points on validation), one pre-planned two-sided comparison at "
            f"{100 * (1 - CONFIDENCE):g} % finds a true gap of {num(r.detectable)} points with {100 * POWER:g} % power "
            "(noncentral t); smaller gaps can go unseen.")


# --- the answer ---------------------------------------------------------------------------------------------


def answer_paragraph(params: Params, a: Answer) -> list[str]:
    r, s = a.long.ranking_acc, a.long.summaries
    best = s[r.best]
    e = params.evidence
    return [
        f"**Answer.** Each network trained with plain SGD (batch {params.train.batch_size}) at the rate the quick "
        f"study's rule picked for it, until early stopping (patience {e.patience} epochs on validation loss, at most "
        f"{e.max_epochs} epochs), {r.n} seeds per network, each run read at its most accurate epoch on validation. "
        f"**{r.best} has the highest mean validation accuracy**: {acc(best.val_acc)} (mean [{LEVEL} t interval over "
        f"seeds]); its test accuracy there is {acc(best.test_acc)}. " + gaps_sentence(r, "network"),
    ]


def long_section(params: Params, a: Answer, figures: dict[str, str]) -> list[str]:
    return [*long_runs(params, a.long), *long_gaps(a.long), *diverged_note(a.long.summaries),
            *long_figures(a.long, figures)]


def long_runs(params: Params, la: LongAnswer) -> list[str]:
    """Each network's long runs at the two epochs they are read at, which one the headline reads and why, and
    both rankings."""
    r, k = la.ranking_acc, la.ranking
    rows = []
    for arch in r.order:
        s = la.summaries[arch]
        hidden = params.archs[arch].hidden
        rows.append([arch, "-".join(map(str, hidden)), f"{count_params(hidden):,}", f"{s.lr:.3g} ({s.chosen_by})",
                     acc(s.val_acc), acc(s.test_acc), mean_epoch(s.epochs_acc), acc(s.val), acc(s.test),
                     mean_epoch(s.epochs_kept), f"{s.epochs_run:.1f}", str(s.diverged)])
    lag = [s.epochs_acc - s.epochs_kept for s in la.summaries.values()
           if s.epochs_acc is not None and s.epochs_kept is not None]
    later = float(np.mean(lag)) if lag else 0.0
    lines = [
        "## The answer: trained until early stopping",
        "",
        f"The long runs, {r.n} seeds per network: mean [{LEVEL} t interval over seeds]. Each run is read at two "
        "epochs: its most accurate on validation (validation accuracy as Keras logged it after that epoch), and "
        "the one it keeps, with the lowest validation loss (what early stopping restores, as the seed notebook's "
        "callbacks did). Validation chooses; test, recorded after every epoch, is reported for what was chosen.",
        "",
        *table(["network", "hidden", "parameters", "rate (chosen by)", "most accurate epoch: validation", "test",
                "epoch", "lowest-loss epoch: validation", "test", "epoch", "epochs run", "diverged runs"],
               "lllllllllrrr", rows),
        "",
        "**Which epoch the headline reads, and why.** The question is which network learns best, and accuracy is "
        "what it asks about: the headline reads each run at its most accurate epoch on validation. Averaged over "
        f"the networks, that epoch comes {abs(later):.1f} epochs {'after' if later >= 0 else 'before'} the one with "
        "the lowest validation loss (the table's epoch columns; the loss curves below show validation loss after "
        "its minimum). That validation figure is a maximum over epochs and leans high; test at the same epoch "
        f"does not. Early stopping ends each run {params.evidence.patience} epochs after its lowest validation "
        "loss, so the most accurate epoch is the best among the epochs run, not over a longer budget.",
        "",
        f"Ranked at the most accurate epoch: {', '.join(r.order)}. Ranked at the lowest-loss epoch: "
        f"{', '.join(k.order)}. The order among networks that are not separated is not evidence.",
        "",
    ]
    return lines


def long_gaps(la: LongAnswer) -> list[str]:
    """Every network's gaps to the best, with intervals that allow for the best having been picked."""
    r, k = la.ranking_acc, la.ranking
    header = [f"{r.best} minus", f"validation, most accurate epoch [Tukey {LEVEL}]",
              f"validation, lowest-loss epoch [Tukey {LEVEL}]" if k.best == r.best else
              f"validation, lowest-loss epoch ({k.best} best there) [Tukey {LEVEL}]",
              f"test, lowest-loss epoch, paired over images [{LEVEL} Bonferroni over {len(r.order) - 1}]"]
    rows = []
    for arch in r.order[1:]:
        kept = k.gaps[arch] if k.best == r.best else None
        image = la.image_gaps.get(arch) if k.best == r.best else None
        rows.append([arch, gap(r.gaps[arch]), "–" if kept is None else gap(kept), "–" if image is None else gap(image)])
    return [
        f"Gaps to {r.best}, points. The validation columns are {tukey(r)} networks: together they hold for every "
        f"pair, so they allow for {r.best} having been picked from these runs. The test column pairs the two "
        f"networks over the same {la.n_test:,} test images (per image, the fraction of the {r.n} seeds that got "
        "it right, differenced); it measures the test set's sampling error for these trained models only, and "
        "says nothing about another seed. Test is recorded per image only at the lowest-loss epoch.",
        "",
        *table(header, "llll", rows),
        "",
        detectable(r, "network"),
        "",
    ]


def long_figures(la: LongAnswer, figures: dict[str, str]) -> list[str]:
    return [
        f"![Gaps to the best, with their intervals]({figures['gaps']})",
        "",
        f"![Validation accuracy per epoch, every seed]({figures['curves']})",
        "",
        f"![Training and validation loss per epoch, every seed]({figures['losses']})",
        "",
        f"![Accuracy against cost]({figures['cost']})",
        "",
        f"Per digit, test accuracy at the lowest-loss epoch from each long run's confusion matrix "
        f"({la.ranking_acc.n} seeds):",
        "",
        f"![Per-digit test accuracy]({figures['classes']})",
        "",
    ]


def diverged_note(summaries: dict[str, Summary]) -> list[str]:
    count = sum(s.diverged for s in summaries.values())
    if not count:
        return []
    return [f"{count} run(s) ended without finite weights; each counts as chance (10 % accuracy) in the means above.",
            ""]


# --- one epoch ------------------------------------------------------------------------------------------------


def one_epoch_section(params: Params, a: Answer, figures: dict[str, str]) -> list[str]:
    o = a.one_epoch
    r = o.ranking
    rows = [[arch, f"{o.grid[o.best[arch]]:g}", acc(o.curves[arch][o.best[arch]]), acc(o.test[arch])]
            for arch in r.order]
    long_best = a.long.ranking_acc.best
    same = ("The same network has the highest mean at one epoch and until early stopping" if r.best == long_best
            else f"At one epoch {r.best} has the highest mean; until early stopping, {long_best}")
    return [
        "## One epoch: each network at its best grid rate",
        "",
        f"One epoch at each rate of the grid ({', '.join(f'{lr:g}' for lr in o.grid)}), {r.n} seeds per rate. Each "
        f"network's best grid rate is the one with the highest mean validation accuracy over the seeds; "
        f"validation and test at that rate, mean [{LEVEL} t interval over seeds]:",
        "",
        *table(["network", "best grid rate", "validation", "test"], "lrll", rows),
        "",
        gaps_sentence(r, "network") + " Each value is also its network's maximum over the grid, picked on the same "
        "validation runs, so all of them lean high.",
        "",
        f"{same} (order at one epoch: {', '.join(r.order)}; until early stopping: "
        f"{', '.join(a.long.ranking_acc.order)}).",
        "",
        f"![One-epoch validation accuracy against rate, with every rule's picks]({figures['grid']})",
        "",
    ]


# --- the rules ------------------------------------------------------------------------------------------------


def regret(t: RuleRegret | None) -> str:
    return "–" if t is None or t.regret is None else gap(t.regret)


def rules_section(params: Params, a: Answer, figures: dict[str, str]) -> list[str]:
    e = params.evidence
    c = a.rules
    held = {t.rule: t for t in c.heldout}
    inside = {t.rule: t for t in c.in_sample}
    order = [t.rule for t in c.heldout] if c.heldout else [t.rule for t in c.in_sample]
    rows = []
    for rule in order:
        t, h = inside[rule], held.get(rule)
        wander = "–" if t.wander is None else f"{t.wander:.2f} ({t.wander_arch})"
        diverged = t.diverged + (h.diverged if h else 0)
        runs = t.runs + (h.runs if h else 0)
        rows.append([rule, regret(t), regret(h), wander, f"{diverged} of {runs}",
                     str(t.no_pick + (h.no_pick if h else 0))])
    names = ", ".join(f"{name} ({'-'.join(map(str, n.hidden))}, {n.activation}"
                      + (f", batch {n.batch_size}" if n.batch_size else "") + ")" for name, n in e.heldout.items())
    lines = [
        "## Which LR rule? Regret, in sample and held out",
        "",
        f"Regret, validation, points: for each network, range test r ({len(e.range_seeds)} per network, seeds "
        f"{', '.join(map(str, e.range_seeds))}) and training seed s ({len(e.seeds)}): validation accuracy after one "
        "epoch at the network's best grid rate minus validation accuracy after one epoch at the rule's pick in "
        f"range test r, both trained with seed s. Each (network, range test) cell averages its {len(e.seeds)} "
        f"seeds; a rule's mean regret has a t interval over its cells (networks × range tests), a guide rather than "
        "an exact 95 %, since cells of one network share its grid runs.",
        "",
        f"In sample: the {len(params.archs)} networks of this study, on which flat_center was written after the "
        f"quick study. Held out: {len(e.heldout)} networks no rule was tuned on, declared in params.yaml "
        f"(`evidence.heldout`) before any of their results existed: {names}. Wander: log10(largest / smallest "
        "pick) over a network's range tests, in decades, the largest over the in-sample networks. Regret on "
        f"validation, each cell averaging its {len(e.seeds)} training seeds; sorted by held-out regret.",
        "",
        *table(["rule", f"in-sample regret [{LEVEL} t]", f"held-out regret [{LEVEL} t]", "wander, decades (network)",
                "runs at its picks that diverged", "range tests without a pick"], "lllrrr", rows),
        "",
        "The grid's best rate is the maximum of noisy means, picked on these same validation runs (winner's curse), "
        "so a regret slightly below 0 is possible; a pick between grid rates can also truly beat the grid. A run "
        "that diverged counts as chance.",
        "",
        *rule_verdict(params, a),
        "",
        f"![Each rule's pick in every range test]({figures['picks']})",
        "",
    ]
    return lines


def rule_verdict(params: Params, a: Answer) -> list[str]:
    c = a.rules
    configured = params.lr_range.rule
    if c.recommended is None:
        return [f"No rule picked in enough held-out range tests for an interval; `lr_range.rule` stays "
                f"`{configured}`."]
    held = {t.rule: t for t in c.heldout}
    best = held[c.recommended]
    level = f"paired over the held-out cells both picked in, {LEVEL} Bonferroni over the {len(c.heldout) - 1} others"
    parts = [f"{rule} {gap(g)} ({separated(g)})" for rule, g in c.leads.items()]
    lines = [
        f"On the held-out networks **{c.recommended}** has the lowest mean regret, {gap(best.regret)} points. Each "
        f"other rule's held-out regret minus {c.recommended}'s, points ({level}): " + "; ".join(parts) + ".",
        "",
    ]
    if c.in_sample_best is not None:
        kept = c.in_sample_best == c.recommended
        lines += [f"In sample, {c.in_sample_best} had the lowest mean regret "
                  f"({gap({t.rule: t for t in c.in_sample}[c.in_sample_best].regret)}). "
                  + ("Its lead survived on the held-out networks: it is lowest there too" if kept else
                     f"Its lead did not survive on the held-out networks: {c.recommended} is lowest there")
                  + ", " + ("though not separated from " + str(sum(not g.excludes(0.0) for g in c.leads.values()))
                            + f" of the {len(c.leads)} others." if any(not g.excludes(0.0) for g in c.leads.values())
                            else "and separated from every other rule."), ""]
    agree = (f"params.yaml's `lr_range.rule` is `{configured}`: it follows the held-out result."
             if configured == c.recommended else
             f"params.yaml's `lr_range.rule` is `{configured}`: it does not follow the held-out result "
             f"({c.recommended}).")
    return lines + [f"Default: **{c.recommended}**, the lowest held-out regret. {agree}"]


# --- the long budget ------------------------------------------------------------------------------------------


def budget_section(params: Params, a: Answer) -> list[str]:
    b = a.budget
    r = b.ranking_acc
    rows = [[source, f"{b.summaries[source].lr:.3g}", acc(b.summaries[source].val_acc),
             acc(b.summaries[source].test_acc), mean_epoch(b.summaries[source].epochs_acc),
             acc(b.summaries[source].val), acc(b.summaries[source].test), mean_epoch(b.summaries[source].epochs_kept),
             str(b.summaries[source].diverged)] for source in (*r.order, *b.left_out)]
    seeds = ", ".join(map(str, params.evidence.long_rules.seeds))
    return [
        f"## The long budget for {b.arch}: every rule's pick until early stopping",
        "",
        f"{b.arch} trained until early stopping at each rule's pick in the quick range test, and at the one-epoch "
        f"grid's best rate and its neighbours; {r.n} seeds each ({seeds}: none of the long runs' seeds, so no run "
        f"is counted twice). Validation and test accuracy, mean [{LEVEL} t interval over seeds], at each run's most "
        "accurate epoch and at its lowest-loss epoch:",
        "",
        *table(["rate source", "rate", "most accurate epoch: validation", "test", "epoch",
                "lowest-loss epoch: validation", "test", "epoch", "diverged runs"], "lrlllllll", rows),
        "",
        *left_out_sentence(b),
        f"Highest mean at the most accurate epoch: **{r.best}**. " + gaps_sentence(r, "rate source"),
        "",
        *standing(params, a),
        "",
    ]


def left_out_sentence(b: LongBudget) -> list[str]:
    """Which sources the ranking leaves out, and the width their diverged runs would give every interval."""
    if not b.left_out:
        return []
    named = "; ".join(f"{source} ({b.summaries[source].diverged} of {len(b.summaries[source].vals)} runs)"
                      for source in b.left_out)
    return [f"Left out of the ranking, for a diverged run counted as chance: {named}. Tukey's intervals pool the "
            f"spread of every source ranked, so with {'it' if len(b.left_out) == 1 else 'them'} the widest interval "
            f"would be ±{num(b.width_with_left_out)} points and no two sources could be told apart.", ""]


def standing(params: Params, a: Answer) -> list[str]:
    """Where the configured rule and the original notebook's rule stand at the long budget."""
    r = a.budget.ranking_acc
    roles = {params.lr_range.rule: "the configured rule, `lr_range.rule`"}
    roles.setdefault("notebook", "the original notebook's rule")
    out = []
    for rule, role in roles.items():
        if rule in a.budget.left_out:
            out.append(f"- {rule} ({role}) is left out of the ranking: a run at its rate diverged.")
            continue
        if rule not in r.order:
            continue
        place = f"ranks {r.order.index(rule) + 1} of {len(r.order)} by mean"
        if rule == r.best:
            close = sum(not r.gaps[other].excludes(0.0) for other in r.order[1:])
            out.append(f"- {rule} ({role}) {place}: first, "
                       + (f"not separated from {close} of the other {len(r.order) - 1}." if close else
                          "separated from every other source."))
        else:
            g = r.gaps[rule]
            out.append(f"- {rule} ({role}) {place}: {r.best} minus it {gap(g)} points (Tukey {LEVEL}: "
                       f"{separated(g)}).")
    return out


# --- the target -----------------------------------------------------------------------------------------------


def target_section(a: Answer) -> list[str]:
    t = a.target
    if t is None:
        return []
    goal = f"{100 * TARGET:.1f} %"
    lines = [
        f"## Does {TARGET_ARCH} reach {goal} on test?",
        "",
        f"{TARGET_ARCH}'s long runs ({len(t.long.vals)} seeds, rate {t.long.lr:.3g}), at each run's most accurate "
        f"epoch: test {acc(t.long.test_acc)} (mean [{LEVEL} t interval over seeds]). " + meets(t, goal),
        "",
    ]
    if t.best is not None:
        lines += [rate_holds_back(t), ""]
    lines += ["For comparison (test accuracy, one number each, no interval):", ""]
    lines += [f"- {what}: {value:.2f} %" for what, value in REFERENCES]
    lines += [f"- this study, {TARGET_ARCH}: {num(t.long.test_acc.estimate)} % (mean of {len(t.long.vals)} seeds)",
              ""]
    return lines


def meets(t: Target, goal: str) -> str:
    """Whether the mean reaches the target (to 3 decimals), and whether the seeds can tell."""
    test = t.long.test_acc
    said = f"The mean, {num(test.estimate, 3)} %, {'meets' if t.met else 'is below'} {goal}"
    if test.low <= POINTS * TARGET <= test.high:
        return said + (f"; its interval holds {goal}, so these seeds do not tell on which side of it "
                       f"{TARGET_ARCH}'s true mean lies.")
    return said + f", and its interval lies {'above' if t.met else 'below'} it."


def rate_holds_back(t: Target) -> str:
    """Does another rate do better for TARGET_ARCH? The best long-budget source against its long runs."""
    g, best = t.gap, t.best
    head = (f"Does another rate do better? The long budget's highest mean on validation is {t.best_source} "
            f"(rate {best.lr:.3g}): validation {acc(best.val_acc)}, test {acc(best.test_acc)}, against "
            f"{acc(t.long.val_acc)} on validation in {TARGET_ARCH}'s long runs; {t.best_source} minus them "
            f"{gap(g)} points (Welch {LEVEL}; other seeds, so other runs).")
    if not g.excludes(0.0):
        return head + (" Not separated: these runs do not show another rate doing better, nor rule it out. This "
                       "study trains with plain SGD at one constant rate: no schedule, momentum, regularisation or "
                       "augmentation.")
    return head + (" Separated: a better rate helps on validation, with test "
                   + ("at or above" if best.test_acc.estimate >= POINTS * TARGET else "still below")
                   + f" the target at it ({num(best.test_acc.estimate)} %).")


# --- cost and provenance --------------------------------------------------------------------------------------


def cost_section(a: Answer) -> list[str]:
    c = a.cost
    rows = [[kind, str(k.stages), f"{k.cpu_seconds / 3600:.2f}", f"{k.seconds / 3600:.2f}", load(k),
             "–" if k.epochs is None else str(k.epochs)] for kind, k in c.kinds.items()]
    cpu = sum(k.cpu_seconds for k in c.kinds.values())
    wall = sum(k.seconds for k in c.kinds.values())
    rows.append(["all", str(sum(k.stages for k in c.kinds.values())), f"{cpu / 3600:.2f}", f"{wall / 3600:.2f}", "",
                 ""])
    lines = [
        "## Compute",
        "",
        "Every evidence stage trains on one thread (`compute.threads` = 1). CPU time (user + sys of the stage's "
        "process) is what other work on the machine inflates least; wall time is what the stages took where they "
        "ran, and the load beside it says how busy the rest of the machine was meanwhile (other cores busy, mean "
        f"over the stages; above {LOADED:g} the wall times are not this machine's quiet ones). From the timings "
        "records:",
        "",
        *table(["stages", "count", "CPU time, h", "wall time, h", "other cores busy", "epochs trained"],
               "lrrrrr", rows),
        "",
        "The machines that made these numbers (identical records grouped):",
        "",
    ]
    for machine, counts in c.machines:
        runs = ", ".join(f"{n} {kind}" for kind, n in counts.items())
        lines.append(f"- {runs}: " + "; ".join(f"{key} {described(value)}" for key, value in sorted(machine.items())))
    return lines + [""]


def load(k: KindCost) -> str:
    return "not recorded" if k.other_cores_busy is None else f"{k.other_cores_busy:.2f}"


def described(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in sorted(value.items()))
    return str(value)


def made_section(params: Params, n_test: int) -> list[str]:
    e = params.evidence
    lines = [
        "## How this was made",
        "",
        f"- Data: MNIST; validation is the first {params.data.val_size:,} training images, the rest trains; "
        f"test is the {n_test:,} test images.",
        f"- Training: plain SGD, batch {params.train.batch_size} unless a network sets its own; a training seed sets "
        f"initialisation and shuffling. Training seeds {', '.join(map(str, e.seeds))} for every network and rate.",
        f"- Budgets: one epoch (the grid and the rules' picks); until early stopping on validation loss, patience "
        f"{e.patience}, at most {e.max_epochs} epochs (the long runs), read at each run's most accurate epoch on "
        "validation and at the epoch with the lowest validation loss, which the run keeps.",
        f"- Rates: the long runs use the quick study's range test (reports/lr_range/, params.yaml's `seed` "
        f"{params.seed}) and its rule (`lr_range.rule` = {params.lr_range.rule}, unless an arch fixes its own). "
        f"The rules are measured on {len(e.range_seeds)} more range tests per network (seeds "
        f"{', '.join(map(str, e.range_seeds))}). The long budget for {e.long_rules.arch} uses seeds "
        f"{', '.join(map(str, e.long_rules.seeds))}.",
        f"- The rules, each computed as its source does ({SOURCES}; stages/lib/lr_finder.py):",
    ]
    lines += [f"  - {name}: {rule.__doc__.strip().splitlines()[0]}" for name, rule in RULES.items()]
    lines += [
        "- Every choice is made on validation: the best network, the epoch each run is read at, each network's best "
        "grid rate, the default rule (on the held-out networks) and the best long-budget rate. Test accuracy is "
        "reported for what was chosen, never used to choose.",
        "- A run whose kept weights are not finite has no scores and counts as chance (10 %); tables count them.",
        f"- Intervals: {LEVEL}. Over seeds: Student's t for a mean; where the best of several groups is picked, "
        "Tukey's HSD (scipy.stats.tukey_hsd) over every pair of them, which pools the within-group variance; Welch's "
        "for one pre-planned difference. Over test images: a paired t interval. Several paired comparisons against "
        "one chosen group: Bonferroni. An accuracy's interval is cut at 0 and 100 % where the t interval passes "
        "them. Detectable difference: noncentral t, pooled within-group SD.",
        "- Made by `dvc repro evidence/dvc.yaml` (stage `answer`) from the records in reports/evidence/.",
        "",
    ]
    return lines


def render(params: Params, a: Answer, figures: dict[str, str]) -> str:
    """``figures``: key (gaps, curves, losses, cost, classes, grid, picks) -> its path relative to the answer's
    folder."""
    lines = [
        "# Which network learns best when each gets its own tuned learning rate?",
        "",
        *answer_paragraph(params, a),
        "",
        *long_section(params, a, figures),
        *one_epoch_section(params, a, figures),
        *rules_section(params, a, figures),
        *budget_section(params, a),
        *target_section(a),
        *cost_section(a),
        *made_section(params, a.long.n_test),
    ]
    return "\n".join(lines).rstrip("\n") + "\n"
