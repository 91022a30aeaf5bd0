"""LR range test helpers: schedule, smoothing, stop rule and the four suggestion rules.

Expected values are worked out by hand from each rule's definition, never by
calling the rule itself.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from stages.lib.lr_finder import (
    MIN_POINTS,
    RULES,
    SKIP_END,
    SKIP_START,
    Ema,
    NotEnoughPoints,
    Stopper,
    exponential_lrs,
    flat_center,
    min_div10,
    min_halved,
    smooth,
    steepest,
    suggest_all,
    valley,
)

START, FACTOR, N = 1e-4, 1.25, 60


def lr_at(k: int) -> float:
    return START * FACTOR**k


@pytest.fixture
def lrs() -> np.ndarray:
    return exponential_lrs(START, FACTOR, N)


def test_constants_the_rules_rely_on():
    assert (SKIP_START, SKIP_END, MIN_POINTS) == (10, 5, 10)
    assert set(RULES) == {"min_halved", "min_div10", "steepest", "valley", "flat_center"}


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
    # beta = 0.5: losses 1, 1, 10 smooth to 1, 1, (0.375 + 5) / 0.875 = 6.142857...
    # which is above 4 x 1 -> stop; the raw 10 alone would also stop, so check a case where
    # only the raw loss is above: 1, 1, 6 -> (0.375 + 3) / 0.875 = 3.857 < 4: no stop.
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


# --- rules ----------------------------------------------------------------------------------------


def u_curve(min_at: int) -> np.ndarray:
    """(log lr - log lr_min)^2 + 1 over the fixture's lrs: lowest exactly at ``min_at``."""
    k = np.arange(N)
    return ((k - min_at) * math.log(FACTOR)) ** 2 + 1.0


def test_min_rules_on_a_u_curve(lrs):
    losses = u_curve(30)
    assert min_halved(lrs, losses) == (pytest.approx(lr_at(30) / 2), 30)
    assert min_div10(lrs, losses) == (pytest.approx(lr_at(30) / 10), 30)
    assert isinstance(min_halved(lrs, losses).lr, float)
    assert isinstance(min_halved(lrs, losses).index, int)


def test_min_rules_ignore_the_first_and_last_points(lrs):
    losses = u_curve(30)
    losses[:SKIP_START] = 0.0  # lower than anything, but the init dominates there
    losses[-SKIP_END:] = 0.0  # likewise the blow-up end
    losses[40] = 0.5  # the real minimum among the usable rows
    assert min_halved(lrs, losses) == (pytest.approx(lr_at(40) / 2), 40)
    assert min_div10(lrs, losses).index == 40


def test_min_at_the_edge_of_the_usable_rows(lrs):
    losses = np.linspace(10, 1, N)  # falls to the end: the lowest usable row is N - SKIP_END - 1
    assert min_halved(lrs, losses) == (pytest.approx(lr_at(N - SKIP_END - 1) / 2), N - SKIP_END - 1)
    losses = np.linspace(1, 10, N)  # rises from the start: the lowest usable row is SKIP_START
    assert min_div10(lrs, losses) == (pytest.approx(lr_at(SKIP_START) / 10), SKIP_START)


def test_steepest_on_a_curve_with_one_steep_drop(lrs):
    # Loss falls 0.1 per step except 0.5 from row 29 to 30 and 1.0 from row 30 to 31.
    # Central differences over evenly spaced log(lr), row k: (L[k+1] - L[k-1]) / (2 h):
    #   row 29: -(0.5 + 0.1), row 30: -(0.5 + 1.0), row 31: -(1.0 + 0.1): steepest at 30.
    drops = np.full(N - 1, 0.1)
    drops[29], drops[30] = 0.5, 1.0
    losses = 20.0 - np.concatenate([[0.0], np.cumsum(drops)])
    losses[:SKIP_START] = 100.0 - 50.0 * np.arange(SKIP_START)  # a steeper drop, but skipped
    assert steepest(lrs, losses) == (pytest.approx(lr_at(30)), 30)


def test_steepest_on_a_smooth_drop(lrs):
    losses = 5.0 - np.tanh(np.arange(N) - 37.0)  # inflection (steepest point) at row 37
    assert steepest(lrs, losses).index == 37
    assert steepest(lrs, losses).lr == pytest.approx(lr_at(37))


def test_valley_on_a_curve_with_a_known_longest_descent(lrs):
    # usable rows are SKIP_START .. N - SKIP_END - 1, i.e. positions u = 0..44 = rows 10..54
    losses = np.empty(N)
    losses[:SKIP_START] = 100.0 - np.arange(SKIP_START)  # a descent that would join, but is skipped
    u = np.arange(45)
    usable = np.where(u < 10, 0.1 + 0.01 * u,  # u 0..9: low and rising
                      np.where(u < 30, 10.0 - 0.1 * (u - 10),  # u 10..29: the 20-point descent
                               20.0 + u))  # u 30..44: higher than everything before
    losses[SKIP_START:N - SKIP_END] = usable
    losses[N - SKIP_END:] = 0.0
    # fastai's valley: the longest decreasing run ends at u = 29 with length 20,
    # start = end - length = 9, sections = (29 - 9) / 3 = 6.67,
    # pick u = 9 + int(6.67) + int(6.67 / 2) = 9 + 6 + 3 = 18, i.e. row 10 + 18 = 28.
    assert valley(lrs, losses) == (pytest.approx(lr_at(28)), 28)


def test_valley_on_a_strictly_falling_curve_stays_in_range(lrs):
    losses = np.linspace(10.0, 1.0, N)
    # 45 usable points, run length 45 ends at u = 44: start = -1, sections = 15,
    # pick u = -1 + 15 + 7 = 21, i.e. row 31
    assert valley(lrs, losses) == (pytest.approx(lr_at(31)), 31)


def test_nan_tail_after_the_stop_is_ignored(lrs):
    losses = u_curve(30)
    stop = 45
    losses[stop:] = np.nan
    losses[stop] = 1e6  # the diverged row itself
    picks = suggest_all(lrs, losses, stop_step=stop)
    assert picks["min_halved"] == {"lr": pytest.approx(lr_at(30) / 2), "step": 30}
    assert picks["min_div10"] == {"lr": pytest.approx(lr_at(30) / 10), "step": 30}
    for rule in RULES:
        assert "error" not in picks[rule], picks[rule]
        assert SKIP_START <= picks[rule]["step"] < stop - SKIP_END


def test_rows_after_the_stop_are_not_used_even_if_lower(lrs):
    losses = u_curve(30)
    losses[50] = 0.0  # lower than the U's minimum, but after the stop
    picks = suggest_all(lrs, losses, stop_step=48)
    assert picks["min_halved"]["step"] == 30
    assert suggest_all(lrs, losses, stop_step=None)["min_halved"]["step"] == 50


def test_non_finite_rows_in_the_middle_are_skipped(lrs):
    losses = u_curve(30)
    losses[30] = np.nan
    losses[29] = np.inf
    assert min_halved(lrs, losses).index == 31  # nearest finite row, (31-30)^2 < (28-30)^2


def test_a_curve_that_never_diverges(lrs):
    losses = np.linspace(3.0, 1.0, N)  # falls all the way: no stop
    picks = suggest_all(lrs, losses, stop_step=None)
    last = N - SKIP_END - 1
    assert picks["min_halved"] == {"lr": pytest.approx(lr_at(last) / 2), "step": last}
    assert picks["min_div10"] == {"lr": pytest.approx(lr_at(last) / 10), "step": last}
    assert set(picks) == set(RULES)
    assert all(isinstance(p["lr"], float) and isinstance(p["step"], int) for p in picks.values())


# --- too few points -------------------------------------------------------------------------


def test_exactly_min_points_is_enough():
    n = SKIP_START + MIN_POINTS + SKIP_END  # 25 rows -> 10 usable
    lrs = exponential_lrs(START, FACTOR, n)
    losses = np.linspace(5.0, 1.0, n)
    assert min_halved(lrs, losses).index == n - SKIP_END - 1


@pytest.mark.parametrize("rule", sorted(RULES))
def test_too_few_points_raise_a_helpful_error(rule):
    n = SKIP_START + MIN_POINTS + SKIP_END - 1  # 24 rows -> 9 usable
    lrs = exponential_lrs(START, FACTOR, n)
    with pytest.raises(NotEnoughPoints) as info:
        RULES[rule](lrs, np.linspace(5.0, 1.0, n))
    message = str(info.value)
    assert "only 9 finite points" in message
    assert "need 10" in message
    assert "lr_range.start_lr" in message and "lr_range.stop_factor" in message


@pytest.mark.parametrize("n", [0, 3, 15])
def test_very_short_curves_raise(n):
    with pytest.raises(NotEnoughPoints, match="only 0 finite points"):
        min_halved(exponential_lrs(START, FACTOR, n), np.ones(n))


def test_all_nan_raises(lrs):
    with pytest.raises(NotEnoughPoints, match="only 0 finite points"):
        valley(lrs, np.full(N, np.nan))


def test_mostly_nan_raises(lrs):
    losses = np.full(N, np.nan)
    losses[20:29] = 1.0  # 9 finite usable points
    with pytest.raises(NotEnoughPoints, match="only 9 finite points"):
        steepest(lrs, losses)


def test_suggest_all_reports_an_error_for_every_rule_when_too_few_points(lrs):
    picks = suggest_all(lrs, u_curve(10), stop_step=20)  # 20 rows -> 5 usable
    assert set(picks) == set(RULES)
    for rule, pick in picks.items():
        assert set(pick) == {"error"}, rule
        assert "only 5 finite points" in pick["error"]
        assert "lr_range.start_lr" in pick["error"]


def test_suggest_all_all_nan(lrs):
    picks = suggest_all(lrs, np.full(N, np.nan), stop_step=None)
    assert all("error" in pick for pick in picks.values())


def test_flat_center_picks_the_middle_of_the_flat_bottom_not_the_noisy_minimum():
    lrs = exponential_lrs(1e-3, 1.1, 60)
    losses = np.full(60, 2.0)
    losses[25:42] = 1.05  # the flat bottom: rows 25..41, all within 10 % of the minimum
    losses[27] = 1.0  # the minimum sits near the left edge
    got = flat_center(lrs, losses)
    assert got.index == 33  # (25 + 41) / 2 on the log-rate axis
    assert got.lr == pytest.approx(1e-3 * 1.1**33, rel=1e-12)
    assert min_halved(lrs, losses).index == 27


def test_flat_center_ignores_rows_just_outside_the_tolerance():
    lrs = exponential_lrs(1e-3, 1.1, 60)
    losses = np.full(60, 2.0)
    losses[20:31] = 1.0
    losses[31:40] = 1.1001  # more than 10 % above the minimum: not part of the bottom
    assert flat_center(lrs, losses).index == 25
