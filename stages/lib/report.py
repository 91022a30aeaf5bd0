"""Render reports/report.md, the quick check, from what the stages wrote. Pure: data in, Markdown out.

The quick check is one short run per architecture, not the answer (that is answer.md, from the
evidence pipeline). Choices are made on validation accuracy; test accuracy is reported for what
was chosen, never used to choose. One seed ranks nothing; with several, every pair of architectures
gets a 95 % Welch interval of its difference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.lib.lr_finder import RULES
from stages.lib.markdown import table
from stages.lib.schema import Params
from stages.lib.stats import CONFIDENCE, Interval, welch_interval

LEVEL = f"{100 * CONFIDENCE:g} %"  # of every interval the report gives


@dataclass(frozen=True)
class ArchResult:
    name: str
    hidden: tuple[int, ...]
    activation: str
    metrics: dict  # reports/evaluation/<arch>.json: every seed's scores, the model's size
    lr_range: dict  # reports/lr_range/<arch>.json
    software: dict  # the train record's: what trained it
    dropout: float = 0.0  # its rate after each hidden layer (schema.Arch.dropout)


@dataclass(frozen=True)
class Pair:
    """Two archs, ``a`` ranked above ``b`` on mean validation accuracy, and Welch's interval of
    mean(a) - mean(b) over their seeds."""
    a: str
    b: str
    interval: Interval


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def points(x: float) -> str:
    return f"{100 * x:.2f}"


def link(path: str) -> str:
    return f"[{path}]({path})"


def failed(result: ArchResult) -> str | None:
    """Why the arch has no result (its metrics say so), or None."""
    return result.metrics.get("failed")


def per_seed(result: ArchResult, key: str) -> list[float]:
    """``key`` (val_accuracy, test_accuracy) of each seed that has it."""
    return [run[key] for run in result.metrics["seeds"].values() if key in run]


def score_cell(result: ArchResult, key: str, n_seeds: int) -> str:
    """The mean over seeds of ``key``, ± the standard deviation over seeds when there are several."""
    if n_seeds < 2:
        return pct(result.metrics[key])
    return f"{points(result.metrics[key])} ± {points(float(np.std(per_seed(result, key), ddof=1)))} %"


def by_validation(results: list[ArchResult]) -> list[ArchResult]:
    """Highest mean validation accuracy first, failed archs last."""
    return sorted(results, key=lambda r: (bool(failed(r)), -(r.metrics["val_accuracy"] or 0)))


def pairs(results: list[ArchResult], n_seeds: int) -> list[Pair]:
    """Every pair of archs with a result, on per-seed validation accuracy; none with fewer than 2 seeds."""
    ranked = [r for r in by_validation(results) if not failed(r)]
    if len(ranked) < 2 or n_seeds < 2:
        return []
    return [Pair(a.name, b.name, welch_interval(per_seed(a, "val_accuracy"), per_seed(b, "val_accuracy")))
            for i, a in enumerate(ranked) for b in ranked[i + 1:]]


def ruled_out(interval: Interval) -> str:
    """What an interval that holds 0 still says: how large the difference can be."""
    return f"differences larger than {points(max(abs(interval.low), abs(interval.high)))} points are ruled out"


def reading(pair: Pair) -> str:
    """What a pair's interval says; a difference it cannot tell from 0 is bounded, never called equal."""
    if pair.interval.excludes(0.0):
        return f"{pair.a if pair.interval.estimate > 0 else pair.b} higher"
    return f"not separated at this number of seeds; {ruled_out(pair.interval)}"


def interval_text(interval: Interval) -> str:
    return f"{100 * interval.low:+.2f} to {100 * interval.high:+.2f}"


def welch_method(n_pairs: int) -> str:
    return (f"Each difference is of mean validation accuracy over the seeds, with its {LEVEL} Welch "
            "interval (Welch's t interval for a difference of two means, no equal-variance assumption). Each "
            f"interval is {LEVEL} on its own, not adjusted for the {n_pairs} pairs: one of them may miss by chance.")


def conclusion(results: list[ArchResult], comparisons: list[Pair], n_seeds: int, tie_margin: float,
               answer: str) -> list[str]:
    """The highest validation accuracy, what the seeds can and cannot tell; failed archs apart.

    Args:
        comparisons: every pair of archs that did not fail (pairs), none with one seed.
        tie_margin: report.tie_margin: archs this close to the best's validation accuracy (a fraction: 0.002 is
            0.2 points) are named beside it.
        answer: answer.md's path from the report (render_report's).
    """
    lines = [f"- **{r.name} failed**: {failed(r)}." for r in results if failed(r)]
    ranked = [r for r in by_validation(results) if not failed(r)]
    if not ranked:
        return lines + ["- No architecture produced a result."]
    best = ranked[0]
    if n_seeds < 2:
        head = (f"- Highest validation accuracy in this run: **{best.name}**, {pct(best.metrics['val_accuracy'])} "
                f"(its test accuracy: {pct(best.metrics['test_accuracy'])}; {best.metrics['params']:,} parameters).")
        return [head, *_within_margin(best, ranked, tie_margin), *lines,
                "- One seed ranks nothing: one run per architecture cannot tell these differences from seed-to-seed "
                "noise, and another seed may order them otherwise. With `train.repeats` of 2 or more every "
                f"difference gets a {LEVEL} interval; the answer, over many seeds, is in {link(answer)}."]
    head = (f"- Highest mean validation accuracy over {n_seeds} seeds: **{best.name}**, "
            f"{score_cell(best, 'val_accuracy', n_seeds)} (its test accuracy: "
            f"{score_cell(best, 'test_accuracy', n_seeds)}; "
            f"{best.metrics['params']:,} parameters).")
    against_best = [pair for pair in comparisons if pair.a == best.name]
    separated = [f"{pair.b} ({points(pair.interval.estimate)} points lower, {LEVEL} interval "
                 f"{interval_text(pair.interval)})" for pair in against_best if pair.interval.excludes(0.0)]
    not_separated = [f"{pair.b} ({points(pair.interval.estimate)} points lower; {ruled_out(pair.interval)})"
                     for pair in against_best if not pair.interval.excludes(0.0)]
    body = [head]
    if separated:
        body.append(f"- Separated from it (the interval excludes 0): {', '.join(separated)}.")
    if not_separated:
        body.append(f"- Not separated from it at this number of seeds: {', '.join(not_separated)}.")
    return [*body, *lines, f"- {welch_method(len(comparisons))} The answer, over many seeds, is in {link(answer)}."]


def _within_margin(best: ArchResult, ranked: list[ArchResult], tie_margin: float) -> list[str]:
    """The archs within ``tie_margin`` of the best on validation, and the smallest of them."""
    best_acc = best.metrics["val_accuracy"]
    # The tolerance keeps a gap of exactly tie_margin inside despite float rounding.
    close = [r for r in ranked if best_acc - r.metrics["val_accuracy"] <= tie_margin + 1e-9]
    margin = f"{100 * tie_margin:.2g} points"
    if len(close) == 1:
        return [f"- No other architecture comes within {margin} of it on validation (`report.tie_margin`)."]
    smallest = min(close, key=lambda r: r.metrics["params"])
    others = ", ".join(r.name for r in close if r is not best)
    line = f"- Within {margin} of it on validation (`report.tie_margin`): {others}."
    if smallest is not best:
        ratio = best.metrics["params"] / smallest.metrics["params"]
        line += (f" The smallest of these is **{smallest.name}**, {pct(smallest.metrics['val_accuracy'])} "
                 f"({smallest.metrics['params']:,} parameters, {ratio:.1f}x fewer).")
    return [line]


def comparisons_table(comparisons: list[Pair]) -> list[str]:
    """Every pair: difference of mean validation accuracy, its Welch interval and what that says."""
    if not comparisons:
        return []
    return table(["pair", "difference of mean val accuracy (points)", f"{LEVEL} Welch interval", "reading"], "lrrl",
                 ([f"{pair.a} − {pair.b}", f"{100 * pair.interval.estimate:+.2f}", interval_text(pair.interval),
                   reading(pair)] for pair in comparisons))


def _pick_cell(r: ArchResult) -> str:
    return f"{r.metrics['lr']:.3g} ({r.metrics['lr_chosen_by']})"


def _layers(r: ArchResult) -> str:
    notes = [r.activation] if r.activation != "relu" else []
    notes += [f"dropout {r.dropout:g}"] if r.dropout else []
    return " → ".join(str(h) for h in r.hidden) + (f" ({', '.join(notes)})" if notes else "")


def results_table(results: list[ArchResult], n_seeds: int) -> list[str]:
    """One row per arch, highest mean validation accuracy first, failed archs last."""
    several = n_seeds > 1
    rows = []
    for r in by_validation(results):
        epochs = sorted({run["epochs_run"] for run in r.metrics["seeds"].values()})
        epochs_cell = str(epochs[0]) if len(epochs) == 1 else f"{epochs[0]}–{epochs[-1]}"
        scores = (["—", f"**failed**: {failed(r)}", "—"] if failed(r) else
                  [score_cell(r, "val_accuracy", n_seeds), score_cell(r, "test_accuracy", n_seeds),
                   f"{r.metrics['test_loss']:.4f}"])
        per_seed_cell = [", ".join(points(a) for a in per_seed(r, "val_accuracy"))] if several else []
        rows.append([r.name, _layers(r), _pick_cell(r), epochs_cell, *scores, *per_seed_cell])
    return table(["arch", "hidden layers", "learning rate (picked by)", "epochs run", "val accuracy", "test accuracy",
                  "test loss", *(["val accuracy per seed"] if several else [])], "llllrrr" + "l" * several, rows)


def cost_table(results: list[ArchResult]) -> list[str]:
    """The work each arch took, which is the same on every machine; times are not (reports/timings/)."""
    rows = []
    for r in sorted(results, key=lambda r: r.metrics["params"]):
        m = r.metrics
        epochs = sum(run["epochs_run"] for run in m["seeds"].values())
        rows.append([r.name, f"{m['params']:,}", f"{m['size_bytes'] / 2**20:.2f} MiB", f"{r.lr_range['steps']:,}",
                     f"{epochs:,}"])
    return table(["arch", "parameters", "model file", "range-test batches", "epochs trained"], "lrrrr", rows)


def rules_table(results: list[ArchResult]) -> list[str]:
    """Each sweep's stop and lowest point, and every rule's pick; in bold the rule the arch trained with, as its
    training recorded it (none for a rate fixed in params)."""
    rows = []
    for r in results:
        s, used = r.lr_range, r.metrics["lr_chosen_by"]
        picks = []
        for rule in RULES:
            pick = s["picks"][rule]
            cell = "n/a" if "error" in pick else f"{pick['lr']:.3g}"
            picks.append(f"**{cell}**" if rule == used else cell)
        lowest = ["—", "—"] if s["min_smoothed_loss"] is None else [f"{s['min_smoothed_loss']:.4f}",
                                                                     f"{s['lr_at_min']:.3g}"]
        rows.append([r.name, str(s["steps"]), s["stop_reason"], *lowest, *picks])
    return table(["arch", "batches", "stopped because", "lowest smoothed loss", "at rate",
                  *(f"`{rule}`" for rule in RULES)], "lrlrr" + "r" * len(RULES), rows)


def title(params: Params) -> str:
    seeds, epochs = params.seeds, params.train.epochs
    runs = (f"one run per architecture (seed {seeds[0]})" if len(seeds) == 1 else
            f"{len(seeds)} runs per architecture (seeds {seeds[0]}–{seeds[-1]})")
    return f"# Quick check: {runs}, {'1 epoch' if epochs == 1 else f'up to {epochs} epochs'}"


def software_text(record: dict) -> str:
    return ", ".join(f"{name} {record[key]}" for key, name in
                     (("python", "Python"), ("tensorflow", "TensorFlow"), ("keras", "Keras"), ("numpy", "numpy")))


def provenance_section(params: Params, results: list[ArchResult]) -> list[str]:
    """Which software trained each arch (its train record), and where the machine and times are."""
    groups: dict[str, list[str]] = {}
    for r in results:
        groups.setdefault(software_text(r.software), []).append(f"`train@{r.name}`")
    lines = ["## Software", ""]
    lines += [f"- {text}: {', '.join(stages)}" for text, stages in groups.items()]
    return lines + ["", f"Numerics `{params.compute.numerics}` (`compute.numerics`). Under `portable` the same params "
                    "gave the same models and metrics, byte for byte, on every x86-64 machine checked so far (README, "
                    "\"Same numbers on any machine\"). Each stage's machine, wall and CPU seconds and load are in its "
                    "timing record, `reports/timings/`, which git ignores: they differ on every run.", ""]


def intro_section(params: Params, results: list[ArchResult], figures: dict[str, str], answer: str) -> list[str]:
    """What ran, on what data, and how choices are made; ``answer`` as conclusion's."""
    m0 = results[0].metrics
    lr, tr, seeds = params.lr_range, params.train, params.seeds
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}–{seeds[-1]}, one run each"
    runs = "once" if len(seeds) == 1 else f"{len(seeds)} times"
    epochs = "one epoch" if tr.epochs == 1 else f"up to {tr.epochs} epochs"
    return [
        title(params),
        "",
        f"This is a quick check, not the answer: each architecture trains {runs} for {epochs}, at the rate one "
        f"rule picked from one LR range test. The answer, over many seeds and with training until early stopping, "
        f"is in {link(answer)}, the evidence pipeline's report (`make evidence`).",
        "",
        f"MNIST: {m0['n_train']:,} training, {params.data.val_size:,} validation and {m0['n_test']:,} test images "
        f"(a sample below). Each architecture gets an LR range test (SGD, batch {lr.batch_size}, rate from "
        f"{lr.start_lr:g} multiplied by {lr.factor:g} per batch, seed {params.seed}), then fresh copies train with "
        f"plain SGD at the picked rate for up to {tr.epochs} epoch(s) (batch {tr.batch_size}, early stopping on "
        f"validation loss with patience {tr.patience}, best epoch kept; {seed_text}). Choices are made on "
        "validation accuracy; test accuracy is reported for what was chosen, never used to choose. Generated by "
        "`dvc repro` from the files under `reports/`; do not edit by hand.",
        "",
        f"![Sample test digits with their labels]({figures['digits']})",
        "",
    ]


def results_section(results: list[ArchResult], n_seeds: int) -> list[str]:
    return ["## Results", "", *results_table(results, n_seeds), ""]


def findings_section(results: list[ArchResult], n_seeds: int, tie_margin: float,
                     figures: dict[str, str], answer: str) -> list[str]:
    """What the run shows, every pair's interval when there are several seeds, and the learning curves.

    Args:
        tie_margin: as conclusion's.
        figures: figure key -> its path from the report (render_report's).
        answer: as conclusion's.
    """
    comparisons = pairs(results, n_seeds)
    lines = ["## What this run shows", "", *conclusion(results, comparisons, n_seeds, tie_margin, answer), ""]
    if comparisons:
        lines += ["Every pair (the first named has the higher mean validation accuracy):", "",
                  *comparisons_table(comparisons), ""]
    if "curves" in figures:
        lines += [f"![Learning curves]({figures['curves']})", "",
                  "Validation loss and accuracy per epoch (training loss dashed), one line per seed; the dot "
                  "marks the epoch kept.", ""]
    return lines


def cost_section(results: list[ArchResult]) -> list[str]:
    return [
        "## Cost per architecture",
        "",
        *cost_table(results),
        "",
        "The work each architecture took: the batches of its range test and the epochs trained over all seeds. How "
        "long that takes depends on the machine and on what else runs on it: each stage's times are in "
        "`reports/timings/`, and `python -m bench.run` measures them.",
        "",
    ]


def mistakes_section(figures: dict[str, str]) -> list[str]:
    """The confusion matrices and the most confidently wrong digits; nothing when every arch failed."""
    if "confusion" not in figures:
        return []
    return [
        "## Mistakes",
        "",
        f"![Confusion matrices]({figures['confusion']})",
        "",
        "Test-set confusion of each architecture's first-seed model (rows: true digit; only errors are coloured).",
        "",
        f"![Most confidently wrong test digits]({figures['errors']})",
        "",
        "The test digits each architecture gets most confidently wrong: true → predicted, and the probability "
        "it gave the wrong digit.",
        "",
    ]


def lr_range_section(results: list[ArchResult], figures: dict[str, str]) -> list[str]:
    return [
        "## LR range tests",
        "",
        f"![LR range test curves]({figures['lr_range']})",
        "",
        "Loss of every batch (faint) and its smoothed curve against the rate, log scale; the marker is the "
        "rate training used.",
        "",
        f"![Each rule's pick on each curve]({figures['lr_rules']})",
        "",
        "Per architecture: where the sweep stopped and where each rule points; the rule training used is "
        "drawn larger, outlined.",
        "",
        *rules_table(results),
        "",
        "Every rule's pick (README, \"The LR range test and the picking rules\"); in bold the one the "
        "architecture trained with (its `archs.<name>.rule`, else `lr_range.rule`; none when its rate is fixed "
        "in params). n/a: the curve is too short for that rule.",
        "",
    ]


def render_report(params: Params, results: list[ArchResult], figures: dict[str, str], answer: str) -> str:
    """The whole report. ``figures`` maps lr_range, lr_rules, digits, confusion and errors (unless every
    arch failed) and curves (when training runs more than one epoch) to their paths relative to the report;
    ``answer`` is answer.md's (the evidence pipeline's report, which it links to)."""
    n_seeds = len(params.seeds)
    lines = [
        *intro_section(params, results, figures, answer),
        *results_section(results, n_seeds),
        *findings_section(results, n_seeds, params.report.tie_margin, figures, answer),
        *cost_section(results),
        *mistakes_section(figures),
        *lr_range_section(results, figures),
        *provenance_section(params, results),
    ]
    return "\n".join(lines).rstrip("\n") + "\n"
