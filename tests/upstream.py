"""The sources of the LR rules, transcribed line by line (torch replaced by numpy), including their names and
quirks: what tests/test_lr_finder.py and tests/test_committed_picks.py hold each rule to.

- fastai 2.8.12: fastai/callback/schedule.py (``valley``, ``slide``, ``minimum``, ``steep``) and the rows
  ``Learner.lr_find`` hands them;
- pytorch-lightning 2.6.6: tuner/lr_finder.py, ``_LRCallback.on_train_batch_end`` and ``_LRFinder.suggestion``;
- the notebook (bench/notebook.py).
"""

from __future__ import annotations

import numpy as np

from stages.lib.lr_finder import Curve


def source_fastai_lr_find_rows(recorder_lrs, recorder_losses, num_it):
    """fastai's Learner.lr_find: what it hands each suggestion function."""
    lrs, losses = np.array(recorder_lrs[num_it // 10:-5]), np.array(recorder_losses[num_it // 10:-5])
    nan_idxs = np.flatnonzero(np.isnan(losses.reshape(-1)))  # torch.nonzero(torch.isnan(losses.view(-1)))
    if len(nan_idxs) > 0:
        drop_idx = min(nan_idxs)
        lrs = lrs[:drop_idx]
        losses = losses[:drop_idx]
    return lrs, losses


def source_valley(lrs, losses, num_it):
    "Suggests a learning rate from the longest valley and returns its index"
    n = len(losses)
    max_start, max_end = 0, 0

    # find the longest valley
    lds = [1] * n
    for i in range(1, n):
        for j in range(0, i):
            if (losses[i] < losses[j]) and (lds[i] < lds[j] + 1):
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]

    sections = (max_end - max_start) / 3
    idx = max_start + int(sections) + int(sections / 2)

    return float(lrs[idx]), (float(lrs[idx]), losses[idx])


def source_slide(lrs, losses, num_it, lr_diff=15, thresh=.005, adjust_value=1.):
    "Suggests a learning rate following an interval slide rule and returns its index"
    losses = np.asarray(losses)  # to_np(losses)
    loss_grad = np.gradient(losses)

    r_idx = -1
    l_idx = r_idx - lr_diff
    local_min_lr = lrs[l_idx]
    while (l_idx >= -len(losses)) and (abs(loss_grad[r_idx] - loss_grad[l_idx]) > thresh):
        local_min_lr = lrs[l_idx]
        r_idx -= 1
        l_idx -= 1

    suggestion = float(local_min_lr) * adjust_value
    idx = np.interp(np.log10(suggestion), np.log10(lrs), losses)
    return suggestion, (suggestion, idx)


def source_minimum(lrs, losses, num_it):
    "Suggests a learning rate one-tenth the minumum before divergance and returns its index"
    lr_min = lrs[losses.argmin()].item()
    loss_idx = losses[min(range(len(lrs)), key=lambda i: abs(lrs[i] - lr_min))]
    return lr_min / 10, (lr_min, loss_idx)


def source_steep(lrs, losses, num_it):
    "Suggests a learning rate when the slope is the steepest and returns its index"
    grads = (losses[1:] - losses[:-1]) / (np.log(lrs[1:]) - np.log(lrs[:-1]))  # lrs[1:].log()
    lr_steep = lrs[grads.argmin()].item()
    loss_idx = losses[min(range(len(lrs)), key=lambda i: abs(lrs[i] - lr_steep))]
    return lr_steep, (lr_steep, loss_idx)


def source_lightning_callback(batch_losses, beta=0.98, early_stop_threshold=4.0):
    """Lightning's _LRCallback: self.losses after each batch's on_train_batch_end, until should_stop.
    trainer.global_step counts optimizer steps: it is already 1 when the first batch ends."""
    avg_loss, best_loss, losses = 0.0, 0.0, []
    for global_step, current_loss in enumerate(batch_losses, start=1):
        current_step = global_step
        should_stop = False

        # Avg loss (loss with momentum) + smoothing
        avg_loss = beta * avg_loss + (1 - beta) * current_loss
        smoothed_loss = avg_loss / (1 - beta ** (current_step + 1))

        # Check if we diverging
        if (
            early_stop_threshold is not None
            and current_step > 1
            and smoothed_loss > early_stop_threshold * best_loss
        ):
            should_stop = True  # stop signal

        # Save best loss for diverging checking
        if smoothed_loss < best_loss or current_step == 1:
            best_loss = smoothed_loss

        losses.append(smoothed_loss)
        if should_stop:
            break
    return losses


def source_lightning(results_lr, results_loss, skip_begin=10, skip_end=1):
    """Lightning's _LRFinder.suggestion on self.results = {"lr": ..., "loss": ...}."""
    losses = np.array(results_loss[skip_begin:-skip_end], dtype=np.float32)  # torch.tensor(...): float32
    lrs = np.array(results_lr[skip_begin:-skip_end], dtype=np.float32)
    is_finite = np.isfinite(losses)
    losses = losses[is_finite]
    lrs = lrs[is_finite]

    if len(losses) < 2:
        # computing torch.gradient requires at least 2 points
        return None

    gradients = np.gradient(losses, lrs)  # torch.gradient(losses, spacing=[lrs])[0]
    min_grad = np.argmin(gradients).item()
    all_losses_idx = np.arange(len(results_loss))
    idx_non_skipped = all_losses_idx[skip_begin:-skip_end]
    idx_finite = idx_non_skipped[is_finite]
    optimal_idx = idx_finite[min_grad].item()
    return results_lr[optimal_idx]


def source_notebook(batch_losses, sizes, steps_per_epoch, rates):
    """The notebook: its callback logs Keras' logs["loss"] after each batch, which is Keras' loss tracker
    (a Mean weighted by batch size, reset at the start of each epoch); the pick is the rate at the lowest
    logged loss, halved (bench/notebook.py)."""
    logged = []
    for step, (loss, size) in enumerate(zip(batch_losses, sizes)):
        if step % steps_per_epoch == 0:
            total, count = 0.0, 0
        total += float(loss) * int(size)
        count += int(size)
        logged.append(total / count)
    losses = np.array(logged)
    return rates[int(np.nanargmin(losses))] / 2


def source_pick(rule: str, curve: Curve) -> float | None:
    """What the source picks on ``curve``; None where it cannot (it raises, or, Lightning, returns None)."""
    try:
        if rule == "notebook":
            return float(source_notebook(curve.losses, curve.batch_sizes, curve.steps_per_epoch, curve.lrs))
        if rule == "lightning":
            recorded = source_lightning_callback(curve.losses.tolist(), curve.beta, curve.stop_factor)
            return source_lightning(curve.lrs.tolist()[:len(recorded)], recorded)
        lrs, losses = source_fastai_lr_find_rows(list(curve.lrs), list(curve.smoothed), curve.planned_steps)
        function = {"fastai_valley": source_valley, "fastai_slide": source_slide, "fastai_minimum": source_minimum,
                    "fastai_steep": source_steep}[rule]
        return function(lrs, losses, curve.planned_steps)[0]
    except (IndexError, ValueError):  # an empty or too short tensor: torch raises there too
        return None
