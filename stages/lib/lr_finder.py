"""The LR range test without TensorFlow: schedule, smoothing, stop rule and rate suggestions.

Each suggestion rule takes the sweep's raw per-batch losses, smooths them as its source does, and
picks as its source does, on the same sweep:

- ``notebook``: the original notebook's: the rate at the lowest Keras ``loss`` (the running mean of
  the epoch's batch losses), halved.
- ``fastai_valley``, ``fastai_slide``, ``fastai_minimum``, ``fastai_steep``: fastai 2.8.12's
  ``SuggestionMethod``s (fastai/callback/schedule.py), on its ``Recorder``'s smoothed losses
  (``AvgSmoothLoss``: bias-corrected by 1 - beta**n after n batches), trimmed as ``Learner.lr_find``
  trims them.
- ``lightning``: pytorch-lightning 2.6.6's ``_LRFinder.suggestion()`` (tuner/lr_finder.py), on what its
  ``_LRCallback`` records: its own smoothing and early stop, in float32 as torch computes it.
- ``flat_center``: ours, on fastai's smoothing.

A rule takes a ``Curve`` and returns a ``Suggestion``; one that cannot pick raises ``NotEnoughPoints``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from stages.ground.errors import StageError

# flat_center, like fastai and Lightning, ignores the first and last few points: the start is
# dominated by the random init, the end by the blow-up the sweep stopped on.
SKIP_START = 10
SKIP_END = 5
MIN_POINTS = 10
# flat_center: how far above the minimum a loss still counts as "the bottom".
FLAT_TOLERANCE = 0.10
# fastai's Learner.lr_find trims num_it // 10 rows at the start and 5 at the end; Lightning's
# suggestion() skips 10 and 1 (their defaults).
FASTAI_SKIP_END = 5
LIGHTNING_SKIP_BEGIN, LIGHTNING_SKIP_END = 10, 1


class NotEnoughPoints(ValueError):
    pass


class Suggestion(NamedTuple):
    lr: float
    index: int  # row of the curve the rule points at (to mark on the plot)


class Curve(NamedTuple):
    """One sweep, every row recorded (the one the stop rule fired on last)."""
    lrs: np.ndarray  # rate of each batch
    losses: np.ndarray  # each batch's own training loss
    smoothed: np.ndarray  # bias-corrected moving average of ``losses``, as fastai's recorder keeps it
    batch_sizes: np.ndarray  # images in each batch (Keras weighs its running mean by them)
    steps_per_epoch: int
    planned_steps: int  # the sweep's length had it not stopped (fastai's num_it)
    stop_step: int | None  # the row the stop rule fired on, or None
    beta: float  # the smoothing (lr_range.smoothing), which Lightning's rule applies its own way
    stop_factor: float  # the stop rule's (lr_range.stop_factor), Lightning's early_stop_threshold


def exponential_lrs(start_lr: float, factor: float, steps: int) -> np.ndarray:
    """Rate used at each batch: start_lr * factor**step."""
    return start_lr * np.power(float(factor), np.arange(steps, dtype=np.float64))


def batch_sizes(examples: int, batch_size: int, steps: int) -> np.ndarray:
    """Images in each of ``steps`` batches, epoch after epoch: the last batch of an epoch holds the rest."""
    per_epoch = -(-examples // batch_size)
    sizes = np.full(per_epoch, batch_size, dtype=np.int64)
    sizes[-1] = examples - batch_size * (per_epoch - 1)
    return np.resize(sizes, steps)


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


def keras_running_loss(losses: np.ndarray, sizes: np.ndarray, steps_per_epoch: int) -> np.ndarray:
    """Keras' logged ``loss`` after each batch: the mean of the epoch's batch losses so far, each
    weighted by its batch's size."""
    out = np.empty(len(losses), dtype=np.float64)
    for start in range(0, len(losses), steps_per_epoch):
        part = slice(start, start + steps_per_epoch)
        out[part] = np.cumsum(losses[part] * sizes[part]) / np.cumsum(sizes[part])
    return out


def nearest_row(lrs: np.ndarray, lr: float) -> int:
    """The row whose rate is closest to ``lr`` on a log scale (to mark a pick that is no row's rate)."""
    return int(np.argmin(np.abs(np.log(lrs) - np.log(lr))))


def _needs(points: int, at_least: int, what: str) -> None:
    if points < at_least:
        raise NotEnoughPoints(
            f"only {points} usable points {what} (need {at_least}): lower lr_range.start_lr or lr_range.factor, "
            "or raise lr_range.stop_factor, so the sweep runs longer before it stops"
        )


def notebook(curve: Curve) -> Suggestion:
    """The original notebook's rule: the rate at the lowest Keras loss, halved."""
    running = keras_running_loss(curve.losses, curve.batch_sizes, curve.steps_per_epoch)
    _needs(int((~np.isnan(running)).sum()), 1, "in the sweep")  # as np.nanargmin: an inf still counts
    i = int(np.nanargmin(running))
    return Suggestion(float(curve.lrs[i] / 2), nearest_row(curve.lrs, curve.lrs[i] / 2))


def _fastai_rows(curve: Curve) -> tuple[np.ndarray, np.ndarray, int]:
    """What Learner.lr_find hands its suggestion functions: rows num_it//10 to -5, up to the first NaN;
    and the curve row of the first one."""
    start = curve.planned_steps // 10
    lrs = curve.lrs[start:-FASTAI_SKIP_END]
    losses = curve.smoothed[start:-FASTAI_SKIP_END]
    nan = np.flatnonzero(np.isnan(losses))
    if len(nan):
        lrs, losses = lrs[:nan[0]], losses[:nan[0]]
    return lrs, losses, start


def fastai_valley(curve: Curve) -> Suggestion:
    """fastai's valley: halfway down the longest valley (a third plus half a third, as its code lands; its
    loops, its bookkeeping)."""
    lrs, losses, start = _fastai_rows(curve)
    n = len(losses)
    _needs(n, 1, f"after fastai's trimming of {start} rows at the start and {FASTAI_SKIP_END} at the end")
    max_start, max_end = 0, 0
    lds = [1] * n
    values = losses.tolist()
    for i in range(1, n):
        for j in range(0, i):
            if values[i] < values[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:  # inside the j loop, as in fastai: max_start is fixed early
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    idx = max_start + int(sections) + int(sections / 2)
    return Suggestion(float(lrs[idx]), start + idx if idx >= 0 else start + n + idx)


def fastai_slide(curve: Curve, lr_diff: int = 15, thresh: float = 0.005, adjust_value: float = 1.0) -> Suggestion:
    """fastai's slide: walk left from the end until the loss gradient over lr_diff rows flattens.

    Args:
        lr_diff: how many rows apart the two gradients compared are (fastai's default).
        thresh: the largest difference of those gradients that counts as flat (fastai's default).
        adjust_value: the factor the found rate is multiplied by (fastai's default: 1, none).
    """
    lrs, losses, start = _fastai_rows(curve)
    _needs(len(losses), lr_diff + 1, f"after fastai's trimming of {start} rows at the start and "
                                     f"{FASTAI_SKIP_END} at the end")
    loss_grad = np.gradient(losses)
    r_idx = -1
    l_idx = r_idx - lr_diff
    local_min_lr = lrs[l_idx]
    while (l_idx >= -len(losses)) and (abs(loss_grad[r_idx] - loss_grad[l_idx]) > thresh):
        local_min_lr = lrs[l_idx]
        r_idx -= 1
        l_idx -= 1
    suggestion = float(local_min_lr) * adjust_value
    return Suggestion(suggestion, nearest_row(curve.lrs, suggestion))


def fastai_minimum(curve: Curve) -> Suggestion:
    """fastai's minimum: the rate at the lowest smoothed loss, divided by 10."""
    lrs, losses, start = _fastai_rows(curve)
    _needs(len(losses), 1, f"after fastai's trimming of {start} rows at the start and {FASTAI_SKIP_END} at the end")
    lr_min = float(lrs[int(np.argmin(losses))])
    return Suggestion(lr_min / 10, nearest_row(curve.lrs, lr_min / 10))


def fastai_steep(curve: Curve) -> Suggestion:
    """fastai's steep: where the loss falls fastest per unit of log(lr)."""
    lrs, losses, start = _fastai_rows(curve)
    _needs(len(losses), 2, f"after fastai's trimming of {start} rows at the start and {FASTAI_SKIP_END} at the end")
    grads = (losses[1:] - losses[:-1]) / (np.log(lrs[1:]) - np.log(lrs[:-1]))
    i = int(np.argmin(grads))
    return Suggestion(float(lrs[i]), start + i)


def lightning_recorded(losses: np.ndarray, beta: float, stop_factor: float) -> np.ndarray:
    """The losses Lightning's ``_LRCallback`` records for these batch losses.

    Its bias correction is 1 - beta**(global_step + 1), and global_step is already k + 1 after batch k:
    one power higher than fastai's. It stops after the first batch (past the first two) whose smoothed
    loss exceeds ``stop_factor`` times its best, and records that batch; it has no check for NaN.
    """
    avg_loss, best_loss, recorded = 0.0, 0.0, []
    for batch, current_loss in enumerate(losses.tolist()):
        current_step = batch + 1
        avg_loss = beta * avg_loss + (1 - beta) * current_loss
        smoothed_loss = avg_loss / (1 - beta ** (current_step + 1))
        stop = current_step > 1 and smoothed_loss > stop_factor * best_loss
        if smoothed_loss < best_loss or current_step == 1:
            best_loss = smoothed_loss
        recorded.append(smoothed_loss)
        if stop:
            break
    return np.array(recorded, dtype=np.float64)


def lightning(curve: Curve) -> Suggestion:
    """Lightning's suggestion: where its recorded loss falls fastest per unit of lr (not log lr), skipping
    10 rows at the start and 1 at the end; rates and losses become float32 tensors there, so here too."""
    recorded = lightning_recorded(curve.losses, curve.beta, curve.stop_factor)
    skipped = slice(LIGHTNING_SKIP_BEGIN, -LIGHTNING_SKIP_END)
    rows = np.arange(len(recorded))[skipped]
    losses = recorded[skipped].astype(np.float32)  # torch.tensor(list of floats)
    lrs = curve.lrs[:len(recorded)][skipped].astype(np.float32)
    finite = np.isfinite(losses)
    _needs(int(finite.sum()), 2, f"after Lightning's skipping of {LIGHTNING_SKIP_BEGIN} rows at the start and "
                                 f"{LIGHTNING_SKIP_END} at the end")
    gradients = np.gradient(losses[finite], lrs[finite])  # torch.gradient(losses, spacing=[lrs])
    row = int(rows[finite][int(np.argmin(gradients))])
    return Suggestion(float(curve.lrs[row]), row)


def flat_center(curve: Curve) -> Suggestion:
    """Geometric middle of the flat bottom: the rates whose smoothed loss is within 10 % of the minimum.

    Along a wide, flat valley the minimum wanders with the noise; the middle of the valley does not,
    and stays clear of the divergence at its right end. Uses the rows before the stop.
    """
    end = len(curve.lrs) if curve.stop_step is None else curve.stop_step
    index = np.arange(end)[SKIP_START: max(end - SKIP_END, 0)]
    index = index[np.isfinite(curve.smoothed[index]) & np.isfinite(curve.lrs[index])]
    _needs(len(index), MIN_POINTS, f"after trimming {SKIP_START} at the start and {SKIP_END} at the end")
    lr, loss = curve.lrs[index], curve.smoothed[index]
    bottom = np.flatnonzero(loss <= loss.min() * (1 + FLAT_TOLERANCE))
    middle = 0.5 * (np.log(lr[bottom[0]]) + np.log(lr[bottom[-1]]))
    i = int(np.argmin(np.abs(np.log(lr) - middle)))
    return Suggestion(float(lr[i]), int(index[i]))


RULES: dict[str, Callable[[Curve], Suggestion]] = {
    "notebook": notebook,
    "fastai_valley": fastai_valley,
    "fastai_slide": fastai_slide,
    "fastai_minimum": fastai_minimum,
    "fastai_steep": fastai_steep,
    "lightning": lightning,
    "flat_center": flat_center,
}


def suggest_all(curve: Curve) -> dict[str, dict]:
    """Every rule's pick: {rule: {lr, step}} or {rule: {error}}."""
    picks = {}
    for name, rule in RULES.items():
        try:
            suggestion = rule(curve)
        except NotEnoughPoints as err:
            picks[name] = {"error": str(err)}
        else:
            picks[name] = {"lr": suggestion.lr, "step": suggestion.index}
    return picks


def chosen_rate(fixed_lr: float | None, rule: str, picks: dict, arch: str) -> tuple[float, str]:
    """(rate, how it was chosen): an arch's fixed rate, else its rule's pick in its range test.

    Args:
        fixed_lr: the arch's rate fixed in params (Arch.lr), or None.
        rule: the rule the arch uses (Params.rule_for).
        picks: its range test's picks (sweep_record's ``picks``): rule -> {lr, step} or {error}.
        arch: its name, for the message when the rule picked nothing.
    """
    if fixed_lr is not None:
        return fixed_lr, "fixed in params"
    pick = picks[rule]
    if "error" in pick:
        raise StageError(f"{arch}: rule {rule} could not pick a rate: {pick['error']}")
    return pick["lr"], rule


CURVE_COLUMNS = {"step": int, "lr": float, "loss": float, "smoothed_loss": float}  # a range test's CSV, as read back
LOSS_MEANING = "loss = each batch's own training loss (not Keras' running epoch mean)"


def curve_rows(curve: Curve) -> list[tuple]:
    """The curve as the CSV rows a range test writes (CURVE_COLUMNS)."""
    return [(i, f"{lr:.6g}", f"{loss:.6g}", f"{s:.6g}")
            for i, (lr, loss, s) in enumerate(zip(curve.lrs, curve.losses, curve.smoothed))]


def sweep_record(curve: Curve, stop_reason: str | None) -> dict:
    """What a range test records beside its curve: where it stopped, its lowest loss, every rule's pick."""
    usable = curve.smoothed[:curve.stop_step]
    best = int(usable.argmin()) if len(usable) else None
    return {
        "loss_column": LOSS_MEANING,
        "steps": len(curve.lrs),
        "stop_step": curve.stop_step,
        "stop_reason": stop_reason or "sweep ran to the end",
        "min_smoothed_loss": None if best is None else float(curve.smoothed[best]),
        "lr_at_min": None if best is None else float(curve.lrs[best]),
        "picks": suggest_all(curve),
    }
