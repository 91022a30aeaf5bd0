"""Intervals and detectable differences, against closed forms, known values and scipy's own t tests.

The closed forms are written out here from their textbook definitions (Student's t interval, Welch's
interval with the Welch–Satterthwaite degrees of freedom); only quantiles come from scipy.stats.t.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as scipy_stats

from stages.lib.stats import (
    CONFIDENCE,
    POWER,
    Interval,
    detectable_difference,
    mean_interval,
    paired_interval,
    pooled_sd,
    welch_interval,
)

LOW = [0.9600, 0.9605, 0.9610, 0.9615, 0.9620]
HIGH = [0.9700, 0.9705, 0.9710, 0.9715, 0.9720]
HIGH_TOO = [0.9701, 0.9707, 0.9709, 0.9712, 0.9716]  # interleaved with HIGH


def test_the_reports_level_and_power():
    assert (CONFIDENCE, POWER) == (0.95, 0.80)


# --- Student's t interval of a mean ------------------------------------------------------------------


def test_mean_interval_by_hand():
    # mean 2.5; s^2 = (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3; se = sqrt(5/3 / 4); t(0.975, 3) = 3.182446305
    half = 3.182446305284263 * math.sqrt(5 / 3 / 4)
    got = mean_interval([1, 2, 3, 4])
    assert got.estimate == 2.5 and got.n == 4
    assert (got.low, got.high) == (pytest.approx(2.5 - half, rel=1e-12), pytest.approx(2.5 + half, rel=1e-12))


@pytest.mark.parametrize("values", [LOW, [0.3, 0.9], [1.0, 2.0, 4.0, 8.0, 16.0, 0.5]])
def test_mean_interval_is_the_closed_form(values):
    x = np.array(values)
    half = scipy_stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    got = mean_interval(values)
    assert got.estimate == pytest.approx(x.mean(), rel=1e-12)
    assert (got.low, got.high) == (pytest.approx(x.mean() - half, rel=1e-10), pytest.approx(x.mean() + half, rel=1e-10))


def test_mean_interval_at_another_level_is_narrower():
    wide, narrow = mean_interval(LOW), mean_interval(LOW, confidence=0.80)
    assert wide.low < narrow.low < narrow.estimate == wide.estimate < narrow.high < wide.high


def test_mean_interval_of_identical_values_is_that_value():
    assert mean_interval([0.97, 0.97, 0.97]) == Interval(0.97, 0.97, 0.97, 3)


def test_paired_interval_is_the_t_interval_of_the_differences():
    differences = [0.01, -0.002, 0.004, 0.007]
    assert paired_interval(differences) == mean_interval(differences)


# --- Welch's interval of a difference of two means ------------------------------------------------------


def welch_by_hand(a: list[float], b: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    x, y = np.array(a), np.array(b)
    va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    df = (va + vb) ** 2 / (va**2 / (len(x) - 1) + vb**2 / (len(y) - 1))  # Welch–Satterthwaite
    half = scipy_stats.t.ppf(0.5 + confidence / 2, df) * math.sqrt(va + vb)
    difference = x.mean() - y.mean()
    return difference, difference - half, difference + half


@pytest.mark.parametrize("a, b", [(HIGH, LOW), (HIGH, HIGH_TOO), ([1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 4.0, 9.0]),
                                  ([0.5, 0.7], [0.1, 0.2, 0.4, 0.3, 0.35, 0.2])])
def test_welch_interval_is_the_closed_form(a, b):
    difference, low, high = welch_by_hand(a, b)
    got = welch_interval(a, b)
    assert got.n == len(a) + len(b)
    assert got.estimate == pytest.approx(difference, rel=1e-12, abs=1e-15)
    assert (got.low, got.high) == (pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))


def test_welch_interval_agrees_with_scipys_welch_test():
    ci = scipy_stats.ttest_ind(HIGH, HIGH_TOO, equal_var=False).confidence_interval(0.95)
    got = welch_interval(HIGH, HIGH_TOO)
    assert (got.low, got.high) == (pytest.approx(ci.low, rel=1e-12), pytest.approx(ci.high, rel=1e-12))


def test_separated_samples_give_an_interval_that_excludes_zero():
    got = welch_interval(HIGH, LOW)
    assert got.excludes(0.0) and got.low > 0
    assert welch_interval(LOW, HIGH).high < 0  # and the other way round, negative


def test_overlapping_samples_give_an_interval_that_holds_zero():
    got = welch_interval(HIGH, HIGH_TOO)
    assert not got.excludes(0.0)
    assert got.low < 0 < got.high


def test_welch_interval_of_two_constant_samples_is_their_difference():
    assert welch_interval([0.98, 0.98], [0.97, 0.97, 0.97]) == Interval(pytest.approx(0.01), pytest.approx(0.01),
                                                                        pytest.approx(0.01), 5)


def test_interval_helpers():
    interval = Interval(0.002, -0.001, 0.005, 10)
    assert not interval.excludes(0.0) and interval.excludes(0.006) and not interval.excludes(-0.001)
    assert interval.scaled(100) == Interval(pytest.approx(0.2), pytest.approx(-0.1), pytest.approx(0.5), 10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        interval.low = 0.0


# --- what a design can detect ---------------------------------------------------------------------------


def power_by_integration(delta: float, sd: float, n_a: int, n_b: int, alpha: float = 0.05) -> float:
    """Power of the two-sided two-sample t test at a true difference ``delta``, integrated directly:
    T = (Z + delta/se) / sqrt(V/df) with V ~ chi2(df), rejected when |T| > t(1 - alpha/2, df)."""
    df = n_a + n_b - 2
    shift, critical = delta / (sd * math.sqrt(1 / n_a + 1 / n_b)), scipy_stats.t.ppf(1 - alpha / 2, df)

    def rejected_given(v: float) -> float:
        scale = critical * math.sqrt(v / df)
        return (scipy_stats.norm.sf(scale - shift) + scipy_stats.norm.cdf(-scale - shift)) * scipy_stats.chi2.pdf(v, df)

    return integrate.quad(rejected_given, 0, np.inf, epsabs=1e-13, epsrel=1e-12)[0]


@pytest.mark.parametrize("n, known", [(5, 2.0236), (30, 0.7355)])
def test_detectable_difference_known_values_in_standard_deviations(n, known):
    got = detectable_difference(1.0, n, n)
    assert got == pytest.approx(known, rel=5e-4)  # the published values, to their 4 digits
    assert power_by_integration(got, 1.0, n, n) == pytest.approx(0.80, abs=1e-9)  # and exactly at power 0.8


@pytest.mark.parametrize("sd, n_a, n_b, alpha, power", [(0.004, 5, 5, 0.05, 0.8), (1.0, 3, 8, 0.05, 0.8),
                                                         (2.5, 10, 10, 0.01, 0.9), (1.0, 2, 1, 0.05, 0.8)])
def test_detectable_difference_reaches_exactly_the_asked_power(sd, n_a, n_b, alpha, power):
    delta = detectable_difference(sd, n_a, n_b, alpha, power)
    assert power_by_integration(delta, sd, n_a, n_b, alpha) == pytest.approx(power, abs=1e-7)


def test_detectable_difference_scales_with_sd_and_shrinks_with_more_seeds():
    assert detectable_difference(0.004, 5, 5) == pytest.approx(0.004 * detectable_difference(1.0, 5, 5), rel=1e-9)
    assert detectable_difference(1.0, 30, 30) < detectable_difference(1.0, 10, 10) < detectable_difference(1.0, 5, 5)
    assert detectable_difference(1.0, 5, 5, power=0.9) > detectable_difference(1.0, 5, 5)
    assert detectable_difference(1.0, 5, 5, alpha=0.01) > detectable_difference(1.0, 5, 5)


def test_with_no_noise_any_difference_is_detectable():
    assert detectable_difference(0.0, 5, 5) == 0.0


# --- pooled standard deviation ----------------------------------------------------------------------------


def test_pooled_sd_by_hand():
    # squares about each mean: (1+0+1) + (1+1) = 4 over (3-1) + (2-1) = 3 degrees of freedom;
    # the one-value group adds nothing
    assert pooled_sd([[1, 2, 3], [2, 4], [7]]) == pytest.approx(math.sqrt(4 / 3), rel=1e-12)


def test_pooled_sd_of_one_group_is_its_sd():
    assert pooled_sd([LOW]) == pytest.approx(np.std(LOW, ddof=1), rel=1e-12)


# --- bad inputs raise ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [[], [0.97], [0.97, float("nan")], [0.97, float("inf")]])
def test_a_t_interval_needs_two_finite_values(values):
    with pytest.raises(ValueError, match=r"needs at least 2 finite values"):
        mean_interval(values)
    with pytest.raises(ValueError, match=r"needs at least 2 finite values"):
        welch_interval(LOW, values)
    with pytest.raises(ValueError, match=r"needs at least 2 finite values"):
        welch_interval(values, LOW)


@pytest.mark.parametrize("args", [(-1.0, 5, 5), (float("nan"), 5, 5), (float("inf"), 5, 5), (1.0, 0, 5),
                                  (1.0, 5, 0), (1.0, 1, 1), (1.0, 5, 5, 0.0), (1.0, 5, 5, 0.05, 0.05),
                                  (1.0, 5, 5, 0.05, 1.0)])
def test_detectable_difference_refuses_a_design_it_cannot_judge(args):
    with pytest.raises(ValueError, match=r"^detectable_difference needs sd >= 0, n_a and n_b >= 1 .* \(got sd="):
        detectable_difference(*args)


def test_pooled_sd_needs_a_group_of_two():
    with pytest.raises(ValueError, match="at least 2 values"):
        pooled_sd([[0.97], []])
