"""Statistics for the report: expected values are worked out by hand wherever the answer is known."""

from __future__ import annotations

import dataclasses
import math

import pytest

from stages.lib.stats import Comparison, compare_all, holm, mean_std, permutation_p_value

LOW = [0.90, 0.91, 0.92, 0.93, 0.94]
HIGH = [0.96, 0.97, 0.98, 0.99, 1.00]
# Overlaps HIGH completely, so the two cannot be told apart.
HIGH_TOO = [0.965, 0.955, 0.985, 0.975, 0.995]
# 6 vs 6 (924 splits), overlapping: a moderate p-value for the Monte Carlo checks.
NOISY_A = [0.981, 0.984, 0.979, 0.986, 0.983, 0.985]
NOISY_B = [0.982, 0.978, 0.980, 0.984, 0.977, 0.981]


def is_monte_carlo(p: float, samples: int) -> bool:
    """Monte Carlo p-values are (count + 1) / (samples + 1)."""
    scaled = p * (samples + 1)
    return abs(scaled - round(scaled)) < 1e-6


# mean_std


def test_mean_std():
    mean, std = mean_std([1, 2, 3, 4])
    assert mean == 2.5
    # Squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5, over n - 1 = 3.
    assert std == pytest.approx(math.sqrt(5 / 3))
    assert std == pytest.approx(1.2909944487358056)


def test_mean_std_single_value_has_no_std():
    assert mean_std([0.97]) == (0.97, None)


def test_mean_std_empty():
    with pytest.raises(ValueError):
        mean_std([])


# permutation_p_value


def test_separated_samples_exact():
    # Of the C(10, 5) = 252 splits only the observed one and its mirror are as extreme.
    assert permutation_p_value(LOW, HIGH) == pytest.approx(2 / 252)


def test_three_against_three_by_hand():
    # C(6, 3) = 20 splits; only {1,2,3}|{4,5,6} and its mirror reach |diff| = 3.
    assert permutation_p_value([1, 2, 3], [4, 5, 6]) == pytest.approx(2 / 20)


def test_overlapping_samples_by_hand():
    # Observed |diff| = 1. A 3-subset of 1..6 with sum s has diff (2s - 21) / 3, so |diff| >= 1
    # when s <= 9 (1 + 1 + 2 + 3 = 7 subsets) or s >= 12 (7 subsets): 14 of 20.
    assert permutation_p_value([1, 3, 5], [2, 4, 6]) == pytest.approx(14 / 20)


def test_identical_samples():
    assert permutation_p_value([0.98, 0.98], [0.98, 0.98]) == 1.0
    assert permutation_p_value([0.98, 0.97], [0.97, 0.98]) == 1.0


def test_ties_up_to_rounding_count_as_extreme():
    # Splits of {0.1, 0.2, 0.4, 0.5}: |diff| is 0.3 for the observed split and its mirror, else
    # 0.1 or 0. In floats the mirror comes out a hair below 0.3; it must still count: 2 / 6.
    assert permutation_p_value([0.1, 0.2], [0.4, 0.5]) == pytest.approx(2 / 6)


def test_symmetric_in_a_and_b():
    a, b = [0.97, 0.98, 0.975], [0.96, 0.965, 0.972, 0.969]
    assert permutation_p_value(a, b) == permutation_p_value(b, a)
    assert permutation_p_value(a, b) < 1.0  # not trivially symmetric


def test_unequal_sizes_by_hand():
    # 2 vs 3, C(5, 2) = 10 splits: {1,2}|{3,4,5} gives -2.5 and {4,5}|{1,2,3} gives +2.5;
    # the next largest, {1,3} and {3,5}, give -/+5/3. So 2 of 10.
    assert permutation_p_value([1, 2], [3, 4, 5]) == pytest.approx(2 / 10)


def test_monte_carlo_close_to_exact_and_seeded():
    exact = permutation_p_value(NOISY_A, NOISY_B)
    assert not is_monte_carlo(exact, 100_000) and 0.05 < exact < 0.5
    estimate = permutation_p_value(NOISY_A, NOISY_B, max_exact=0)
    assert is_monte_carlo(estimate, 100_000)
    assert estimate == pytest.approx(exact, abs=0.01)
    assert permutation_p_value(NOISY_A, NOISY_B, max_exact=0) == estimate
    other = [permutation_p_value(NOISY_A, NOISY_B, max_exact=0, seed=s) for s in (1, 2)]
    assert other != [estimate, estimate]  # the seed is used


def test_monte_carlo_never_zero():
    # (0 + 1) / (samples + 1) at worst; 2 / 252 of the shuffles match, so about 8 of 1000.
    p = permutation_p_value(LOW, HIGH, max_exact=0, samples=1000)
    assert is_monte_carlo(p, 1000) and 0 < p < 0.03
    assert permutation_p_value([0.98, 0.98], [0.98, 0.98], max_exact=0, samples=1000) == 1.0


def test_exact_up_to_max_exact_splits():
    assert permutation_p_value([1, 2, 3], [4, 5, 6], max_exact=20) == 0.1
    p = permutation_p_value([1, 2, 3], [4, 5, 6], max_exact=19, samples=1000)
    assert is_monte_carlo(p, 1000) and p != 0.1


def test_default_switches_to_monte_carlo_for_many_splits():
    # C(24, 12) = 2,704,156 splits, above the default max_exact of 200,000.
    a, b = [0.98 + 0.001 * i for i in range(12)], [0.975 + 0.001 * i for i in range(12)]
    assert is_monte_carlo(permutation_p_value(a, b), 100_000)


@pytest.mark.parametrize("a, b", [([0.98], [0.97, 0.96]), ([0.98, 0.97], [0.96]), ([], [0.97, 0.96])])
def test_fewer_than_two_values(a, b):
    with pytest.raises(ValueError, match="at least 2"):
        permutation_p_value(a, b)


def test_non_finite_values():
    with pytest.raises(ValueError, match="finite"):
        permutation_p_value([0.98, float("nan")], [0.97, 0.96])


# holm


def test_holm_known_example():
    # Sorted: x 0.01 * 3 = 0.03, z 0.03 * 2 = 0.06, y 0.04 * 1 = 0.04 -> raised to 0.06 (monotone).
    adjusted = holm({"x": 0.01, "y": 0.04, "z": 0.03})
    assert list(adjusted) == ["x", "y", "z"]
    assert adjusted == pytest.approx({"x": 0.03, "y": 0.06, "z": 0.06})


def test_holm_capped_at_one():
    # b: 0.6 * 2 = 1.2 -> 1; c: 0.9 * 1 raised to b's 1.
    assert holm({"a": 0.2, "b": 0.6, "c": 0.9}) == pytest.approx({"a": 0.6, "b": 1.0, "c": 1.0})


def test_holm_single_and_empty():
    assert holm({("a", "b"): 0.02}) == {("a", "b"): 0.02}
    assert holm({}) == {}


# compare_all


def test_compare_all_finds_the_better_architecture():
    # Dict order, not alphabetical: pairs are (high, low), (high, high_too), (low, high_too).
    result = compare_all({"high": HIGH, "low": LOW, "high_too": HIGH_TOO, "one_seed": [0.99]})
    assert [(c.a, c.b) for c in result] == [("high", "low"), ("high", "high_too"), ("low", "high_too")]
    assert [c.significant for c in result] == [True, False, True]

    by_pair = {(c.a, c.b): c for c in result}
    high_low, low_high_too = by_pair["high", "low"], by_pair["low", "high_too"]
    assert high_low.difference == pytest.approx(0.06)
    assert low_high_too.difference == pytest.approx(-0.055)
    assert high_low.p_value == low_high_too.p_value == pytest.approx(2 / 252)
    # Holm over 3 pairs: 3 * 2/252 for the first of the two smallest, 2 * 2/252 raised to it.
    assert high_low.p_adjusted == low_high_too.p_adjusted == pytest.approx(6 / 252)
    same = by_pair["high", "high_too"]
    assert same.p_value > 0.5 and same.p_adjusted == same.p_value  # largest p: multiplied by 1


def test_compare_all_alpha():
    result = compare_all({"high": HIGH, "low": LOW, "high_too": HIGH_TOO}, alpha=0.01)
    assert not any(c.significant for c in result)  # 6/252 = 0.024 is not below 0.01
    # Significant means strictly below alpha.
    (exactly,) = compare_all({"low": LOW, "high": HIGH}, alpha=2 / 252)
    assert exactly.p_adjusted == 2 / 252 and not exactly.significant


def test_compare_all_default_alpha_is_five_percent():
    # 4-subsets of 1..8 summing to 10 or 11 (1234, 1235) or, mirrored, 25 or 26: p = 4/70 = 0.057.
    a, b = [1, 2, 3, 5], [4, 6, 7, 8]
    (default,) = compare_all({"a": a, "b": b})
    assert default.p_value == pytest.approx(4 / 70) and not default.significant
    (loose,) = compare_all({"a": a, "b": b}, alpha=0.1)
    assert loose.significant


def test_comparison_is_frozen():
    (comparison,) = compare_all({"low": LOW, "high": HIGH})
    assert isinstance(comparison, Comparison)
    assert comparison.p_adjusted == comparison.p_value  # a single pair needs no correction
    with pytest.raises(dataclasses.FrozenInstanceError):
        comparison.significant = False


@pytest.mark.parametrize("samples", [{}, {"low": LOW}, {"low": LOW, "one_seed": [0.99]}])
def test_compare_all_needs_two_names(samples):
    assert compare_all(samples) == []
