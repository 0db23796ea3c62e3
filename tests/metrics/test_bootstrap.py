"""Percentile-bootstrap intervals against resampling distributions computed by hand."""

from __future__ import annotations

import pytest

from captum_erasure.metrics.bootstrap import bootstrap_interval, paired_bootstrap


def test_interval_of_two_values_spans_the_extremes():
    # Means of resamples of [0, 1]: 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4, so the 2.5 and
    # 97.5 percentiles are 0 and 1.
    interval = bootstrap_interval([0.0, 1.0], n_resamples=4000, seed=1)
    assert (interval.mean, interval.low, interval.high, interval.n) == (0.5, 0.0, 1.0, 2)


def test_central_half_of_three_values():
    # Resamples of [1, 2, 3]: sums 3..9 in 1, 3, 6, 7, 6, 3, 1 of 27 cases; the cumulative share
    # passes 1/4 at sum 5 (10/27) and 3/4 at sum 7 (23/27): the 50 % interval is [5/3, 7/3].
    interval = bootstrap_interval([1.0, 2.0, 3.0], confidence=0.5, n_resamples=20000)
    assert interval.mean == 2.0
    assert interval.low == pytest.approx(5 / 3) and interval.high == pytest.approx(7 / 3)


def test_constant_values_have_a_point_interval():
    interval = bootstrap_interval([0.25] * 7)
    assert (interval.low, interval.high) == (0.25, 0.25)


def test_paired_difference_removes_the_shared_variance():
    a = [0.1, 0.9, 0.4, 0.7, 0.2]
    b = [x - 0.05 for x in a]  # the same spread, shifted: the difference is constant
    comparison = paired_bootstrap(a, b)
    assert comparison.difference.low == pytest.approx(0.05)
    assert comparison.difference.high == pytest.approx(0.05)
    assert comparison.separated and comparison.p_value == 0.0
    # Unpaired, each mean's own interval is wide and the two overlap.
    assert bootstrap_interval(b).high > bootstrap_interval(a).low
    assert paired_bootstrap(a, a).p_value == 1.0


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="at least one value"):
        bootstrap_interval([])
    with pytest.raises(ValueError, match="finite"):
        bootstrap_interval([1.0, float("nan")])
    with pytest.raises(ValueError, match="one value per example"):
        paired_bootstrap([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_interval([1.0], confidence=95)
