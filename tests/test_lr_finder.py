"""LR range test helpers: schedule, smoothing, stop rule, and the rules that pick a rate from a sweep.

Each rule is checked against a line-by-line transcription of its source, written below with numpy
in place of torch, on synthetic sweeps (smooth U, noisy, with NaN and inf, too short): both must
pick exactly the same rate, or both refuse. The sources:

- fastai 2.8.12: fastai/callback/schedule.py, ``valley``, ``slide``, ``minimum``, ``steep``, and the
  rows ``Learner.lr_find`` hands them (recorder rows ``num_it//10:-5``, cut at the first NaN), on the
  recorder's ``AvgSmoothLoss`` (fastai/learner.py);
- pytorch-lightning 2.6.6: tuner/lr_finder.py, ``_LRCallback.on_train_batch_end`` (what it records)
  and ``_LRFinder.suggestion`` (skip_begin=10, skip_end=1, ``torch.gradient(losses, spacing=[lrs])``
  on float32 tensors);
- the notebook (bench/notebook.py): the rate at the lowest Keras ``loss`` log, halved.

flat_center is ours: it is checked against its previous implementation, and by hand. Other expected
values are worked out by hand, never by calling the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from upstream import source_fastai_lr_find_rows, source_pick

from stages.ground.errors import StageError
from stages.lib.lr_finder import (
    MIN_POINTS,
    RULES,
    SKIP_END,
    SKIP_START,
    Curve,
    Ema,
    NotEnoughPoints,
    Stopper,
    batch_sizes,
    chosen_rate,
    curve_rows,
    exponential_lrs,
    flat_center,
    keras_running_loss,
    nearest_row,
    smooth,
    suggest_all,
    sweep_record,
)

START, FACTOR = 1e-3, 1.05


def test_constants_the_rules_rely_on():
    assert (SKIP_START, SKIP_END, MIN_POINTS) == (10, 5, 10)
    assert list(RULES) == ["notebook", "fastai_valley", "fastai_slide", "fastai_minimum", "fastai_steep",
                           "lightning", "flat_center"]


# --- schedule and smoothing -------------------------------------------------------------------


def test_exponential_lrs_exact_values():
    lrs = exponential_lrs(0.001, 2, 5)
    assert lrs.dtype == np.float64
    assert lrs.tolist() == [0.001, 0.002, 0.004, 0.008, 0.016]
    many = exponential_lrs(0.001, 1.005, 1000)
    assert len(many) == 1000
    for k in (0, 1, 2, 500, 999):
        assert many[k] == pytest.approx(0.001 * 1.005**k, rel=1e-12)


def test_exponential_lrs_zero_steps():
    assert len(exponential_lrs(0.1, 1.1, 0)) == 0


def test_smooth_is_the_bias_corrected_ema():
    # beta = 0.5, values 1, 2, 4:
    # avg1 = 0.5*0 + 0.5*1 = 0.5    -> 0.5   / (1 - 0.5)   = 1
    # avg2 = 0.5*0.5 + 0.5*2 = 1.25 -> 1.25  / (1 - 0.25)  = 5/3
    # avg3 = 0.5*1.25 + 0.5*4 = 2.625 -> 2.625 / (1 - 0.125) = 3
    np.testing.assert_allclose(smooth(np.array([1.0, 2.0, 4.0]), 0.5), [1.0, 5 / 3, 3.0], rtol=1e-12)


def test_smooth_with_beta_098():
    # avg1 = 0.02*2 = 0.04 -> 0.04/0.02 = 2 (bias correction removes the zero start)
    # avg2 = 0.98*0.04 + 0.02*1 = 0.0592 -> 0.0592/(1 - 0.9604) = 0.0592/0.0396
    out = smooth(np.array([2.0, 1.0]), 0.98)
    np.testing.assert_allclose(out, [2.0, 0.0592 / 0.0396], rtol=1e-12)


def test_smooth_with_beta_zero_is_the_identity():
    values = np.array([3.0, 1.0, 2.0, 7.5])
    np.testing.assert_allclose(smooth(values, 0.0), values)


def test_ema_update_returns_the_corrected_average():
    ema = Ema(0.9)
    assert ema.update(10.0) == pytest.approx(10.0)
    # avg = 0.9*1 + 0.1*20 = 2.9; corrected by 1 - 0.81 = 0.19
    assert ema.update(20.0) == pytest.approx(2.9 / 0.19)


def test_batch_sizes_repeat_each_epoch_with_a_partial_last_batch():
    # 10 images in batches of 4: 4, 4, 2 per epoch
    assert batch_sizes(10, 4, 7).tolist() == [4, 4, 2, 4, 4, 2, 4]
    assert batch_sizes(8, 4, 3).tolist() == [4, 4, 4]


def test_keras_running_loss_is_the_batch_size_weighted_mean_of_the_epoch_so_far():
    # epoch 1: (1*2) / 2 = 1, (1*2 + 3*1) / 3 = 5/3 (unweighted it would be 2); epoch 2 starts afresh: 5
    out = keras_running_loss(np.array([1.0, 3.0, 5.0]), np.array([2, 1, 2]), steps_per_epoch=2)
    np.testing.assert_allclose(out, [1.0, 5 / 3, 5.0], rtol=1e-12)


def test_nearest_row_on_a_log_scale():
    lrs = np.array([1.0, 10.0, 100.0])
    assert nearest_row(lrs, 31.0) == 1  # log 31 is 1.13 from log 10 and 1.17 from log 100
    assert nearest_row(lrs, 32.0) == 2
    assert nearest_row(lrs, 0.001) == 0


# --- stop rule ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_stopper_stops_on_non_finite_loss(bad):
    stopper = Stopper(beta=0.9, stop_factor=4)
    for loss in (2.0, 1.9, 1.8):
        assert stopper.update(loss)[1] is None
    _, reason = stopper.update(bad)
    assert reason == "non-finite loss"


def test_stopper_stops_only_above_stop_factor_times_best():
    # beta = 0 makes the smoothed loss the loss itself
    stopper = Stopper(beta=0.0, stop_factor=4)
    for loss in (3.0, 1.0, 2.0, 3.9, 4.0):  # best 1.0; 4.0 is not *above* 4 x 1.0
        smoothed, reason = stopper.update(loss)
        assert smoothed == pytest.approx(loss)
        assert reason is None, loss
    smoothed, reason = stopper.update(4.01)
    assert smoothed == pytest.approx(4.01)
    assert reason == "smoothed loss above 4 x its best"


def test_stopper_compares_the_smoothed_loss_not_the_raw_one():
    # beta = 0.5: losses 1, 1, 6 smooth to (0.375 + 3) / 0.875 = 3.857 < 4 x 1: no stop, though the raw
    # 6 is above 4; losses 1, 1, 10 smooth to (0.375 + 5) / 0.875 = 6.14 > 4: stop.
    stopper = Stopper(beta=0.5, stop_factor=4)
    stopper.update(1.0)
    stopper.update(1.0)
    smoothed, reason = stopper.update(6.0)
    assert smoothed == pytest.approx(3.375 / 0.875)
    assert reason is None
    stopper = Stopper(beta=0.5, stop_factor=4)
    stopper.update(1.0)
    stopper.update(1.0)
    smoothed, reason = stopper.update(10.0)
    assert smoothed == pytest.approx(5.375 / 0.875)
    assert reason is not None


def test_stopper_tracks_the_best_so_far():
    stopper = Stopper(beta=0.0, stop_factor=2)
    for loss in (5.0, 4.0, 0.5):
        assert stopper.update(loss)[1] is None
    assert stopper.best == 0.5
    assert stopper.update(1.0)[1] is None
    assert stopper.update(1.01)[1] is not None  # 1.01 > 2 x 0.5


def old_flat_center(lrs: np.ndarray, smoothed: np.ndarray, stop_step: int | None) -> tuple[float, int] | None:
    """flat_center as it was before the rules were rewritten (suggest_all cut the curve at the stop)."""
    end = len(lrs) if stop_step is None else stop_step
    lrs, losses = lrs[:end], smoothed[:end]
    index = np.arange(len(lrs))[10: max(len(lrs) - 5, 0)]
    index = index[np.isfinite(losses[index]) & np.isfinite(lrs[index])]
    if len(index) < 10:
        return None
    lr, loss = lrs[index], losses[index]
    bottom = np.flatnonzero(loss <= loss.min() * (1 + 0.10))
    middle = 0.5 * (np.log(lr[bottom[0]]) + np.log(lr[bottom[-1]]))
    i = int(np.argmin(np.abs(np.log(lr) - middle)))
    return float(lr[i]), int(index[i])


# --- synthetic sweeps -------------------------------------------------------------------------------

STEPS_PER_EPOCH, BATCH = 50, 32


def sweep(losses: np.ndarray, stop_step: int | None = None, planned_steps: int | None = None,
          smoothed: np.ndarray | None = None) -> Curve:
    """A Curve of these batch losses: rates from START by FACTOR, epochs of 50 batches of 32 (the last 17)."""
    n = len(losses)
    sizes = np.resize(np.r_[np.full(STEPS_PER_EPOCH - 1, BATCH), 17], n)
    return Curve(exponential_lrs(START, FACTOR, n), np.asarray(losses, dtype=np.float64),
                 smooth(losses, 0.9) if smoothed is None else smoothed, sizes, STEPS_PER_EPOCH,
                 planned_steps or n, stop_step, 0.9, 4.0)


def u_shape(n: int, bottom: int) -> np.ndarray:
    """(log lr - log lr at ``bottom``)^2 + 0.3 over the sweep's rates: lowest exactly at row ``bottom``."""
    return ((np.arange(n) - bottom) * math.log(FACTOR)) ** 2 + 0.3


def diverging(n: int) -> np.ndarray:
    """Falls, flattens, then blows up over the last fifth: what a real sweep looks like."""
    k = np.arange(n) / n
    return 2.3 * np.exp(-6 * k) + 0.3 + np.where(k > 0.8, 40 * (k - 0.8) ** 2, 0.0)


def noisy(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.abs(diverging(n) + rng.normal(0, 0.08, n))


def with_bad_rows(losses: np.ndarray, rows: dict[int, float]) -> np.ndarray:
    out = np.array(losses, dtype=np.float64)
    for row, value in rows.items():
        out[row] = value
    return out


CURVES = {
    "smooth-u": sweep(u_shape(150, 80)),
    "smooth-u-stopped": sweep(u_shape(120, 60), stop_step=119, planned_steps=200),
    "diverging": sweep(diverging(150), stop_step=149),
    "noisy": sweep(noisy(150, 0), stop_step=149),
    "noisy-other-seed": sweep(noisy(200, 1), stop_step=199, planned_steps=400),
    "noisy-unsmoothed": sweep(noisy(150, 2), smoothed=noisy(150, 2)),
    "nan-in-the-middle": sweep(diverging(150), smoothed=with_bad_rows(smooth(diverging(150), 0.9), {70: np.nan})),
    "nan-early": sweep(diverging(150), smoothed=with_bad_rows(smooth(diverging(150), 0.9), {20: np.nan})),
    "inf-spikes": sweep(with_bad_rows(noisy(150, 3), {60: np.inf}),
                        smoothed=with_bad_rows(smooth(noisy(150, 3), 0.9), {60: np.inf, 61: np.inf, 90: np.inf})),
    "nan-then-inf-at-the-stop": sweep(with_bad_rows(diverging(120), {119: np.nan}), stop_step=119,
                                      smoothed=with_bad_rows(smooth(diverging(120), 0.9), {110: np.inf, 119: np.nan})),
    "flat": sweep(np.full(150, 1.0)),
    "falling-to-the-end": sweep(np.linspace(3.0, 0.5, 150)),
    "short-epochs": Curve(exponential_lrs(START, FACTOR, 90), noisy(90, 4), smooth(noisy(90, 4), 0.9),
                          np.resize([8, 8, 3], 90), 3, 90, None, 0.9, 4.0),
}
# Too short for some rules: fastai keeps n - n//10 - 5 rows (slide needs 16), Lightning n - 11 (needs 2),
# flat_center n - 15 (needs 10).
SHORT = {f"short-{n}": sweep(diverging(n)) for n in range(1, 41)}
# A first batch whose loss is not finite: the stop rule ends the sweep on its first row.
DIVERGED_AT_ONCE = {f"first-batch-{value}": Curve(np.array([START]), np.array([value]), np.array([value]),
                                                   np.array([BATCH]), STEPS_PER_EPOCH, 150, 0, 0.9, 4.0)
                    for value in (np.inf, np.nan)}
# Where this code and its source disagree (reported, not fixed here): each case names the difference.
def cases(curves: dict[str, Curve]) -> list:
    out = []
    for name in curves:
        for rule in RULES:
            if rule == "flat_center":
                continue
            out.append(pytest.param(rule, name, id=f"{rule}-{name}"))
    return out


ALL_CURVES = {**CURVES, **SHORT, **DIVERGED_AT_ONCE}


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf - inf, in both alike
@pytest.mark.parametrize("rule, curve", cases(ALL_CURVES))
def test_each_rule_picks_exactly_what_its_source_picks(rule, curve):
    c = ALL_CURVES[curve]
    expected = source_pick(rule, c)
    if expected is None:
        with pytest.raises(NotEnoughPoints):
            RULES[rule](c)
        return
    got = RULES[rule](c)
    assert got.lr == expected
    assert isinstance(got.lr, float) and isinstance(got.index, int)
    assert got.index == nearest_row(c.lrs, got.lr)  # the row the plot marks


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_the_synthetic_sweeps_exercise_what_they_are_named_for():
    """The comparison above proves little on sweeps where every rule refuses or nothing is non-finite."""
    refusing = {name: [rule for rule in RULES if rule != "flat_center" and source_pick(rule, c) is None]
                for name, c in CURVES.items()}
    # fastai cuts nan-early at its first NaN, 5 rows in: too few for slide
    assert refusing == {name: ["fastai_slide"] if name == "nan-early" else [] for name in CURVES}, refusing
    refused = {n: sum(source_pick(rule, SHORT[f"short-{n}"]) is None for rule in RULES if rule != "flat_center")
               for n in range(1, 41)}
    assert refused[1] == 5 and refused[40] == 0 and 0 < refused[22] < 5, refused  # the notebook picks from one row
    fastai_rows, _ = source_fastai_lr_find_rows(list(CURVES["nan-early"].lrs), list(CURVES["nan-early"].smoothed),
                                                150)
    assert len(fastai_rows) == 20 - 15  # cut at the first NaN (row 20), after trimming 15 rows
    assert np.isinf(CURVES["inf-spikes"].smoothed[[60, 61, 90]]).all()


def test_the_notebook_rule_uses_the_running_mean_reset_each_epoch_by_hand():
    # 3 batches per epoch of 2, 2 and 1 images; the running mean of epoch 2 restarts at row 3:
    # rows 3..5: 1, (2 + 2*3) / 4 = 2, (8 + 9) / 5 = 3.4. Lowest overall: row 3 (1.0, below epoch 1's 4s).
    # Without the reset it would be row 4: (20 + 2) / 7 = 3.14, (22 + 6) / 9 = 3.11, (28 + 9) / 10 = 3.7.
    curve = Curve(exponential_lrs(0.1, 2, 6), np.array([4.0, 4, 4, 1, 3, 9]), np.zeros(6), np.array([2, 2, 1] * 2),
                  3, 6, None, 0.98, 4.0)
    pick = RULES["notebook"](curve)
    assert pick.lr == 0.1 * 2**3 / 2
    assert pick.index == 2  # 0.4 is row 2's rate: the marker goes there


# --- flat_center: ours, unchanged ------------------------------------------------------------------------


@pytest.mark.parametrize("curve", ALL_CURVES)
def test_flat_center_picks_what_it_picked_before_the_rules_were_rewritten(curve):
    c = ALL_CURVES[curve]
    expected = old_flat_center(c.lrs, c.smoothed, c.stop_step)
    if expected is None:
        with pytest.raises(NotEnoughPoints, match="usable points after trimming 10 at the start and 5 at the end"):
            flat_center(c)
        return
    assert tuple(flat_center(c)) == expected


def flat_curve(smoothed: np.ndarray, stop_step: int | None = None) -> Curve:
    n = len(smoothed)
    return Curve(exponential_lrs(1e-3, 1.1, n), smoothed, smoothed, np.full(n, 32), n, n, stop_step, 0.98, 4.0)


def test_flat_center_picks_the_middle_of_the_flat_bottom_not_the_noisy_minimum():
    losses = np.full(60, 2.0)
    losses[25:42] = 1.05  # the flat bottom: rows 25..41, all within 10 % of the minimum
    losses[27] = 1.0  # the minimum sits near the left edge
    got = flat_center(flat_curve(losses))
    assert got.index == 33  # (25 + 41) / 2 on the log-rate axis
    assert got.lr == pytest.approx(1e-3 * 1.1**33, rel=1e-12)


def test_flat_center_ignores_rows_just_outside_the_tolerance():
    losses = np.full(60, 2.0)
    losses[20:31] = 1.0
    losses[31:40] = 1.1001  # more than 10 % above the minimum: not part of the bottom
    assert flat_center(flat_curve(losses)).index == 25


def test_flat_center_uses_only_the_rows_before_the_stop():
    losses = np.full(60, 2.0)
    losses[20:31] = 1.0
    losses[50] = 0.1  # lower than the bottom, but at the stop
    assert flat_center(flat_curve(losses, stop_step=50)).index == 25
    assert flat_center(flat_curve(losses)).index == 50  # without the stop it is the bottom


def test_flat_center_needs_ten_usable_rows():
    losses = np.abs(np.arange(SKIP_START + MIN_POINTS + SKIP_END) - 15.0) + 1  # 10 usable rows, lowest at 15
    assert flat_center(flat_curve(losses)).index == 15
    with pytest.raises(NotEnoughPoints) as info:
        flat_center(flat_curve(losses[:-1]))
    message = str(info.value)
    assert message.startswith("only 9 usable points after trimming 10 at the start and 5 at the end (need 10): ")
    assert "lr_range.start_lr" in message and "lr_range.stop_factor" in message


# --- every rule at once, and the rate training uses ---------------------------------------------------------


@pytest.mark.parametrize("curve", ["noisy", "short-12", "short-23", "short-1"])
def test_suggest_all_gives_every_rule_its_pick_or_its_error(curve):
    c = ALL_CURVES[curve]
    picks = suggest_all(c)
    assert list(picks) == list(RULES)
    for rule, pick in picks.items():
        try:
            expected = RULES[rule](c)
        except NotEnoughPoints as err:
            assert pick == {"error": str(err)}
            assert "lr_range.start_lr" in pick["error"]
        else:
            assert pick == {"lr": expected.lr, "step": expected.index}


def test_suggest_all_on_a_sweep_no_rule_can_use():
    picks = suggest_all(DIVERGED_AT_ONCE["first-batch-nan"])
    assert list(picks) == list(RULES)
    assert all(set(pick) == {"error"} for pick in picks.values()), picks


def test_chosen_rate_is_the_fixed_rate_or_the_rules_pick():
    picks = {"flat_center": {"lr": 0.2, "step": 5}, "lightning": {"error": "only 1 usable points ..."}}
    assert chosen_rate(0.05, "lightning", picks, "base") == (0.05, "fixed in params")
    assert chosen_rate(None, "flat_center", picks, "base") == (0.2, "flat_center")
    with pytest.raises(StageError, match=r"^base: rule lightning could not pick a rate: only 1 usable points \.\.\.$"):
        chosen_rate(None, "lightning", picks, "base")


def test_sweep_record_and_rows_of_a_stopped_sweep():
    losses = np.array([2.0, 1.0, 0.5, 0.8, 9.0])
    curve = Curve(exponential_lrs(0.01, 2, 5), losses, losses.copy(), np.full(5, 4), 5, 5, 4, 0.98, 4.0)
    record = sweep_record(curve, "smoothed loss above 4 x its best")
    assert record["steps"] == 5 and record["stop_step"] == 4
    assert record["stop_reason"] == "smoothed loss above 4 x its best"
    assert (record["min_smoothed_loss"], record["lr_at_min"]) == (0.5, 0.04)  # row 2, before the stop
    assert record["picks"] == suggest_all(curve)
    assert curve_rows(curve)[2] == (2, "0.04", "0.5", "0.5")


def test_sweep_record_of_a_sweep_that_ran_to_the_end():
    losses = np.array([2.0, 1.0, 0.5])
    curve = Curve(exponential_lrs(0.01, 2, 3), losses, losses, np.full(3, 4), 3, 3, None, 0.98, 4.0)
    record = sweep_record(curve, None)
    assert record["stop_reason"] == "sweep ran to the end"
    assert (record["min_smoothed_loss"], record["lr_at_min"]) == (0.5, 0.04)
