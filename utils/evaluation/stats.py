"""Paired comparisons over cases: is one model really better than another on the same cases?

Two models (or two settings of one) segment the **same** cases, so the fair
comparison is case by case: the per-case differences, their mean, a
bootstrap interval of that mean (resampling the cases) and the Wilcoxon
signed-rank test's p-value (:func:`paired_difference`). :func:`paired_verdict`
turns one comparison into a sentence: which is better and by how much, or why
the data does not say (the interval contains 0, the difference is within a
stated tolerance, or there are too few cases).

Taught in lesson 07 (2D against 3D) and lesson 09 (the ablations).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.stats import wilcoxon

MIN_CASES = 3
"""Fewer paired cases than this give no verdict."""


@dataclass(frozen=True)
class PairedDifference:
    """The paired comparison of two methods over the same cases.

    Attributes:
        mean: mean of the per-case differences (first method minus second).
        low, high: the bootstrap interval of that mean (95% by default).
        p_value: the two-sided Wilcoxon signed-rank p-value (1.0 when every
            difference is 0, NaN when undefined).
        n: number of cases.
        largest_share: the largest absolute difference over the sum of them
            (1.0: one case makes all of it; 0 when every difference is 0).
    """

    mean: float
    low: float
    high: float
    p_value: float
    n: int
    largest_share: float


def paired_difference(
    differences, seed: int = 0, resamples: int = 10_000, confidence: float = 0.95
) -> PairedDifference:
    """Mean of paired per-case differences, its bootstrap interval and the Wilcoxon p-value.

    Args:
        differences: one value per case (method A minus method B); NaN is refused.
        seed: seed of the bootstrap (the same numbers every run).
        resamples: bootstrap resamples of the cases.
        confidence: coverage of the percentile interval.

    Returns:
        :class:`PairedDifference`.

    Raises:
        ValueError: for no differences, a NaN, or a confidence outside (0, 1).
    """
    diff = np.asarray(differences, dtype=float).ravel()
    if diff.size == 0:
        raise ValueError("expected at least one paired difference; found none")
    if not np.all(np.isfinite(diff)):
        raise ValueError(f"expected finite paired differences; found {diff[~np.isfinite(diff)][:3].tolist()}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1; found {confidence}")
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(resamples, diff.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    if not np.any(diff != 0):
        p_value = 1.0
    else:
        with warnings.catch_warnings():  # scipy warns about ties and zeros with few cases; the p-value stands
            warnings.simplefilter("ignore")
            try:
                p_value = float(wilcoxon(diff).pvalue)
            except ValueError:
                p_value = float("nan")
    total = float(np.abs(diff).sum())
    share = float(np.abs(diff).max() / total) if total > 0 else 0.0
    return PairedDifference(float(diff.mean()), float(low), float(high), p_value, int(diff.size), share)


def paired_verdict(
    result: PairedDifference,
    tolerance: float,
    higher_is_better: bool = True,
    names: tuple[str, str] = ("A", "B"),
    digits: int = 3,
    min_cases: int = MIN_CASES,
) -> str:
    """The verdict of a paired comparison, in words.

    A difference counts only when there are at least ``min_cases`` cases, the
    interval excludes 0 and the mean difference is larger than ``tolerance``.

    Args:
        result: from :func:`paired_difference` (``names[0]`` minus ``names[1]``).
        tolerance: differences this small are "no clear difference".
        higher_is_better: True for Dice, False for HD95.
        names: the two methods, in the order of the difference.
        digits: decimals of the printed difference.
        min_cases: fewer cases give no verdict.

    Returns:
        e.g. ``"regions better by 0.041"`` or ``"no clear difference (the interval contains 0)"``.
    """
    if result.n < min_cases:
        return f"no verdict: {result.n} case(s), fewer than {min_cases}"
    if result.low <= 0 <= result.high:
        return "no clear difference (the interval contains 0)"
    if abs(result.mean) <= tolerance:
        return f"no clear difference (|{result.mean:.{digits}f}| <= tolerance {tolerance:g})"
    winner = names[0] if (result.mean > 0) == higher_is_better else names[1]
    return f"{winner} better by {abs(result.mean):.{digits}f}"
