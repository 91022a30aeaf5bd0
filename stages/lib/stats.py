"""Which accuracy differences between architectures exceed seed-to-seed noise.

Permutation tests need no assumption about the shape of the accuracy distribution, which
matters with the handful of seeds per architecture a study can afford. numpy + stdlib only.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Hashable, Sequence, TypeVar

import numpy as np

K = TypeVar("K", bound=Hashable)

# Splits whose |difference| equals the observed one only up to rounding still count as
# "at least as extreme"; otherwise the observed split itself could be missed.
_TOLERANCE = 1e-12


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof=1); the std is None for a single value."""
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        raise ValueError("mean_std needs at least one value")
    std = float(np.std(array, ddof=1)) if array.size >= 2 else None
    return float(np.mean(array)), std


def permutation_p_value(
    a: Sequence[float],
    b: Sequence[float],
    max_exact: int = 200_000,
    samples: int = 100_000,
    seed: int = 0,
) -> float:
    """Two-sided permutation p-value for mean(a) - mean(b), a and b independent samples.

    Exact (every split of the pooled values into groups of len(a) and len(b)) when there are
    at most ``max_exact`` splits, else a seeded Monte Carlo estimate (count + 1) / (samples + 1),
    which never returns 0 for a p-value that is not 0.

    Each sample needs at least 2 values: with one value per group there are only 2 splits, so
    the p-value is 1 whatever the data, and a group of 1 says nothing about its own noise.
    """
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_arr.size < 2 or b_arr.size < 2:
        raise ValueError(f"each sample needs at least 2 values, got {a_arr.size} and {b_arr.size}")
    pooled = np.concatenate([a_arr, b_arr])
    if not np.all(np.isfinite(pooled)):
        # NaN would never count as extreme and so would give p = 0: "significant".
        raise ValueError("samples must be finite")
    n_a, n_b, total = a_arr.size, b_arr.size, pooled.sum()

    def differences(sums_a: np.ndarray) -> np.ndarray:
        # Every split, the observed one included, goes through the same formula so that
        # equal splits give equal floats as far as possible.
        return sums_a / n_a - (total - sums_a) / n_b

    observed = abs(differences(np.array([a_arr.sum()]))[0])
    n_splits = math.comb(n_a + n_b, n_a)
    if n_splits <= max_exact:
        flat = itertools.chain.from_iterable(itertools.combinations(range(n_a + n_b), n_a))
        groups = np.fromiter(flat, dtype=np.intp, count=n_splits * n_a).reshape(n_splits, n_a)
        extreme = np.abs(differences(pooled[groups].sum(axis=1))) >= observed - _TOLERANCE
        return float(np.count_nonzero(extreme) / n_splits)
    rng = np.random.default_rng(seed)
    shuffled = rng.permuted(np.tile(pooled, (samples, 1)), axis=1)
    extreme = np.abs(differences(shuffled[:, :n_a].sum(axis=1))) >= observed - _TOLERANCE
    return float((np.count_nonzero(extreme) + 1) / (samples + 1))


def holm(p_values: dict[K, float]) -> dict[K, float]:
    """Holm–Bonferroni adjusted p-values: compare each with alpha to control the family-wise error.

    The i-th smallest p (from 0) is multiplied by (m - i); a running maximum keeps the adjusted
    values in the same order as the raw ones, and they are capped at 1.
    """
    m = len(p_values)
    adjusted: dict[K, float] = {}
    running = 0.0
    for i, key in enumerate(sorted(p_values, key=p_values.__getitem__)):
        running = max(running, min(1.0, (m - i) * p_values[key]))
        adjusted[key] = running
    return {key: adjusted[key] for key in p_values}


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    difference: float  # mean(a) - mean(b)
    p_value: float
    p_adjusted: float  # Holm over every pair compared
    significant: bool  # p_adjusted < alpha


def compare_all(samples: dict[str, Sequence[float]], alpha: float = 0.05) -> list[Comparison]:
    """Test every pair of names (dict order, a before b); names with fewer than 2 values are left out."""
    names = [name for name, values in samples.items() if len(values) >= 2]
    pairs = list(itertools.combinations(names, 2))
    raw = {(a, b): permutation_p_value(samples[a], samples[b]) for a, b in pairs}
    adjusted = holm(raw)
    return [
        Comparison(
            a=a,
            b=b,
            difference=mean_std(samples[a])[0] - mean_std(samples[b])[0],
            p_value=raw[a, b],
            p_adjusted=adjusted[a, b],
            significant=adjusted[a, b] < alpha,
        )
        for a, b in pairs
    ]
