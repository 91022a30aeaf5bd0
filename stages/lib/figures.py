"""The report's figures (matplotlib, written reproducibly: no dates in the PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator  # noqa: E402

from stages.ground.atomic import atomic_path  # noqa: E402
from stages.lib.schema import NUM_CLASSES  # noqa: E402


def save(fig: plt.Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)


def on_curve(curve: dict[str, np.ndarray], lr: float) -> float:
    """The smoothed loss at ``lr`` (log-interpolated), to put a pick's marker on its curve."""
    return float(np.interp(np.log(lr), np.log(curve["lr"]), curve["smoothed_loss"]))


def lr_range_figure(curves: dict[str, dict[str, np.ndarray]], picked: dict[str, float], path: Path) -> None:
    """All archs' range-test curves on one log-x plot, the rate each trained with marked.

    Args:
        curves: arch -> its range test's CSV columns (lr, loss, smoothed_loss).
        picked: arch -> the rate it trained with.
    """
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

    Args:
        curves: arch -> its range test's CSV columns (lr, loss, smoothed_loss).
        sweeps: arch -> its lr_range JSON.
        used: arch -> the rule its training used (highlighted), or something else when the rate was fixed.
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


def digit_grid_figure(images: np.ndarray, labels: np.ndarray, path: Path, columns: int = 10) -> None:
    """A grid of digits titled with their labels, to eyeball the data a model sees."""
    n = len(images)
    cols = min(n, columns)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(0.9 * cols, 1.05 * rows), squeeze=False)
    for ax, image, label in zip(axes.flat, images, labels):
        # Fixed vmin/vmax: otherwise each digit is stretched to its own contrast.
        ax.imshow(image, cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(str(label), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    save(fig, path)


def confusion_figure(matrices: dict[str, np.ndarray], path: Path) -> None:
    """One confusion matrix per arch (rows true, columns predicted), coloured by errors only.

    The diagonal (thousands of correct answers) is drawn grey so it does not swamp the colour
    scale; off-diagonal counts use a log scale shared by all panels, so archs compare directly.
    """
    n = len(matrices)
    cols = min(n, 2)
    rows = -(-n // cols)
    off_max = max(int((m - np.diag(np.diag(m))).max()) for m in matrices.values())
    norm = LogNorm(vmin=1, vmax=max(off_max, 2))
    cmap = plt.get_cmap("Reds").with_extremes(bad="white")
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.8 * rows), squeeze=False)
    for ax, (name, m) in zip(axes.flat, matrices.items()):
        size = len(m)
        diagonal = np.eye(size, dtype=bool)
        ax.imshow(np.ma.masked_where(diagonal | (m == 0), m), cmap=cmap, norm=norm)
        for i in range(size):
            ax.add_patch(Rectangle((i - 0.5, i - 0.5), 1, 1, color="0.85"))
            for j in range(size):
                if i != j and m[i, j]:
                    ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm(m[i, j]) > 0.6 else "black")
        ax.set_xticks(range(size))
        ax.set_yticks(range(size))
        ax.set_xlabel("predicted digit")
        ax.set_ylabel("true digit")
        ax.set_title(f"{name}: {int(m.sum() - np.trace(m))} errors")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    save(fig, path)


def confident_errors_figure(errors: dict[str, list[dict]], images: np.ndarray, path: Path) -> None:
    """One row per arch of its misclassified digits, titled "true→predicted confidence".

    Each error is a dict with ``index`` (into ``images``), ``label``, ``predicted`` and
    ``confidence`` (softmax probability of the predicted class), drawn in the order given.
    Rows are padded with blank cells so archs with fewer (or no) errors still get a row.
    """
    rows = len(errors)
    cols = max(1, max(len(e) for e in errors.values()))
    fig, axes = plt.subplots(rows, cols, figsize=(1.1 * cols + 0.6, 1.25 * rows), squeeze=False)
    for row, (name, errs) in zip(axes, errors.items()):
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_frame_on(False)
        for ax, e in zip(row, errs):
            ax.imshow(images[e["index"]], cmap="gray_r", vmin=0, vmax=255)
            ax.set_title(f"{e['label']}→{e['predicted']} {e['confidence']:.0%}", fontsize=8)
        if not errs:
            row[0].text(0.5, 0.5, "no errors", ha="center", va="center", fontsize=8, transform=row[0].transAxes)
        # A ylabel, not axis("off"), so the arch name survives on a blank first cell.
        row[0].set_ylabel(name, fontsize=9)
    fig.tight_layout()
    save(fig, path)


def learning_curves_figure(histories: dict[str, list[dict]], path: Path) -> None:
    """Validation loss and accuracy per epoch for every arch and seed.

    Rows carry ``seed``, ``epoch`` (0-based), ``loss``, ``val_loss``, ``accuracy`` and
    ``val_accuracy``. The first seed in each history is drawn solid and named in the legend,
    with its training loss dashed (the gap shows overfitting) and its best epoch (lowest
    validation loss) dotted; further seeds are faint, to show the spread without clutter.
    """
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, (name, rows) in enumerate(histories.items()):
        color = f"C{i}"
        seeds = list(dict.fromkeys(r["seed"] for r in rows))
        for k, seed in enumerate(seeds):
            runs = sorted((r for r in rows if r["seed"] == seed), key=lambda r: r["epoch"])
            epochs = np.array([r["epoch"] for r in runs]) + 1
            val_loss = np.array([r["val_loss"] for r in runs])
            val_acc = np.array([r["val_accuracy"] for r in runs])
            first = k == 0
            style = {"color": color, "linewidth": 1.6 if first else 1.0, "alpha": 1.0 if first else 0.35}
            loss_ax.plot(epochs, val_loss, label=name if first else None, **style)
            acc_ax.plot(epochs, val_acc, label=name if first else None, **style)
            if first:
                loss_ax.plot(epochs, [r["loss"] for r in runs], color=color, linestyle="--", linewidth=1,
                             label=f"{name} (training)")
                best = int(np.argmin(val_loss))
                dot = {"marker": "o", "markersize": 7, "markeredgecolor": "black", "color": color, "linestyle": "none"}
                loss_ax.plot([epochs[best]], [val_loss[best]], **dot)
                acc_ax.plot([epochs[best]], [val_acc[best]], **dot)
    for ax, what in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"validation {what}")
        ax.set_title(f"validation {what} (dot = lowest validation loss)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, path)


# The answer's figures (reports/answer/). Accuracies come in percentage points; an interval is
# (estimate, low, high). Accuracy axes use a logit scale: it spreads 97 % from 98 % as well as 50 %
# from 90 %, so chance (a diverged run) and the top of the range show in one panel.


def _panels(n: int, width: float = 6.0, height: float = 3.8) -> tuple[plt.Figure, list]:
    cols = min(n, 2)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)[:n]


# Where a logit accuracy axis may put its ticks (fractions): dense near 1, where these networks' accuracies lie.
ACCURACY_TICKS = (0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.93, 0.95, 0.96, 0.97, 0.975, 0.98, 0.985, 0.99, 0.995, 0.998)


def _accuracy_axis(ax, label: str, values: np.ndarray) -> None:
    """A logit axis, said so in its label, with ticks where ``values`` (fractions) lie: each candidate tick within
    their range, and the one just outside at each end."""
    ax.set_yscale("logit")
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    ticks = np.array(ACCURACY_TICKS)
    if len(finite):
        below, above = ticks[ticks <= finite.min()], ticks[ticks >= finite.max()]
        low = below.max() if len(below) else finite.min()
        high = above.min() if len(above) else finite.max()
        ticks = ticks[(ticks >= low) & (ticks <= high)]
        ax.set_ylim(low, high)
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(lambda y, _: f"{100 * y:g} %")
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set_ylabel(f"{label} (logit scale)")
    ax.grid(True, which="major", alpha=0.3)


def _rule_style(i: int) -> dict:
    """The i-th rule's marker and colour, the same in every answer figure (C0 is the grid's)."""
    return {"marker": RULE_MARKERS[i % len(RULE_MARKERS)], "color": f"C{(i + 1) % 10}"}


def _fraction(points: float | np.ndarray) -> float | np.ndarray:
    """Points -> the fraction a logit axis takes, kept off 0 and 1."""
    return np.clip(np.asarray(points, dtype=np.float64) / 100, 1e-4, 1 - 1e-4)


def grid_figure(grid: list[float], curves: dict[str, list[tuple[float, float, float]]],
                picks: dict[str, dict[str, list[tuple[float, float]]]], best: dict[str, float], path: Path) -> None:
    """One panel per arch: one-epoch validation accuracy against rate (mean over seeds and its 95 % band),
    every rule's pick in every range test at the mean accuracy trained there, and the grid's best rate.

    Args:
        grid: the rates, evidence.grid.
        curves: arch -> per grid rate, (mean, low, high) validation accuracy over seeds, points.
        picks: arch -> rule -> (its pick in each range test, the mean accuracy trained there, points).
        best: arch -> its best grid rate.
    """
    fig, axes = _panels(len(curves))
    for ax, (name, curve) in zip(axes, curves.items()):
        mean, low, high = (np.array(column) for column in zip(*curve))
        ax.fill_between(grid, _fraction(low), _fraction(high), color="C0", alpha=0.2, label="95 % t interval")
        ax.plot(grid, _fraction(mean), color="C0", marker=".", label="grid, mean over seeds")
        ax.axvline(best[name], color="0.4", linestyle=":", label="best grid rate")
        for i, (rule, points) in enumerate(picks[name].items()):
            if points:
                lrs, accuracies = zip(*points)
                ax.plot(lrs, _fraction(accuracies), linestyle="none", label=rule, **_rule_style(i))
        ax.set_xscale("log")
        shown = [*_fraction(low), *_fraction(high), *(_fraction(a) for points in picks[name].values()
                                                      for _, a in points)]
        _accuracy_axis(ax, "validation accuracy after one epoch", np.array(shown))
        ax.set_xlabel("learning rate (log scale)")
        ax.set_title(name)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save(fig, path)


def long_curves_figure(curves: dict[str, dict[int, tuple[list[float | None], int | None, int | None]]],
                       path: Path) -> None:
    """One panel per arch: validation accuracy per epoch of every seed's long run; a dot at the epoch it keeps
    (lowest validation loss), a star at its most accurate one."""
    fig, axes = _panels(len(curves))
    for ax, (name, runs) in zip(axes, curves.items()):
        shown = []
        for i, (seed, (accuracies, kept, accurate)) in enumerate(runs.items()):
            epochs = np.arange(1, len(accuracies) + 1)
            values = _fraction([np.nan if a is None else a for a in accuracies])
            shown.append(values)
            ax.plot(epochs, values, color=f"C{i}", linewidth=1.0, label=f"seed {seed}")
            for epoch, marker in ((kept, "o"), (accurate, "*")):
                if epoch is not None:
                    ax.plot([epochs[epoch]], [values[epoch]], marker=marker, markersize=8, color=f"C{i}",
                            markeredgecolor="black", linestyle="none")
        _accuracy_axis(ax, "validation accuracy", np.concatenate(shown))
        ax.set_xlabel("epoch (dot: lowest validation loss, kept; star: most accurate)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(name)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save(fig, path)


def long_losses_figure(losses: dict[str, dict[int, tuple[list[float | None], list[float | None], int | None]]],
                       path: Path) -> None:
    """One panel per arch: training (dashed) and validation (solid) loss per epoch of every seed's long run, the
    epoch it keeps (lowest validation loss) dotted. ``losses``: arch -> seed -> (train, validation, kept)."""
    fig, axes = _panels(len(losses))
    for ax, (name, runs) in zip(axes, losses.items()):
        for i, (seed, (train, val, kept)) in enumerate(runs.items()):
            epochs = np.arange(1, len(val) + 1)
            ax.plot(epochs, [np.nan if v is None else v for v in train], color=f"C{i}", linewidth=1.0,
                    linestyle="--")
            values = np.array([np.nan if v is None else v for v in val], dtype=np.float64)
            ax.plot(epochs, values, color=f"C{i}", linewidth=1.2, label=f"seed {seed}")
            if kept is not None:
                ax.plot([epochs[kept]], [values[kept]], marker="o", color=f"C{i}", markeredgecolor="black",
                        linestyle="none")
        ax.set_yscale("log")
        for axis in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
            axis(lambda y, _: f"{y:g}")
        ax.set_ylabel("loss (log scale): dashed training, solid validation")
        ax.set_xlabel("epoch (dot: lowest validation loss, kept)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(name)
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    save(fig, path)


def gaps_figure(families: dict[str, list[tuple[str, float, float, float]]], path: Path) -> None:
    """One panel per family of comparisons, each on its own scale: every gap in points with its interval, a line
    at 0, red where the interval excludes 0. ``families``: title -> (label, estimate, low, high), top to bottom."""
    heights = [len(rows) + 1.2 for rows in families.values()]
    fig, axes = plt.subplots(len(families), 1, figsize=(9, 0.4 * sum(heights) + 0.6), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, (title, rows) in zip(axes[:, 0], families.items()):
        y = np.arange(len(rows))[::-1]
        for yi, (_, estimate, low, high) in zip(y, rows):
            ax.errorbar([estimate], [yi], xerr=[[estimate - low], [high - estimate]], marker="o", capsize=3,
                        color="C3" if low > 0 or high < 0 else "C0", linestyle="none")
        ax.axvline(0, color="0.3", linewidth=1)
        ax.set_yticks(y, [label for label, *_ in rows], fontsize=8)
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.set_title(title, fontsize=9, loc="left")
        ax.grid(True, axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel("gap, percentage points (red: the interval excludes 0)")
    fig.tight_layout()
    save(fig, path)


def cost_figure(points: dict[str, dict], path: Path) -> None:
    """Accuracy of the long runs (mean and 95 % t interval over seeds, validation and test) against parameters
    and against CPU seconds per epoch. ``points``: arch -> {params, cpu_seconds_per_epoch, val, test}."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (key, label, tick) in zip(axes, (("params", "parameters", "{x:,.0f}"),
                                             ("cpu_seconds_per_epoch", "CPU seconds per epoch, one thread",
                                              "{x:g}"))):
        span = max(p[key] for p in points.values()) - min(p[key] for p in points.values())
        for i, (name, p) in enumerate(points.items()):
            for part, shift, fill in (("val", -0.01, f"C{i}"), ("test", 0.01, "white")):
                mean, low, high = p[part]
                ax.errorbar([p[key] + shift * span], [mean], yerr=[[mean - low], [high - mean]], marker="o",
                            capsize=3, color=f"C{i}", markerfacecolor=fill, linestyle="none",
                            label=f"{name} {'validation' if part == 'val' else 'test'}")
        ax.xaxis.set_major_formatter(tick)
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy, % (filled: validation, open: test)")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    save(fig, path)


def per_class_figure(classes: dict[str, list[tuple[float, float, float]]], chosen: str, path: Path) -> None:
    """Per digit, the test accuracy of each arch (mean and 95 % t interval over seeds); ``chosen`` drawn bold."""
    fig, ax = plt.subplots(figsize=(10, 4.2))
    width = 0.8 / len(classes)
    for i, (name, intervals) in enumerate(classes.items()):
        mean, low, high = (np.array(column) for column in zip(*intervals))
        x = np.arange(len(mean)) - 0.4 + width * (i + 0.5)
        bold = name == chosen
        ax.errorbar(x, mean, yerr=[mean - low, high - mean], marker="o", capsize=2, linestyle="none", color=f"C{i}",
                    markersize=7 if bold else 4, markeredgecolor="black" if bold else f"C{i}",
                    label=f"{name} (chosen on validation)" if bold else name)
    ax.set_xticks(range(NUM_CLASSES))
    ax.set_xlabel("true digit")
    ax.set_ylabel("test accuracy on that digit, %")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, path)


def rule_picks_figure(picks: dict[str, dict[str, list[float]]], marks: dict[str, dict[str, float]],
                      path: Path) -> None:
    """One panel per arch, one row per rule: its pick in each range test (how far it wanders), with
    reference rates (``marks``: arch -> label -> rate) as vertical lines."""
    fig, axes = _panels(len(picks), height=3.2)
    for ax, (name, by_rule) in zip(axes, picks.items()):
        for row, (rule, lrs) in enumerate(by_rule.items()):
            ax.plot(lrs, [row] * len(lrs), linestyle="none", alpha=0.7, **_rule_style(row))
        for k, (label, lr) in enumerate(marks[name].items()):
            ax.axvline(lr, color="0.3", linestyle=(":", "--", "-.")[k % 3], linewidth=1, label=label)
        ax.set_yticks(range(len(by_rule)), list(by_rule))
        ax.set_xscale("log")
        ax.set_xlabel("picked rate (log scale), one dot per range test")
        ax.set_title(name)
        ax.set_ylim(-0.5, len(by_rule) - 0.5)
        ax.grid(True, axis="x", which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    save(fig, path)
