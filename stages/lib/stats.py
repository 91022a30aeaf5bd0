"""Intervals for every comparison the reports make, from scipy.stats.

- Over seeds: Student's t interval of a mean, and Welch's interval of a difference of two means
  (no equal-variance assumption), each with its method named in the reports.
- Over images: the difference of two models' accuracy on the same test images, as a t interval of
  the per-image differences (paired; with 10,000 images the t and normal intervals agree).
- What a design can detect: the smallest true difference a two-sided Welch-type test at ``alpha``
  would find with the given power, from the noncentral t distribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

# scipy.stats is imported in the functions that use it: importing it takes about 0.75 s, which a report of one
# seed (no interval) or a stage failing on its inputs should not pay.

CONFIDENCE = 0.95
POWER = 0.80


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    n: int  # values (seeds, or images) the interval rests on

    def excludes(self, value: float = 0.0) -> bool:
        return not self.low <= value <= self.high

    def scaled(self, factor: float) -> "Interval":
        return Interval(self.estimate * factor, self.low * factor, self.high * factor, self.n)


def _values(values: Sequence[float], at_least: int, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.size < at_least or not np.all(np.isfinite(array)):
        raise ValueError(f"{what} needs at least {at_least} finite values (got {list(values)})")
    return array


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Student's t interval of the mean (at least 2 values)."""
    from scipy import stats

    x = _values(values, 2, "a t interval")
    if np.ptp(x) == 0:
        return Interval(float(x[0]), float(x[0]), float(x[0]), x.size)
    ci = stats.ttest_1samp(x, 0.0).confidence_interval(confidence)
    return Interval(float(x.mean()), float(ci.low), float(ci.high), x.size)


def welch_interval(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Welch's interval of mean(a) - mean(b), a and b independent (at least 2 values each)."""
    from scipy import stats

    x, y = _values(a, 2, "Welch's interval"), _values(b, 2, "Welch's interval")
    difference = float(x.mean() - y.mean())
    if np.ptp(x) == 0 and np.ptp(y) == 0:
        return Interval(difference, difference, difference, x.size + y.size)
    ci = stats.ttest_ind(x, y, equal_var=False).confidence_interval(confidence)
    return Interval(difference, float(ci.low), float(ci.high), x.size + y.size)


def simultaneous_gaps(groups: dict[str, Sequence[float]], best: str, confidence: float = CONFIDENCE
                      ) -> dict[str, Interval]:
    """Tukey's HSD intervals of mean(best) - mean(other) for every other group (scipy.stats.tukey_hsd: all pairs
    at once, within-group variance pooled; Tukey-Kramer for unequal sizes). Together they hold with
    ``confidence`` over every pair of ``groups``, so they stay honest when ``best`` was picked from these same
    values."""
    from scipy import stats

    names = list(groups)
    if len(names) < 2:  # one group: no pair
        return {}
    arrays = [_values(groups[name], 2, "Tukey's HSD") for name in names]
    i = names.index(best)
    if all(np.ptp(a) == 0 for a in arrays):  # no spread at all: tukey_hsd would divide by it
        return {name: Interval(*(3 * (float(arrays[i][0] - a[0]),)), arrays[i].size + a.size)
                for name, a in zip(names, arrays) if name != best}
    ci = stats.tukey_hsd(*arrays).confidence_interval(confidence)
    return {name: Interval(float(arrays[i].mean() - arrays[j].mean()), float(ci.low[i, j]), float(ci.high[i, j]),
                           arrays[i].size + arrays[j].size)
            for j, name in enumerate(names) if j != i}


def bonferroni(confidence: float, comparisons: int) -> float:
    """The confidence each of ``comparisons`` intervals needs for all of them to hold together at ``confidence``."""
    return 1 - (1 - confidence) / max(comparisons, 1)


def paired_interval(differences: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """t interval of the mean of paired differences (per image, or per seed)."""
    return mean_interval(differences, confidence)


def detectable_difference(sd: float, n_a: int, n_b: int, alpha: float = 1 - CONFIDENCE,
                          power: float = POWER) -> float:
    """Smallest true difference of means a two-sided two-sample t test at ``alpha`` detects with ``power``,
    when both groups have standard deviation ``sd`` (df = n_a + n_b - 2)."""
    from scipy import optimize, stats

    if not (sd >= 0 and np.isfinite(sd) and min(n_a, n_b) >= 1 and n_a + n_b >= 3 and 0 < alpha < power < 1):
        raise ValueError(f"detectable_difference needs sd >= 0, n_a and n_b >= 1 with n_a + n_b >= 3, and "
                         f"0 < alpha < power < 1 (got sd={sd}, n_a={n_a}, n_b={n_b}, alpha={alpha}, power={power})")
    if sd == 0:
        return 0.0
    df = n_a + n_b - 2
    se = sd * np.sqrt(1 / n_a + 1 / n_b)
    critical = stats.t.ppf(1 - alpha / 2, df)

    def shortfall(delta: float) -> float:
        shift = delta / se
        wrong_side = stats.nct.cdf(-critical, df, shift)  # NaN once it underflows far out in the tail
        return stats.nct.sf(critical, df, shift) + np.nan_to_num(wrong_side) - power

    return float(optimize.brentq(shortfall, 0.0, 30 * se))  # at 30 standard errors the power is ~1 for df >= 2


def pooled_sd(groups: Sequence[Sequence[float]]) -> float:
    """The within-group standard deviation pooled over groups of at least 2 values."""
    groups = [np.asarray(g, dtype=np.float64) for g in groups if len(g) >= 2]
    if not groups:
        raise ValueError("pooled_sd needs a group of at least 2 values")
    squares = sum(((g - g.mean()) ** 2).sum() for g in groups)
    return float(np.sqrt(squares / sum(len(g) - 1 for g in groups)))
