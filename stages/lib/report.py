"""Render reports/report.md from what the stages wrote. Pure: data in, Markdown out."""

from __future__ import annotations

from dataclasses import dataclass

from stages.lib.schema import Params
from stages.lib.stats import Comparison, compare_all


@dataclass(frozen=True)
class ArchResult:
    name: str
    hidden: tuple[int, ...]
    activation: str
    metrics: dict  # reports/metrics/<arch>.json, plus the stages' timings
    lr_range: dict  # reports/lr_range/<arch>.json


@dataclass(frozen=True)
class Study:
    """One opt-in rerun of the pipeline (`make studies`) with some params changed."""
    name: str
    overrides: dict  # dotted key -> value
    results: list[ArchResult]  # archs whose study results match the current params
    stale: list[str]  # archs with no result, or one made with other params
    figure: str | None  # learning curves, when the study trains for more than one epoch


ALPHA = 0.05


def study_matches(expected: Params, made_with: Params, arch: str) -> bool:
    """Whether a study's result for ``arch`` was made with the params it would be made with now."""
    return (made_with.seed == expected.seed and made_with.data.val_size == expected.data.val_size
            and made_with.lr_range == expected.lr_range and made_with.train == expected.train
            and made_with.archs.get(arch) == expected.archs[arch])


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def failed(result: ArchResult) -> str | None:
    """Why the arch has no result (its metrics say so), or None."""
    return result.metrics.get("failed")


def per_seed_accuracies(result: ArchResult) -> list[float]:
    return [run["test_accuracy"] for run in result.metrics["seeds"].values() if "test_accuracy" in run]


def accuracy_cell(m: dict) -> str:
    """Mean test accuracy, ± the standard deviation over seeds when there are several."""
    if m["test_accuracy_std"] is None:
        return pct(m["test_accuracy"])
    return f"{100 * m['test_accuracy']:.2f} ± {100 * m['test_accuracy_std']:.2f} %"


def pairwise(results: list[ArchResult], alpha: float = ALPHA) -> list[Comparison]:
    """Every pair of archs with a result, tested once; conclusion and comparisons_table share them."""
    return compare_all({r.name: per_seed_accuracies(r) for r in results if not failed(r)}, alpha)


def conclusion(results: list[ArchResult], tests: list[Comparison], tie_margin: float,
               alpha: float = ALPHA) -> list[str]:
    """Which arch is best and which differences are real; failed archs apart.

    With several seeds per arch, "real" means an exact permutation test on the per-seed
    test accuracies, Holm-corrected over all pairs; with one seed, nothing can be ranked, so
    the smallest arch within ``tie_margin`` of the best is named with that caveat.
    """
    lines = [f"- **{r.name} failed**: {failed(r)}." for r in results if failed(r)]
    results = [r for r in results if not failed(r)]
    if not results:
        return lines + ["- No architecture produced a result."]
    best = max(results, key=lambda r: r.metrics["test_accuracy"])
    repeats = min(len(per_seed_accuracies(r)) for r in results)
    head = (f"- Best mean test accuracy over {repeats} seeds: **{best.name}**, {accuracy_cell(best.metrics)} "
            f"({best.metrics['params']:,} parameters)." if repeats >= 2 else
            f"- Best test accuracy: **{best.name}**, {pct(best.metrics['test_accuracy'])} "
            f"({best.metrics['params']:,} parameters).")
    if repeats >= 2:
        return [head, *_significance(best, results, tests, alpha), *lines]
    return [head, *_within_margin(best, results, tie_margin), *lines,
            "- Each number is one training run with one seed: accuracy moves by a few tenths of a point from "
            "seed to seed, so differences this small rank nothing. `train.repeats` (or a study with it) gives "
            "mean ± std and a significance test."]


def _significance(best: ArchResult, results: list[ArchResult], comparisons: list[Comparison],
                  alpha: float) -> list[str]:
    tests = {(c.a, c.b): c for c in comparisons}
    below, level = [], []
    for r in sorted(results, key=lambda r: -r.metrics["test_accuracy"]):
        if r is best:
            continue
        c = tests.get((best.name, r.name)) or tests.get((r.name, best.name))
        gap = 100 * (best.metrics["test_accuracy"] - r.metrics["test_accuracy"])
        text = f"{r.name} ({gap:.2f} points lower, adjusted p = {c.p_adjusted:.3g})"
        (below if c.significant else level).append((r, text))
    lines = []
    if below:
        lines.append(f"- Below it by more than seed-to-seed noise: {', '.join(t for _, t in below)}.")
    if level:
        lines.append(f"- Not distinguishable from it at this number of seeds: {', '.join(t for _, t in level)}.")
        smallest = min([best] + [r for r, _ in level], key=lambda r: r.metrics["params"])
        if smallest is not best:
            ratio = best.metrics["params"] / smallest.metrics["params"]
            lines.append(f"- So the smallest network that does as well as the best, as far as these runs can tell, "
                         f"is **{smallest.name}** ({smallest.metrics['params']:,} parameters, {ratio:.1f}x fewer "
                         f"than {best.name}).")
    else:
        lines.append("- Every other architecture is below it by more than seed-to-seed noise.")
    stds = [100 * r.metrics["test_accuracy_std"] for r in results]
    means = [100 * r.metrics["test_accuracy"] for r in results]
    lines.append(f"- For scale: the standard deviation over seeds is {min(stds):.2f}–{max(stds):.2f} points per "
                 f"architecture; the means span {max(means) - min(means):.2f} points.")
    n_pairs = len(results) * (len(results) - 1) // 2
    lines.append(f"- \"More than noise\" means: a two-sided exact permutation test on the per-seed test accuracies, "
                 f"Holm-corrected over all {n_pairs} pairs, finds the difference at level {alpha:g}. "
                 "\"Not distinguishable\" is not \"equal\": more seeds could still separate them.")
    return lines


def _within_margin(best: ArchResult, results: list[ArchResult], tie_margin: float) -> list[str]:
    best_acc = best.metrics["test_accuracy"]
    # The tolerance keeps a gap of exactly tie_margin inside despite float rounding.
    close = [r for r in results if best_acc - r.metrics["test_accuracy"] <= tie_margin + 1e-9]
    smallest = min(close, key=lambda r: r.metrics["params"])
    if smallest is best:
        lines = [f"- No smaller network comes within {100 * tie_margin:.2g} points of it."]
    else:
        gap = best_acc - smallest.metrics["test_accuracy"]
        ratio = best.metrics["params"] / smallest.metrics["params"]
        lines = [
            f"- Smallest network within {100 * tie_margin:.2g} points of it: **{smallest.name}**, "
            f"{pct(smallest.metrics['test_accuracy'])} ({gap * 100:.2f} points lower) with "
            f"{smallest.metrics['params']:,} parameters ({ratio:.1f}x fewer)."
        ]
    others = ", ".join(r.name for r in close if r not in (best, smallest))
    if others:
        lines.append(f"- Also within {100 * tie_margin:.2g} points of the best: {others}.")
    return lines


def comparisons_table(tests: list[Comparison], alpha: float = ALPHA) -> list[str]:
    """Every pair of archs: difference of mean test accuracy, raw and Holm-adjusted p."""
    if not tests:
        return []
    lines = [f"| pair | difference (points) | p | Holm-adjusted p | at level {alpha:g} |",
             "|---|---:|---:|---:|---|"]
    for c in sorted(tests, key=lambda c: c.p_value):
        verdict = "different" if c.significant else "not distinguishable"
        lines.append(f"| {c.a} − {c.b} | {100 * c.difference:+.2f} | {c.p_value:.3g} | {c.p_adjusted:.3g} "
                     f"| {verdict} |")
    return lines


def study_settings(params: Params) -> dict:
    """What the opt-in study's numbers depend on besides the arch; a mismatch makes them stale."""
    t = params.train
    return {"seed": params.seed, "epochs": t.epochs, "batch_size": t.batch_size, "patience": t.patience}


def lr_study_section(params: Params, study: dict) -> list[str]:
    """Tables from reports/lr_study.json: test accuracy at fixed rates and at every rule's pick."""
    lines = [
        "## How good are the picked rates?",
        "",
        "`make lr-study` trains every arch again, same seed and training, at a grid of fixed rates and at "
        "every rule's pick. Test accuracy:",
        "",
    ]
    current = study_settings(params)
    fresh = {
        name: entry for name, entry in study["archs"].items()
        if name in params.archs and study["settings"] == current
        and tuple(entry["hidden"]) == params.archs[name].hidden and entry["activation"] == params.archs[name].activation
    }
    missing = [name for name in params.archs if name not in fresh]
    if missing:
        lines += [f"_Not shown, study missing or stale for current params (rerun `make lr-study`): "
                  f"{', '.join(missing)}._", ""]
    if not fresh:
        return lines
    grid = study["grid"]
    lines += ["| arch | " + " | ".join(f"{lr:g}" for lr in grid) + " |", "|---|" + "---:|" * len(grid)]
    # A run that failed (NaN loss) has no test_accuracy.
    accuracy = {name: {run["lr"]: run.get("test_accuracy") for run in entry["runs"]} for name, entry in fresh.items()}
    best = {}
    for name, acc in accuracy.items():
        best[name] = max((acc[lr] for lr in grid if acc[lr] is not None), default=None)
        cells = ["failed" if acc[lr] is None else f"**{pct(acc[lr])}**" if acc[lr] == best[name] else pct(acc[lr])
                 for lr in grid]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    rules = list(next(iter(fresh.values()))["picks"])
    lines += [
        "",
        "Each rule's pick, and its test accuracy minus the grid's best (points); the rule training uses is marked ✓:",
        "",
        "| arch | " + " | ".join(f"`{rule}`" + (" ✓" if rule == params.lr_range.rule else "") for rule in rules) + " |",
        "|---|" + "---|" * len(rules),
    ]
    for name, entry in fresh.items():
        cells = []
        for rule in rules:
            pick = entry["picks"][rule]
            acc = accuracy[name].get(pick.get("lr"))
            if acc is None:
                cells.append("n/a" if "lr" not in pick else f"{pick['lr']:.3g} → failed")
            elif best[name] is None:
                cells.append(f"{pick['lr']:.3g} → {pct(acc)}")
            else:
                cells.append(f"{pick['lr']:.3g} → {pct(acc)} ({100 * (acc - best[name]):+.2f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + [""]


def _pick_cell(r: ArchResult) -> str:
    return f"{r.metrics['lr']:.3g} ({r.metrics['lr_chosen_by']})"


def _layers(r: ArchResult) -> str:
    return " → ".join(str(h) for h in r.hidden) + ("" if r.activation == "relu" else f" ({r.activation})")


def results_table(results: list[ArchResult]) -> list[str]:
    """One row per arch, best mean test accuracy first, failed archs last."""
    several = any(r.metrics.get("repeats", 1) > 1 for r in results)
    lines = [
        "| arch | hidden layers | learning rate (picked by) | epochs run | val accuracy | test accuracy | test loss |"
        + (" test accuracy per seed |" if several else ""),
        "|---|---|---|---|---:|---:|---:|" + ("---|" if several else ""),
    ]
    for r in sorted(results, key=lambda r: (bool(failed(r)), -(r.metrics["test_accuracy"] or 0))):
        m = r.metrics
        runs = list(m["seeds"].values())
        epochs = sorted({run["epochs_run"] for run in runs})
        epochs_cell = str(epochs[0]) if len(epochs) == 1 else f"{epochs[0]}–{epochs[-1]}"
        scores = (f"— | **failed**: {failed(r)} | —" if failed(r) else
                  f"{pct(m['val_accuracy'])} | **{accuracy_cell(m)}** | {m['test_loss']:.4f}")
        row = f"| {r.name} | {_layers(r)} | {_pick_cell(r)} | {epochs_cell} | {scores} |"
        if several:
            row += " " + ", ".join(f"{100 * a:.2f}" for a in per_seed_accuracies(r)) + " |"
        lines.append(row)
    return lines


def cost_table(results: list[ArchResult]) -> list[str]:
    lines = [
        "| arch | parameters | model file | range test s | training s per epoch | inference ms per 1,000 images |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(results, key=lambda r: r.metrics["params"]):
        m = r.metrics
        inference = "—" if m["inference_ms"] is None else f"{m['inference_ms']:.1f}"
        lines.append(f"| {r.name} | {m['params']:,} | {m['size_bytes'] / 2**20:.2f} MiB "
                     f"| {m['lr_range_seconds']:.1f} | {m['train_seconds_per_epoch']:.1f} | {inference} |")
    return lines


def _overrides_text(overrides: dict) -> str:
    return ", ".join(f"`{key}={value}`" for key, value in overrides.items())


def study_section(study: Study, tests: list[Comparison], tie_margin: float) -> list[str]:
    lines = [
        f"## Study `{study.name}`: {_overrides_text(study.overrides)}",
        "",
        f"`make studies` reran the whole pipeline in a scratch copy with {_overrides_text(study.overrides)} and "
        f"everything else as above (same picked rates); its files are in `reports/studies/{study.name}/`.",
        "",
    ]
    if study.stale:
        lines += [f"_Not shown, study missing or made with other params (rerun `make studies`): "
                  f"{', '.join(study.stale)}._", ""]
    if not study.results:
        return lines
    lines += [*results_table(study.results), "", *conclusion(study.results, tests, tie_margin), ""]
    pairs = comparisons_table(tests)
    if pairs:
        lines += ["All pairs (exact permutation test on the per-seed test accuracies):", "", *pairs, ""]
    if study.figure:
        lines += [f"![Learning curves, study {study.name}]({study.figure})", "",
                  "Validation loss and accuracy per epoch (training loss dashed), one line per seed; the dot "
                  "marks the epoch kept (lowest validation loss).", ""]
    return lines


def summary(studies: list[Study], tests: dict[str, list[Comparison]], tie_margin: float) -> list[str]:
    """The headline from the study with the most seeds, when one has at least two."""
    def repeats(study: Study) -> int:
        return min((len(per_seed_accuracies(r)) for r in study.results if not failed(r)), default=0)
    best = max(studies, key=repeats, default=None)
    if best is None or repeats(best) < 2:
        return []
    return ["## Summary", "",
            f"From study `{best.name}` ({repeats(best)} seeds per architecture; details below):", "",
            *conclusion(best.results, tests[best.name], tie_margin), ""]


def _machine_text(record: dict) -> str:
    isa = ", ".join(record["isa"].split()) or "ISA flags unknown"
    software = ", ".join(f"{name} {record[key]}" for key, name in
                         (("python", "Python"), ("tensorflow", "TensorFlow"), ("keras", "Keras"), ("numpy", "numpy"))
                         if key in record)
    text = f"{record['cpu']} ({isa}), {record['cores']} cores; {software}"
    if "numerics" in record:
        onednn = ", ".join(f"{key}={value}" for key, value in record["onednn"].items() if value is not None)
        text += (f"; numerics `{record['numerics']}`" + (f" ({onednn})" if onednn else "")
                 + f", {record['intra_op_threads']} intra-op thread(s)")
    return text


def provenance_section(machines: dict[str, dict | None]) -> list[str]:
    """Which machine and software ran which stage (``machines``: stage name -> its record, or None)."""
    groups: dict[str, list[str]] = {}
    for stage, record in machines.items():
        groups.setdefault("not recorded" if record is None else _machine_text(record), []).append(f"`{stage}`")
    lines = ["## Where these numbers were made", ""]
    lines += [f"- {text}: {', '.join(stages)}" for text, stages in groups.items()]
    return lines + ["", "Under `portable` numerics the same params gave the same models and metrics, byte for byte, "
                    "on every x86-64 machine checked so far (README, \"Same numbers on any machine\"); timings are "
                    "the machine's own.", ""]


def render_report(params: Params, results: list[ArchResult], figures: dict[str, str],
                  studies: list[Study] = (), lr_study: dict | None = None,
                  machines: dict[str, dict | None] | None = None) -> str:
    """The whole report. ``figures`` maps lr_range, lr_rules, digits, confusion and errors (unless every
    arch failed) and curves (when training runs more than one epoch) to their relative paths."""
    m0 = results[0].metrics
    lr, tr = params.lr_range, params.train
    tests = pairwise(results)
    study_tests = {study.name: pairwise(study.results) for study in studies}
    seeds = params.seeds
    seed_text = (f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}–{seeds[-1]}, one run each")
    lines = [
        "# Which network learns best with its own tuned learning rate?",
        "",
        f"MNIST: {m0['n_train']:,} training, {params.data.val_size:,} validation and {m0['n_test']:,} test images "
        f"(a sample below). Each architecture gets an LR range test (SGD, batch {lr.batch_size}, rate from "
        f"{lr.start_lr:g} multiplied by {lr.factor:g} per batch, seed {params.seed}), then fresh copies train with "
        f"plain SGD at the picked rate for up to {tr.epochs} epoch(s) (batch {tr.batch_size}, early stopping on "
        f"validation loss with patience {tr.patience}, best epoch kept; {seed_text}) and are scored on the test "
        "set. Generated by `dvc repro` from the files under `reports/`; do not edit by hand.",
        "",
        f"![Sample test digits with their labels]({figures['digits']})",
        "",
        *summary(studies, study_tests, params.report.tie_margin),
        "## Results",
        "",
        *results_table(results),
        "",
        "## Conclusion",
        "",
        *conclusion(results, tests, params.report.tie_margin),
        "",
    ]
    pairs = comparisons_table(tests)
    if pairs:
        lines += ["All pairs:", "", *pairs, ""]
    if "curves" in figures:
        lines += [f"![Learning curves]({figures['curves']})", "",
                  "Validation loss and accuracy per epoch (training loss dashed), one line per seed; the dot "
                  "marks the epoch kept.", ""]
    for study in studies:
        lines += study_section(study, study_tests[study.name], params.report.tie_margin)
    lines += [
        "## Cost per architecture",
        "",
        *cost_table(results),
        "",
        "Wall-clock times of this run's stages on the machine that ran them (training includes the validation "
        "pass after each epoch; inference is numpy on the .keras weights, batches of 1,000).",
        "",
    ]
    if "confusion" in figures:  # absent when every arch failed
        lines += [
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
    lines += [
        "## LR range tests",
        "",
        f"![LR range test curves]({figures['lr_range']})",
        "",
        "Loss of every batch (faint) and its smoothed curve against the rate, log scale; the marker is the "
        "rate training used. Rows after the stop are not used to pick.",
        "",
        f"![Each rule's pick on each curve]({figures['lr_rules']})",
        "",
        "Per architecture: where the sweep stopped and where each rule points; the rule training used is "
        "drawn larger, outlined.",
        "",
        "| arch | batches | stopped because | lowest smoothed loss | at rate | " + " | ".join(
            f"`{rule}`" for rule in results[0].lr_range["picks"]) + " |",
        "|---|---:|---|---:|---:|" + "---:|" * len(results[0].lr_range["picks"]),
    ]
    for r in results:
        s = r.lr_range
        picks = [
            "n/a" if "error" in p else (f"**{p['lr']:.3g}**" if rule == r.metrics["lr_chosen_by"] else f"{p['lr']:.3g}")
            for rule, p in s["picks"].items()
        ]
        lowest = "— | —" if s["min_smoothed_loss"] is None else f"{s['min_smoothed_loss']:.4f} | {s['lr_at_min']:.3g}"
        lines.append(f"| {r.name} | {s['steps']} | {s['stop_reason']} | {lowest} | " + " | ".join(picks) + " |")
    if lr_study is not None:
        lines += ["", *lr_study_section(params, lr_study)]
    if machines:
        lines += provenance_section(machines)
    return "\n".join(lines).rstrip("\n") + "\n"
