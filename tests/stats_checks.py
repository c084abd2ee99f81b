"""A deterministic goodness-of-fit check for the sampling tests (no SciPy)."""

import math


def chi_square(counts: dict, dist: dict, samples: int) -> tuple[float, float]:
    """``(statistic, critical value at p = 1e-4)``; outcomes expected fewer than 5 times are pooled."""
    statistic, pooled_observed, pooled_expected, bins = 0.0, 0, 0.0, 0
    for outcome in set(dist) | set(counts):
        expected = samples * dist.get(outcome, 0.0)
        observed = counts.get(outcome, 0)
        if expected >= 5:
            statistic += (observed - expected) ** 2 / expected
            bins += 1
        else:
            pooled_observed += observed
            pooled_expected += expected
    if pooled_expected > 0:
        statistic += (pooled_observed - pooled_expected) ** 2 / pooled_expected
        bins += 1
    df = bins - 1
    z = 3.719  # the normal quantile of 1 - 1e-4 (Wilson-Hilferty approximation of the chi-square quantile)
    return statistic, df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3
