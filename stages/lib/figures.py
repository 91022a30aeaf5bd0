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


def lr_range_figure(curves: dict[str, dict[str, np.ndarray]], picked: dict[str, float], path: Path) -> None:
    """All archs' range-test curves on one log-x plot, the rate each trained with marked."""
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for i, (name, c) in enumerate(curves.items()):
        color = f"C{i}"
        ax.plot(c["lr"], c["loss"], color=color, alpha=0.18, linewidth=0.6)
        ax.plot(c["lr"], c["smoothed_loss"], color=color, linewidth=1.6, label=name)
        lr = picked[name]
        ax.plot([lr], [np.interp(np.log(lr), np.log(c["lr"]), c["smoothed_loss"])], marker="o",
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
