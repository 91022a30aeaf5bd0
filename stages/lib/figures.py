"""The report's figures (matplotlib, written reproducibly: no dates in the PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from stages.lib.atomic import atomic_path  # noqa: E402


def save(fig: plt.Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)


def on_curve(curve: dict[str, np.ndarray], lr: float) -> float:
    """The smoothed loss at ``lr`` (log-interpolated), to put a pick's marker on its curve."""
    return float(np.interp(np.log(lr), np.log(curve["lr"]), curve["smoothed_loss"]))


def lr_range_figure(curves: dict[str, dict[str, np.ndarray]], picked: dict[str, float], path: Path) -> None:
    """All archs' range-test curves on one log-x plot, the rate each trained with marked."""
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for i, (name, c) in enumerate(curves.items()):
        color = f"C{i}"
        ax.plot(c["lr"], c["loss"], color=color, alpha=0.18, linewidth=0.6)
        ax.plot(c["lr"], c["smoothed_loss"], color=color, linewidth=1.6, label=name)
        lr = picked[name]
        ax.plot([lr], [on_curve(c, lr)], marker="o",
                markersize=8, markeredgecolor="black", color=color, linestyle="none")
    finite = np.concatenate([c["smoothed_loss"][np.isfinite(c["smoothed_loss"])] for c in curves.values()])
    if len(finite):
        ax.set_ylim(0, min(float(np.percentile(finite, 99)) * 1.1, 4 * float(np.median(finite)) + 0.5))
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss per batch")
    ax.set_title("LR range test: loss vs rate (marker = rate used for training)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save(fig, path)


RULE_MARKERS = "osD^vP*X"


def lr_rules_figure(curves: dict[str, dict[str, np.ndarray]], sweeps: dict[str, dict], used: dict[str, str],
                    path: Path) -> None:
    """One panel per arch: raw and smoothed loss, where the sweep stopped, and every rule's pick.

    ``sweeps`` holds each arch's lr_range JSON; ``used`` names the rule its training used
    (highlighted), or something else when the rate was fixed.
    """
    n = len(curves)
    cols = min(n, 2)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.8 * rows), squeeze=False)
    for ax, (name, c) in zip(axes.flat, curves.items()):
        sweep = sweeps[name]
        ax.plot(c["lr"], c["loss"], color="0.6", linewidth=0.5, alpha=0.6, label="batch loss")
        ax.plot(c["lr"], c["smoothed_loss"], color="C0", linewidth=1.6, label="smoothed")
        if sweep["stop_step"] is not None:
            ax.axvline(c["lr"][sweep["stop_step"]], color="C3", linestyle="--", linewidth=1, label="stopped")
        for marker, (rule, pick) in zip(RULE_MARKERS, sweep["picks"].items()):
            if "lr" not in pick:
                continue
            chosen = rule == used[name]
            ax.plot([pick["lr"]], [on_curve(c, pick["lr"])], marker=marker, linestyle="none",
                    markersize=11 if chosen else 7, markeredgecolor="black" if chosen else "none",
                    markeredgewidth=1.5, label=f"{rule} (used)" if chosen else rule)
        finite = c["smoothed_loss"][np.isfinite(c["smoothed_loss"])]
        if len(finite):
            ax.set_ylim(0, float(finite[0]) * 1.3)
        ax.set_xscale("log")
        ax.set_title(name)
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("training loss")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    save(fig, path)
