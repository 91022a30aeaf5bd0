"""Render reports/report.md from what the stages wrote. Pure: data in, Markdown out."""

from __future__ import annotations

from dataclasses import dataclass

from stages.lib.params import Params


@dataclass(frozen=True)
class ArchResult:
    name: str
    hidden: tuple[int, ...]
    activation: str
    metrics: dict  # reports/metrics/<arch>.json
    lr_range: dict  # reports/lr_range/<arch>.json


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def failed(result: ArchResult) -> str | None:
    """Why the arch has no result (its metrics say so), or None."""
    return result.metrics.get("failed")


def conclusion(results: list[ArchResult], tie_margin: float) -> list[str]:
    """Best arch by test accuracy, and the smallest arch within ``tie_margin`` of it; failed archs apart."""
    lines = [f"- **{r.name} failed**: {failed(r)}." for r in results if failed(r)]
    results = [r for r in results if not failed(r)]
    if not results:
        return lines + ["- No architecture produced a result."]
    best = max(results, key=lambda r: r.metrics["test_accuracy"])
    best_acc = best.metrics["test_accuracy"]
    # The tolerance keeps a gap of exactly tie_margin inside despite float rounding.
    close = [r for r in results if best_acc - r.metrics["test_accuracy"] <= tie_margin + 1e-9]
    smallest = min(close, key=lambda r: r.metrics["params"])
    lines.insert(0, f"- Best test accuracy: **{best.name}**, {pct(best_acc)} ({best.metrics['params']:,} parameters).")
    if smallest is best:
        lines.append(f"- No smaller network comes within {100 * tie_margin:.2g} points of it.")
    else:
        gap = best_acc - smallest.metrics["test_accuracy"]
        ratio = best.metrics["params"] / smallest.metrics["params"]
        lines.append(
            f"- Smallest network within {100 * tie_margin:.2g} points of it: **{smallest.name}**, "
            f"{pct(smallest.metrics['test_accuracy'])} ({gap * 100:.2f} points lower) with "
            f"{smallest.metrics['params']:,} parameters ({ratio:.1f}x fewer)."
        )
    others = ", ".join(r.name for r in close if r not in (best, smallest))
    if others:
        lines.append(f"- Also within {100 * tie_margin:.2g} points of the best: {others}.")
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


def render_report(params: Params, results: list[ArchResult], lr_figure: str, rules_figure: str,
                  study: dict | None = None) -> str:
    m0 = results[0].metrics
    lr, tr = params.lr_range, params.train
    lines = [
        "# Which network learns best with its own tuned learning rate?",
        "",
        f"MNIST: {m0['n_train']:,} training, {params.data.val_size:,} validation and {m0['n_test']:,} test images. "
        f"Each architecture gets an LR range test (SGD, batch {lr.batch_size}, rate from {lr.start_lr:g} "
        f"multiplied by {lr.factor:g} per batch), then a fresh, identically initialised copy trains with "
        f"plain SGD at the picked rate for up to {tr.epochs} epoch(s) (batch {tr.batch_size}, early stopping "
        f"on validation loss with patience {tr.patience}, best epoch kept) and is scored on the test set. "
        f"Seed {params.seed}. Generated by `dvc repro` from the files under `reports/`; do not edit by hand.",
        "",
        "## Results",
        "",
        "| arch | hidden layers | params | learning rate (picked by) | val accuracy | test accuracy | test loss | range test s | train s |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(results, key=lambda r: (bool(failed(r)), -(r.metrics["test_accuracy"] or 0))):
        m = r.metrics
        layers = " → ".join(str(h) for h in r.hidden) + ("" if r.activation == "relu" else f" ({r.activation})")
        scores = (f"— | **failed**: {failed(r)} | —" if failed(r) else
                  f"{pct(m['val_accuracy'])} | **{pct(m['test_accuracy'])}** | {m['test_loss']:.4f}")
        lines.append(
            f"| {r.name} | {layers} | {m['params']:,} | {_pick_cell(r)} | {scores} | "
            f"{m['lr_range_seconds']:.1f} | {m['train_seconds']:.1f} |"
        )
    lines += [
        "",
        "## Conclusion",
        "",
        *conclusion(results, params.report.tie_margin),
        f"- Each number is one training run with seed {params.seed}: a difference smaller than the spread "
        "between seeds says nothing about the architectures.",
        "",
        "## LR range tests",
        "",
        f"![LR range test curves]({lr_figure})",
        "",
        "Loss of every batch (faint) and its smoothed curve against the rate, log scale; the marker is the "
        "rate training used. Rows after the stop are not used to pick.",
        "",
        f"![Each rule's pick on each curve]({rules_figure})",
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
    if study is not None:
        lines += ["", *lr_study_section(params, study)]
    return "\n".join(lines).rstrip("\n") + "\n"
