"""Render reports/answer.md from stages.lib.answer's numbers. Pure: data in, Markdown out.

Wording rule: a gap whose interval holds 0 is "not separated", with the size its interval rules out;
never a claim that the two are the same.
"""

from __future__ import annotations

from stages.lib.answer import POINTS, TARGET, TARGET_ARCH, Answer, Ranking, Summary, Target, ruled_out
from stages.lib.lr_finder import RULES
from stages.lib.schema import Params, count_params
from stages.lib.stats import CONFIDENCE, POWER, Interval

LEVEL = f"{100 * CONFIDENCE:g} %"
# External yardsticks for the 300-100 network (TARGET_ARCH).
REFERENCES = (
    ("Géron, *Hands-On Machine Learning*, ch. 10 exercise: a deep MLP on MNIST, target", 98.0),
    ("LeCun et al., the MNIST page: 3-layer NN, 300+100 hidden units, no preprocessing, 3.05 % error", 96.95),
)


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


def epochs(s: Summary) -> str:
    kept = "–" if s.epochs_kept is None else f"{s.epochs_kept:.1f}"
    return f"{s.epochs_run:.1f} / {kept}"


def verdicts(ranking: Ranking) -> list[str]:
    """One sentence per group other than the best: below it, or not separated and what is ruled out."""
    out = []
    for name in ranking.order[1:]:
        g = ranking.gaps[name]
        interval = f"Welch {LEVEL} interval [{num(g.low)}, {num(g.high)}] points"
        if g.excludes(0.0):
            out.append(f"{name} is below it by {num(g.estimate)} points ({interval}).")
        else:
            out.append(f"{name} is not separated from it ({interval}): differences larger than "
                       f"{num(ruled_out(g))} points are ruled out, smaller ones are not.")
    return out


def detectable(ranking: Ranking, what: str) -> str:
    return (f"With {ranking.n} seeds per {what} and the within-{what} standard deviation pooled over them "
            f"({num(ranking.sd, 3)} points on validation), a two-sided test at {100 * (1 - CONFIDENCE):g} % finds a "
            f"true gap of {num(ranking.detectable)} points with {100 * POWER:g} % power (noncentral t); "
            "smaller gaps can go unseen.")


def answer_paragraph(params: Params, a: Answer) -> list[str]:
    r, s = a.long.ranking, a.long.summaries
    best = s[r.best]
    e = params.evidence
    return [
        f"**Answer.** Each network trained with plain SGD (batch {params.train.batch_size}) at the rate the quick "
        f"study chose for it, until early stopping (patience {e.patience} epochs on validation loss, at most "
        f"{e.max_epochs} epochs), {r.n} seeds per network. **{r.best} is best on validation**: {acc(best.val)} "
        f"(mean [{LEVEL} t interval over seeds]); its test accuracy is {acc(best.test)}. "
        + " ".join(verdicts(r)) + " " + detectable(r, "network"),
    ]


def long_section(params: Params, a: Answer, figures: dict[str, str]) -> list[str]:
    la = a.long
    r = la.ranking
    lines = [
        "## The answer: trained until early stopping",
        "",
        f"Validation and test accuracy of the long runs, {r.n} seeds per network: mean [{LEVEL} t interval over "
        "seeds]. Validation chooses; test is reported for what was chosen.",
        "",
        "| network | hidden | parameters | rate (chosen by) | validation | test | epochs run / kept (mean) "
        "| diverged runs |",
        "|---|---|---:|---|---|---|---:|---:|",
    ]
    for arch in r.order:
        s = la.summaries[arch]
        hidden = params.archs[arch].hidden
        lines.append(f"| {arch} | {'-'.join(map(str, hidden))} | {count_params(hidden):,} | {s.lr:.3g} "
                     f"({s.chosen_by}) | {acc(s.val)} | {acc(s.test)} | {epochs(s)} | {s.diverged} |")
    lines += [
        "",
        f"{r.best} is best on validation. Against each other network, the validation gap ({r.best} minus it, "
        f"points; Welch {LEVEL} interval over {r.n} + {r.n} seeds) and the test gap (paired over the same "
        f"{la.n_test:,} test images: per image, the fraction of the {r.n} seeds that got it right, differenced "
        f"between the two networks; t interval of the mean):",
        "",
        f"| {r.best} minus | validation gap, points [Welch {LEVEL}, seeds] | test gap, points [paired t {LEVEL}, "
        "images] |",
        "|---|---|---|",
    ]
    lines += [f"| {arch} | {gap(r.gaps[arch])} | {gap(la.image_gaps[arch])} |" for arch in r.order[1:]]
    lines += [
        "",
        "The seed interval measures training noise (initialisation and shuffling). The image interval measures "
        "only the test set's sampling error for these trained models: it says nothing about another seed.",
        "",
        detectable(r, "network"),
        "",
        *(f"- {line}" for line in diverged_note(la.summaries)),
        f"![Validation accuracy per epoch, every seed]({figures['curves']})",
        "",
        f"![Accuracy against cost]({figures['cost']})",
        "",
        f"Per digit, test accuracy from each long run's confusion matrix ({r.n} seeds; {r.best} is the network "
        "chosen on validation):",
        "",
        f"![Per-digit test accuracy]({figures['classes']})",
        "",
    ]
    return lines


def diverged_note(summaries: dict[str, Summary]) -> list[str]:
    count = sum(s.diverged for s in summaries.values())
    if not count:
        return []
    return [f"{count} run(s) ended without finite weights; each counts as chance (10 % accuracy) in the means above.",
            ""]


def one_epoch_section(params: Params, a: Answer, figures: dict[str, str]) -> list[str]:
    o = a.one_epoch
    r = o.ranking
    lines = [
        "## One epoch: each network at its best grid rate",
        "",
        f"One epoch at each rate of the grid ({', '.join(f'{lr:g}' for lr in o.grid)}), {r.n} seeds per rate. Each "
        f"network's best grid rate is the one with the highest mean validation accuracy over the seeds; "
        f"validation and test at that rate, mean [{LEVEL} t interval over seeds]:",
        "",
        "| network | best grid rate | validation | test |",
        "|---|---:|---|---|",
    ]
    lines += [f"| {arch} | {o.grid[o.best[arch]]:g} | {acc(o.curves[arch][o.best[arch]])} | {acc(o.test[arch])} |"
              for arch in r.order]
    long_best = a.long.ranking.best
    same = ("The same network is best at one epoch and until early stopping."
            if r.best == long_best else
            f"At one epoch {r.best} is best on validation; until early stopping, {long_best} is.")
    lines += [
        "",
        f"At one epoch, {r.best} is best on validation. " + " ".join(verdicts(r)),
        "",
        f"How this differs from the answer: {same} Order by mean validation accuracy, best first: one epoch "
        f"{', '.join(r.order)}; until early stopping {', '.join(a.long.ranking.order)} (the order among networks "
        "that are not separated is not evidence). The one-epoch values are each network's maximum over the grid, "
        "chosen on the same validation runs, so they lean high.",
        "",
        f"![One-epoch validation accuracy against rate, with every rule's picks]({figures['grid']})",
        "",
    ]
    return lines


def rules_section(params: Params, a: Answer, figures: dict[str, str]) -> list[str]:
    e = params.evidence
    n_cells = len(params.archs) * len(e.range_seeds)
    lines = [
        "## Which LR rule? Regret against the one-epoch grid",
        "",
        f"Regret, validation, points: for each network, range test r ({len(e.range_seeds)} per network, seeds "
        f"{', '.join(map(str, e.range_seeds))}) and training seed s ({len(e.seeds)}): validation accuracy after one "
        "epoch at the network's best grid rate minus validation accuracy after one epoch at the rule's pick in "
        f"range test r, both trained with seed s. Each (network, range test) cell averages its {len(e.seeds)} "
        f"seeds; the mean regret's interval is a t interval over the {n_cells} cells (networks × range tests); "
        "cells of one network share its grid runs, so they are not fully independent and the interval is a guide, "
        "not an exact 95 %. "
        "Wander: log10(largest / smallest pick) over a network's range tests, in decades, the largest over "
        "networks. Sorted by mean regret.",
        "",
        f"| rule | mean regret, points [{LEVEL} t] | cells | wander, decades (network) | runs at its picks that "
        "diverged | range tests without a pick |",
        "|---|---|---:|---|---:|---:|",
    ]
    for t in a.rules:
        regret = "–" if t.regret is None else gap(t.regret)
        wander = "–" if t.wander is None else f"{t.wander:.2f} ({t.wander_arch})"
        lines.append(f"| {t.rule} | {regret} | {len(t.cells)} | {wander} | {t.diverged} of {t.runs} | {t.no_pick} |")
    lines += [
        "",
        "The grid's best rate is the maximum of noisy means, picked on these same validation runs (winner's curse), "
        "so a regret slightly below 0 is possible; a pick between grid rates can also truly beat the grid. A run "
        "that diverged counts as chance.",
        "",
        *rule_choice(params, a),
        "",
        f"![Each rule's pick in every range test]({figures['picks']})",
        "",
    ]
    return lines


def rule_choice(params: Params, a: Answer) -> list[str]:
    configured = params.lr_range.rule
    if a.recommended is None:
        return [f"No rule picked in enough range tests for an interval; `lr_range.rule` stays `{configured}`."]
    head = f"Default recommended: **{a.recommended}**, the lowest mean regret."
    if a.recommended == configured:
        return [f"{head} params.yaml's `lr_range.rule` is `{configured}`: it agrees."]
    line = f"{head} params.yaml's `lr_range.rule` is `{configured}`: it does not agree."
    g = a.configured_gap
    if g is not None:
        verdict = "separated" if g.excludes(0.0) else "not separated"
        line += (f" {configured} minus {a.recommended}: {gap(g)} points of regret (paired t {LEVEL} interval over "
                 f"the {g.n} cells both picked in): {verdict}.")
    return [line]


def budget_section(params: Params, a: Answer) -> list[str]:
    b = a.budget
    r = b.ranking
    lines = [
        f"## The long budget for {b.arch}: every rule's pick until early stopping",
        "",
        f"{b.arch} trained until early stopping at each rule's pick in the quick range test, and at the one-epoch "
        f"grid's best rate and its neighbours; {r.n} seeds each. Validation and test, mean [{LEVEL} t interval "
        "over seeds]:",
        "",
        "| rate source | rate | validation | test | epochs run / kept (mean) | diverged runs |",
        "|---|---:|---|---|---:|---:|",
    ]
    for source in r.order:
        s = b.summaries[source]
        lines.append(f"| {source} | {s.lr:.3g} | {acc(s.val)} | {acc(s.test)} | {epochs(s)} | {s.diverged} |")
    lines += ["", f"Best on validation: **{r.best}**. " + " ".join(verdicts(r)), "", *standing(params, a), ""]
    return lines


def standing(params: Params, a: Answer) -> list[str]:
    """Where the configured rule and the original notebook's rule stand at the long budget."""
    r = a.budget.ranking
    roles = {params.lr_range.rule: "the configured rule, `lr_range.rule`"}
    roles.setdefault("notebook", "the original notebook's rule")
    out = []
    for rule, role in roles.items():
        if rule not in r.order:
            continue
        place = f"ranks {r.order.index(rule) + 1} of {len(r.order)} on validation"
        if rule == r.best:
            close = sum(not r.gaps[other].excludes(0.0) for other in r.order[1:])
            out.append(f"- {rule} ({role}) {place}: first" + (
                f", though not separated from {close} of the other {len(r.order) - 1}." if close else
                ", and separated from every other source."))
        else:
            g = r.gaps[rule]
            out.append(f"- {rule} ({role}) {place}, {num(g.estimate)} points below {r.best} (Welch {LEVEL} interval "
                       f"[{num(g.low)}, {num(g.high)}]: {'separated' if g.excludes(0.0) else 'not separated'}).")
    return out


def target_section(a: Answer) -> list[str]:
    t = a.target
    if t is None:
        return []
    goal = f"{100 * TARGET:.1f} %"
    lines = [
        f"## Does {TARGET_ARCH} reach {goal} on test?",
        "",
        f"{TARGET_ARCH}'s long runs ({len(t.long.vals)} seeds, rate {t.long.lr:.3g}): test {acc(t.long.test)} "
        f"(mean [{LEVEL} t interval over seeds]). " + meets(t, goal),
        "",
    ]
    if not t.met and t.best is not None:
        lines += [rate_holds_back(t), ""]
    lines += ["For comparison (test accuracy, one number each, no interval):", ""]
    lines += [f"- {what}: {value:.2f} %" for what, value in REFERENCES]
    lines += [f"- this study, {TARGET_ARCH}: {num(t.long.test.estimate)} % (mean of {len(t.long.vals)} seeds)", ""]
    return lines


def meets(t: Target, goal: str) -> str:
    """Whether the mean reaches the target (to 3 decimals: 97.996 % shows as 98.00 % above), and whether the
    seeds can tell."""
    test = t.long.test
    said = f"The mean, {num(test.estimate, 3)} %, {'meets' if t.met else 'is below'} {goal}"
    if test.low <= POINTS * TARGET <= test.high:
        return said + (f"; its interval holds {goal}, so these seeds do not tell on which side of it "
                       f"{TARGET_ARCH}'s true mean lies.")
    return said + f", and its interval lies {'above' if t.met else 'below'} it."


def rate_holds_back(t: Target) -> str:
    """Is the rate what keeps TARGET_ARCH below the target? Its long runs against the best long-budget source."""
    g, best = t.gap, t.best
    head = (f"Is the rate what holds it back? The best rate source at the long budget on validation is "
            f"{t.best_source} (rate {best.lr:.3g}): validation {acc(best.val)}, test {acc(best.test)}, against "
            f"{acc(t.long.val)} on validation at {TARGET_ARCH}'s own rate; gap {gap(g)} points (Welch {LEVEL}).")
    if best.lr == t.long.lr:
        return head + (f" That is {TARGET_ARCH}'s own rate: no other rate does better on validation. What else could "
                       "lift it is outside this study, which trains with plain SGD at one constant rate: no schedule, "
                       "momentum, regularisation or augmentation.")
    if not g.excludes(0.0):
        return head + (f" Not separated: these runs do not show the rate holding it back; gaps larger than "
                       f"{num(ruled_out(g))} points are ruled out, smaller ones are not.")
    reaches = best.test.estimate >= POINTS * TARGET
    return head + (" A better rate helps on validation, and at it the test mean reaches the target." if reaches else
                   " A better rate helps on validation, but even at it the test mean stays below the target: "
                   "the rate is not all that holds it back.")


def cost_section(a: Answer) -> list[str]:
    c = a.cost
    lines = [
        "## Compute",
        "",
        "Wall time of every evidence stage (each trains on one core, `compute.threads` = 1), from the timings "
        "records:",
        "",
        "| kind | stages | one-core time, h | epochs trained |",
        "|---|---:|---:|---:|",
    ]
    for kind, (stages, seconds, trained) in c.kinds.items():
        lines.append(f"| {kind} | {stages} | {seconds / 3600:.2f} | {'–' if trained is None else trained} |")
    total = sum(seconds for _, seconds, _ in c.kinds.values())
    lines += [f"| all | {sum(s for s, _, _ in c.kinds.values())} | {total / 3600:.2f} | |", "",
              "The machines that made these numbers (identical records grouped):", ""]
    for machine, counts in c.machines:
        runs = ", ".join(f"{n} {kind}" for kind, n in counts.items())
        lines.append(f"- {runs}: " + "; ".join(f"{key} {described(value)}" for key, value in sorted(machine.items())))
    return lines + [""]


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
        f"- Training: plain SGD, batch {params.train.batch_size}; a training seed sets initialisation and shuffling. "
        f"Training seeds {', '.join(map(str, e.seeds))} for every network and rate.",
        f"- Budgets: one epoch (the grid and the rules' picks); until early stopping on validation loss, patience "
        f"{e.patience}, at most {e.max_epochs} epochs, keeping the epoch with the lowest validation loss (the long "
        "runs).",
        f"- Rates: the long runs use the quick study's range test (reports/lr_range/, params.yaml's `seed` "
        f"{params.seed}) and its rule (`lr_range.rule` = {params.lr_range.rule}, unless an arch fixes its own). "
        f"The rules are measured on {len(e.range_seeds)} more range tests per network (seeds "
        f"{', '.join(map(str, e.range_seeds))}). The long budget for {e.long_rules.arch} uses seeds "
        f"{', '.join(map(str, e.long_rules.seeds))}.",
        "- The rules, each computed as its source does (stages/lib/lr_finder.py):",
    ]
    lines += [f"  - {name}: {rule.__doc__.strip().splitlines()[0]}" for name, rule in RULES.items()]
    lines += [
        "  - flat_center is this project's rule; the others reproduce their sources' code (the original notebook, "
        "fastai's `SuggestionMethod`s, Lightning's `_LRFinder.suggestion()`).",
        "- Every choice is made on validation: the best network, each network's best grid rate, the recommended rule "
        "and the best long-budget rate. Test accuracy is reported for what was chosen, never used to choose.",
        "- A run whose kept weights are not finite has no scores and counts as chance (10 %); tables count them.",
        f"- Intervals: {LEVEL}; over seeds Student's t for a mean and Welch's for a difference; over test images a "
        "paired t interval (scipy.stats); an accuracy's interval is cut at 0 and 100 % where the t interval passes "
        "them. Detectable difference: noncentral t, pooled within-group SD.",
        "- Made by `dvc repro evidence/dvc.yaml` (stage `answer`) from the records in reports/evidence/.",
        "",
    ]
    return lines


def render(params: Params, a: Answer, figures: dict[str, str]) -> str:
    """``figures``: key (curves, cost, classes, grid, picks) -> its path relative to the answer's folder."""
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
