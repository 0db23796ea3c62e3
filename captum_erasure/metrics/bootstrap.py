"""Percentile-bootstrap 95 % intervals of a mean, and of a paired mean difference.

A metric averaged over n snippets is a sample mean; resampling the snippets with replacement
``n_resamples`` times and taking the 2.5 and 97.5 percentiles of the resampled means gives its
interval. Two methods scored on the same snippets are compared on the per-snippet difference
(one resample of snippets for both), which removes the between-snippet variance the two share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

DEFAULT_RESAMPLES = 2000


@dataclass(frozen=True)
class BootstrapInterval:
    """The sample mean and its percentile-bootstrap interval."""

    mean: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


@dataclass(frozen=True)
class PairedComparison:
    """Mean of a - b over the same examples, its interval, and the share of resampled means
    on the other side of 0 than the observed one (doubled, at most 1: a two-sided p-value)."""

    difference: BootstrapInterval
    p_value: float

    @property
    def separated(self) -> bool:
        """True when the interval excludes 0."""
        return self.difference.low > 0 or self.difference.high < 0


def resampled_means(values: Sequence[float], *, n_resamples: int = DEFAULT_RESAMPLES,
                    seed: int = 0) -> np.ndarray:
    """The means of ``n_resamples`` resamples (with replacement) of ``values``: the bootstrap
    distribution, for statistics built from several means (e.g. a ratio of two)."""
    return _resampled_means(_values(values), n_resamples, seed)


def _resampled_means(values: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(values), size=(n_resamples, len(values)))
    return values[picks].mean(1)


def _values(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise ValueError("bootstrap needs at least one value")
    if not np.isfinite(array).all():
        raise ValueError("bootstrap values must be finite (drop the NaN examples first)")
    return array


def bootstrap_interval(values: Sequence[float], *, confidence: float = 0.95,
                       n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0
                       ) -> BootstrapInterval:
    """Mean of ``values`` and its percentile-bootstrap ``confidence`` interval."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    array = _values(values)
    means = _resampled_means(array, n_resamples, seed)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return BootstrapInterval(float(array.mean()), float(low), float(high), int(array.size))


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95,
                     n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> PairedComparison:
    """Paired bootstrap of mean(a - b): ``a[i]`` and ``b[i]`` are the same example's values
    under two methods."""
    a, b = _values(a), _values(b)
    if a.shape != b.shape:
        raise ValueError(f"paired values need one value per example in both: {a.size} vs "
                         f"{b.size}")
    difference = a - b
    interval = bootstrap_interval(difference, confidence=confidence, n_resamples=n_resamples,
                                  seed=seed)
    means = _resampled_means(difference, n_resamples, seed)
    observed = interval.mean
    if observed == 0:
        p_value = 1.0
    else:
        other_side = np.mean(means <= 0) if observed > 0 else np.mean(means >= 0)
        p_value = float(min(1.0, 2 * other_side))
    return PairedComparison(interval, p_value)
