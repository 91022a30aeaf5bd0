"""The LR range test without TensorFlow: schedule, smoothing, stop rule and rate suggestions.

Every suggestion rule is a pure function ``(lrs, losses) -> Suggestion`` over the
rows recorded before the sweep stopped; ``losses`` is the smoothed curve.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

# Like fastai and Lightning, ignore the first and last few points: the start is
# dominated by the random init, the end by the blow-up the sweep stopped on.
SKIP_START = 10
SKIP_END = 5
MIN_POINTS = 10
# flat_center: how far above the minimum a loss still counts as "the bottom".
FLAT_TOLERANCE = 0.10


class NotEnoughPoints(ValueError):
    pass


class Suggestion(NamedTuple):
    lr: float
    index: int  # row of the curve the rule points at (to mark on the plot)


def exponential_lrs(start_lr: float, factor: float, steps: int) -> np.ndarray:
    """Rate used at each batch: start_lr * factor**step."""
    return start_lr * np.power(float(factor), np.arange(steps, dtype=np.float64))


class Ema:
    """Bias-corrected exponential moving average, as in fastai's recorder."""

    def __init__(self, beta: float):
        self.beta = beta
        self.avg = 0.0
        self.count = 0

    def update(self, value: float) -> float:
        self.count += 1
        self.avg = self.beta * self.avg + (1.0 - self.beta) * value
        return self.avg / (1.0 - self.beta**self.count)


def smooth(losses: np.ndarray, beta: float) -> np.ndarray:
    ema = Ema(beta)
    return np.array([ema.update(float(loss)) for loss in losses], dtype=np.float64)


class Stopper:
    """Decides batch by batch whether the sweep has diverged."""

    def __init__(self, beta: float, stop_factor: float):
        self.ema = Ema(beta)
        self.stop_factor = stop_factor
        self.best = np.inf

    def update(self, loss: float) -> tuple[float, str | None]:
        """Feed one batch loss; return (smoothed loss, reason to stop or None)."""
        smoothed = self.ema.update(loss)
        if not np.isfinite(loss):
            return smoothed, "non-finite loss"
        self.best = min(self.best, smoothed)
        if smoothed > self.stop_factor * self.best:
            return smoothed, f"smoothed loss above {self.stop_factor:g} x its best"
        return smoothed, None


def _usable(lrs: np.ndarray, losses: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Trim the ends, drop non-finite points; return (lrs, losses, original indices)."""
    lrs = np.asarray(lrs, dtype=np.float64)
    losses = np.asarray(losses, dtype=np.float64)
    index = np.arange(len(lrs))[SKIP_START: max(len(lrs) - SKIP_END, 0)]
    index = index[np.isfinite(losses[index]) & np.isfinite(lrs[index])]
    if len(index) < MIN_POINTS:
        raise NotEnoughPoints(
            f"only {len(index)} finite points after trimming {SKIP_START} at the start and "
            f"{SKIP_END} at the end (need {MIN_POINTS}): lower lr_range.start_lr or lr_range.factor, "
            "or raise lr_range.stop_factor, so the sweep runs longer before it stops"
        )
    return lrs[index], losses[index], index


def min_halved(lrs: np.ndarray, losses: np.ndarray) -> Suggestion:
    """The reference study's rule: rate at the lowest loss, halved."""
    lr, loss, index = _usable(lrs, losses)
    i = int(np.argmin(loss))
    return Suggestion(float(lr[i] / 2), int(index[i]))


def min_div10(lrs: np.ndarray, losses: np.ndarray) -> Suggestion:
    """fastai's classic 'minimum / 10'."""
    lr, loss, index = _usable(lrs, losses)
    i = int(np.argmin(loss))
    return Suggestion(float(lr[i] / 10), int(index[i]))


def steepest(lrs: np.ndarray, losses: np.ndarray) -> Suggestion:
    """Rate where the loss falls fastest per unit of log(lr) (Lightning's suggestion)."""
    lr, loss, index = _usable(lrs, losses)
    slope = np.gradient(loss, np.log(lr))
    i = int(np.argmin(slope))
    return Suggestion(float(lr[i]), int(index[i]))


def valley(lrs: np.ndarray, losses: np.ndarray) -> Suggestion:
    """fastai's valley: inside the longest descending stretch, two thirds of the way down."""
    lr, loss, index = _usable(lrs, losses)
    n = len(loss)
    # Longest decreasing subsequence ending at each point (fastai's O(n^2) DP, vectorised per row).
    run = np.ones(n, dtype=np.int64)
    best_end = 0
    for i in range(1, n):
        higher = loss[:i] > loss[i]
        if higher.any():
            run[i] = run[:i][higher].max() + 1
        if run[i] > run[best_end]:
            best_end = i
    best_start = best_end - run[best_end]
    sections = (best_end - best_start) / 3
    i = max(best_start + int(sections) + int(sections / 2), 0)
    return Suggestion(float(lr[i]), int(index[i]))


def flat_center(lrs: np.ndarray, losses: np.ndarray) -> Suggestion:
    """Geometric middle of the flat bottom: the rates whose loss is within 10 % of the minimum.

    Along a wide, flat valley the minimum wanders with the noise; the middle of
    the valley does not, and stays clear of the divergence at its right end.
    """
    lr, loss, index = _usable(lrs, losses)
    bottom = np.flatnonzero(loss <= loss.min() * (1 + FLAT_TOLERANCE))
    middle = 0.5 * (np.log(lr[bottom[0]]) + np.log(lr[bottom[-1]]))
    i = int(np.argmin(np.abs(np.log(lr) - middle)))
    return Suggestion(float(lr[i]), int(index[i]))


RULES: dict[str, Callable[[np.ndarray, np.ndarray], Suggestion]] = {
    "min_halved": min_halved,
    "min_div10": min_div10,
    "steepest": steepest,
    "valley": valley,
    "flat_center": flat_center,
}


def suggest_all(lrs: np.ndarray, smoothed: np.ndarray, stop_step: int | None) -> dict[str, dict]:
    """Every rule's pick over the rows before the stop: {rule: {lr, step}} or {rule: {error}}."""
    end = len(lrs) if stop_step is None else stop_step
    picks = {}
    for name, rule in RULES.items():
        try:
            suggestion = rule(lrs[:end], smoothed[:end])
        except NotEnoughPoints as err:
            picks[name] = {"error": str(err)}
        else:
            picks[name] = {"lr": suggestion.lr, "step": suggestion.index}
    return picks
