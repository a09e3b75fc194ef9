"""Intervals for experiment results against published values and scipy, and the verdict."""

from __future__ import annotations

import random
import statistics

import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from recovery.domain.stats import (
    Interval,
    Verdict,
    bootstrap_mean_difference,
    newcombe,
    verdict,
    wilson,
)

PROPERTY = settings(max_examples=300, derandomize=True, deadline=None)
FOUR_DECIMALS = 5.01e-5  # the published tables round to 4 decimals

# Newcombe RG, "Two-sided confidence intervals for the single proportion: comparison of seven
# methods", Stat Med 1998;17:857-872, Table I, method 3 (Wilson score, no continuity correction).
WILSON_TABLE = [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
    (29, 29, 0.8830, 1.0),
]
# Newcombe RG, "Interval estimation for the difference between independent proportions:
# comparison of eleven methods", Stat Med 1998;17:873-890, Table II, method 10 (hybrid score, no
# continuity correction): examples (a) to (h), p1 - p2.
NEWCOMBE_TABLE = [
    (56, 70, 48, 80, 0.0524, 0.3339),
    (9, 10, 3, 10, 0.1705, 0.8090),
    (6, 7, 2, 7, 0.0582, 0.8062),
    (5, 56, 0, 29, -0.0381, 0.1926),
    (0, 10, 0, 20, -0.1611, 0.2775),
    (0, 10, 0, 10, -0.2775, 0.2775),
    (10, 10, 0, 20, 0.6791, 1.0),
    (10, 10, 0, 10, 0.6075, 1.0),
]


@pytest.mark.parametrize(("k", "n", "low", "high"), WILSON_TABLE)
def test_wilson_matches_newcombes_worked_examples(k: int, n: int, low: float, high: float) -> None:
    interval = wilson(k, n)
    assert interval.low == pytest.approx(low, abs=FOUR_DECIMALS)
    assert interval.high == pytest.approx(high, abs=FOUR_DECIMALS)


@pytest.mark.parametrize("n", [1, 2, 7, 30, 1000])
def test_wilson_at_0_and_100_percent_touches_the_bound_and_is_not_zero_width(n: int) -> None:
    none, every = wilson(0, n), wilson(n, n)
    assert none.low == 0.0 and 0 < none.high < 1
    assert every.high == 1.0 and 0 < every.low < 1
    assert every.low == pytest.approx(1 - none.high, abs=1e-12)


@PROPERTY
@given(st.integers(1, 5000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_agrees_with_scipy(counts: tuple[int, int]) -> None:
    k, n = counts
    reference = scipy.stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
    ours = wilson(k, n)
    assert ours.low == pytest.approx(reference.low, abs=1e-12)
    assert ours.high == pytest.approx(reference.high, abs=1e-12)
    assert ours.low <= k / n <= ours.high


def test_a_higher_confidence_gives_a_wider_interval() -> None:
    assert wilson(30, 100, 0.99).low < wilson(30, 100).low < wilson(30, 100, 0.80).low
    reference = scipy.stats.binomtest(30, 100).proportion_ci(0.99, method="wilson")
    assert wilson(30, 100, 0.99).high == pytest.approx(reference.high, abs=1e-12)


@pytest.mark.parametrize(("k1", "n1", "k2", "n2", "low", "high"), NEWCOMBE_TABLE)
def test_newcombe_matches_the_published_table(
    k1: int, n1: int, k2: int, n2: int, low: float, high: float
) -> None:
    interval = newcombe(k1, n1, k2, n2)
    assert interval.low == pytest.approx(low, abs=FOUR_DECIMALS)
    assert interval.high == pytest.approx(high, abs=FOUR_DECIMALS)
    # Swapping the groups mirrors the interval.
    swapped = newcombe(k2, n2, k1, n1)
    assert (swapped.low, swapped.high) == pytest.approx((-interval.high, -interval.low))


@pytest.mark.parametrize(
    "counts",
    [(0, 0, 1, 1), (2, 1, 1, 1), (-1, 5, 1, 1), (1, 1, 0, 0)],
)
def test_rates_without_trials_or_with_impossible_counts_are_refused(
    counts: tuple[int, int, int, int],
) -> None:
    with pytest.raises(ValueError):
        newcombe(*counts)


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ((56, 70, 48, 80), Verdict.BETTER),  # (0.0524, 0.3339)
        ((48, 80, 56, 70), Verdict.WORSE),
        ((5, 56, 0, 29), Verdict.NOT_ENOUGH_DATA),  # (-0.0381, 0.1926): could be nothing
        ((0, 10, 0, 10), Verdict.NOT_ENOUGH_DATA),
    ],
)
def test_no_verdict_while_the_interval_includes_zero(
    counts: tuple[int, int, int, int], expected: Verdict
) -> None:
    assert verdict(newcombe(*counts)) == expected


def test_an_interval_ending_at_zero_or_missing_is_not_enough_data() -> None:
    assert verdict(Interval(0.0, 0.2)) == Verdict.NOT_ENOUGH_DATA
    assert verdict(Interval(-0.2, 0.0)) == Verdict.NOT_ENOUGH_DATA
    assert verdict(None) == Verdict.NOT_ENOUGH_DATA
    assert str(Verdict.NOT_ENOUGH_DATA) == "not enough data yet"


def recovered_amounts(rng: random.Random, n: int, rate: float) -> list[int]:
    """Money recovered per customer assigned: 0, or one invoice of a few plan prices (cents)."""
    return [rng.choice([900, 2900, 9900]) if rng.random() < rate else 0 for _ in range(n)]


def test_the_bootstrap_is_replayable_from_its_seed() -> None:
    data = random.Random(1)
    a, b = recovered_amounts(data, 300, 0.5), recovered_amounts(data, 300, 0.4)
    first = bootstrap_mean_difference(a, b, random.Random(9), resamples=500)
    assert bootstrap_mean_difference(a, b, random.Random(9), resamples=500) == first
    assert bootstrap_mean_difference(a, b, random.Random(10), resamples=500) != first


def test_the_bootstrap_agrees_with_scipys_percentile_bootstrap() -> None:
    data = random.Random(2)
    a, b = recovered_amounts(data, 2000, 0.55), recovered_amounts(data, 2000, 0.45)
    ours = bootstrap_mean_difference(a, b, random.Random(3), resamples=4000)
    reference = scipy.stats.bootstrap(
        (a, b),
        lambda x, y, axis: x.mean(axis=axis) - y.mean(axis=axis),
        method="percentile",
        n_resamples=4000,
        rng=4,
    ).confidence_interval
    width = reference.high - reference.low
    # Two Monte Carlo runs of 4,000 resamples: the bounds agree to a few percent of the width.
    assert ours.low == pytest.approx(reference.low, abs=0.05 * width)
    assert ours.high == pytest.approx(reference.high, abs=0.05 * width)
    observed = statistics.fmean(a) - statistics.fmean(b)
    assert ours.low < observed < ours.high
    assert verdict(ours) == Verdict.BETTER


def test_the_bootstrap_narrows_with_more_customers_and_keeps_no_difference_open() -> None:
    data = random.Random(5)
    small = bootstrap_mean_difference(
        recovered_amounts(data, 200, 0.5), recovered_amounts(data, 200, 0.5), random.Random(6)
    )
    large = bootstrap_mean_difference(
        recovered_amounts(data, 5000, 0.5), recovered_amounts(data, 5000, 0.5), random.Random(6)
    )
    assert large.high - large.low < (small.high - small.low) / 3
    assert verdict(large) == Verdict.NOT_ENOUGH_DATA  # the same true rate and prices


def test_the_bootstrap_of_constant_groups_is_their_exact_difference() -> None:
    interval = bootstrap_mean_difference([2900] * 10, [900] * 7, random.Random(0), resamples=50)
    assert interval == Interval(2000.0, 2000.0)
    with pytest.raises(ValueError):
        bootstrap_mean_difference([], [1], random.Random(0))
