"""Who lands in which arm, and Thompson routing toward the better arm."""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Any

import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from recovery.domain.cancel_rules import parse_cancel_flow_rules
from recovery.domain.experiment_rules import parse_experiments
from recovery.domain.experiments import (
    HOLDOUT,
    Arm,
    DunningOptions,
    Experiment,
    Outcomes,
    Shares,
    arm_at,
    assignment_point,
    best_arm_probabilities,
    thompson_shares,
)
from recovery.domain.retry_policy import RetryRules
from recovery.rules import load_rules_data

PROPERTY = settings(max_examples=300, derandomize=True, deadline=None)
CUSTOMERS = [f"cus_{i:06d}" for i in range(10_000)]
ALPHA = 0.001  # a false alarm in one run of a thousand; a fixed id set makes it reproducible


def experiment(
    *names: str,
    holdout: float = 0.1,
    weights: tuple[float, ...] | None = None,
    routing: str = "fixed",
    min_share: float = 0.0,
    key: str = "dunning-q1",
) -> Experiment:
    return Experiment(
        key=key,
        applies_to="dunning",
        arms=tuple(
            Arm(name, weights[i] if weights else 1.0, DunningOptions())
            for i, name in enumerate(names)
        ),
        holdout=holdout,
        routing=routing,  # type: ignore[arg-type]
        min_share=min_share,
    )


# ---- assignment ---------------------------------------------------------------------------------


def test_the_assignment_hash_is_pinned_so_an_upgrade_moves_nobody() -> None:
    # BLAKE2b-64 keyed with the experiment key, top 53 bits. Changing the hash would move
    # customers of a running experiment to another arm.
    assert assignment_point("dunning-q1", "cus_000001") == pytest.approx(0.0553091903, abs=1e-10)
    assert assignment_point("dunning-q2", "cus_000001") != assignment_point(
        "dunning-q1", "cus_000001"
    )


def test_assignment_is_deterministic_and_stable_while_shares_are_unchanged() -> None:
    exp = experiment("smart", "email_only")
    first = [exp.assign(c) for c in CUSTOMERS[:500]]
    again = experiment("smart", "email_only")  # a fresh object: nothing cached
    assert [again.assign(c) for c in CUSTOMERS[:500]] == first
    shares = Shares(0.1, (("smart", 0.45), ("email_only", 0.45)))
    assert [exp.assign(c, shares) for c in CUSTOMERS[:500]] == first


@pytest.mark.parametrize(
    ("names", "holdout", "weights"),
    [
        (("smart", "email_only"), 0.10, None),
        (("smart", "email_only", "day_3_5_7"), 0.20, (3.0, 1.0, 1.0)),
        (("only",), 0.50, None),
        (("a", "b", "c", "d"), 0.0, (1.0, 2.0, 3.0, 4.0)),
    ],
)
def test_assignment_of_10k_customers_fits_the_configured_shares(
    names: tuple[str, ...], holdout: float, weights: tuple[float, ...] | None
) -> None:
    exp = experiment(*names, holdout=holdout, weights=weights)
    shares = exp.fixed_shares().as_dict()
    expected = {name: share * len(CUSTOMERS) for name, share in shares.items() if share > 0}
    counts = Counter(exp.assign(c) for c in CUSTOMERS)
    assert set(counts) == set(expected)
    observed = [counts[name] for name in expected]
    fit = scipy.stats.chisquare(observed, list(expected.values()))
    assert fit.pvalue > ALPHA, (counts, expected)
    # The test has the power to see a 2-point error in the holdout.
    if holdout:
        shifted = dict(expected)
        shifted[HOLDOUT] += 0.02 * len(CUSTOMERS)
        shifted[names[0]] -= 0.02 * len(CUSTOMERS)
        assert scipy.stats.chisquare(observed, list(shifted.values())).pvalue < ALPHA


def test_two_experiments_split_customers_independently() -> None:
    first, second = experiment("a", "b", key="dunning-q1"), experiment("a", "b", key="cancel-q1")
    table = Counter((first.assign(c), second.assign(c)) for c in CUSTOMERS)
    names = [HOLDOUT, "a", "b"]
    contingency = [[table[(x, y)] for y in names] for x in names]
    assert scipy.stats.chi2_contingency(contingency).pvalue > ALPHA


def test_the_holdout_keeps_its_customers_whatever_the_arms_shares() -> None:
    exp = experiment("smart", "email_only", routing="thompson", min_share=0.1)
    before = {c for c in CUSTOMERS if exp.assign(c) == HOLDOUT}
    routed = Shares(0.1, (("smart", 0.8), ("email_only", 0.1)))
    assert {c for c in CUSTOMERS if exp.assign(c, routed) == HOLDOUT} == before
    assert 900 < len(before) < 1100


@PROPERTY
@given(
    holdout=st.floats(0, 0.9),
    raw=st.lists(st.floats(0, 1), min_size=1, max_size=5),
    point=st.floats(0, 1, exclude_max=True),
)
def test_a_point_lands_in_the_holdout_exactly_below_its_share(
    holdout: float, raw: list[float], point: float
) -> None:
    total = sum(raw) or 1.0
    shares = Shares(
        holdout, tuple((f"arm{i}", (1 - holdout) * w / total) for i, w in enumerate(raw))
    )
    name = arm_at(point, shares)
    assert (name == HOLDOUT) == (point < holdout)
    assert name == HOLDOUT or shares[name] > 0 or sum(raw) == 0


def test_variants_read_as_an_experiment_keep_every_customer_in_their_variant() -> None:
    data = load_rules_data(None)
    data["cancel_flow"] = {
        **data["cancel_flow"],
        "experiment_salt": "spring",
        "variants": [
            {"name": "control", "weight": 7, "offers": []},
            {"name": "pause_only", "weight": 13, "offers": ["pause"]},
            {"name": "all", "weight": 80, "offers": ["pause", "discount"]},
        ],
    }
    flow = parse_cancel_flow_rules(data)
    (exp,) = parse_experiments(data, flow, RetryRules()).experiments
    assert exp.key == "cancel_flow.variants:spring" and exp.holdout == 0
    assert [exp.assign(c) for c in CUSTOMERS] == [flow.assign_variant(c).name for c in CUSTOMERS]


# ---- Thompson routing ---------------------------------------------------------------------------


def test_without_data_thompson_splits_the_arms_evenly() -> None:
    exp = experiment("a", "b", "c", holdout=0.1, routing="thompson", min_share=0.05)
    shares = thompson_shares(exp, {}).shares
    assert shares.holdout == 0.1
    for name in ("a", "b", "c"):
        assert shares[name] == pytest.approx(0.3, abs=1e-9)  # computed: no sampling error


def test_thompson_moves_customers_to_a_better_arm_and_never_below_min_share() -> None:
    """Arm b truly recovers 50 %, a 30 % and c 35 %. Every round the customers who arrived are
    routed by the current shares, their outcomes observed, and the shares recomputed."""
    truth = {"a": 0.30, "b": 0.50, "c": 0.35, HOLDOUT: 0.25}
    exp = experiment("a", "b", "c", holdout=0.1, routing="thompson", min_share=0.1)
    world = random.Random(11)
    counts = {name: [0, 0] for name in truth}
    shares = exp.fixed_shares()
    history = [shares]
    for round_ in range(30):
        for i in range(300):
            arm = exp.assign(f"cus_{round_}_{i}", shares)
            counts[arm][0 if world.random() < truth[arm] else 1] += 1
        outcomes = {n: Outcomes(*counts[n]) for n in ("a", "b", "c")}
        reassignment = thompson_shares(exp, outcomes)
        shares = reassignment.shares
        history.append(shares)
    for step in history:
        assert step.holdout == 0.1
        assert min(step["a"], step["b"], step["c"]) >= 0.1
        assert sum(step.as_dict().values()) == pytest.approx(1.0)
    assert history[1]["b"] > history[0]["b"]
    assert history[-1]["b"] == pytest.approx(0.7, abs=0.01)  # all but the floors of a and c
    assert counts["b"][0] + counts["b"][1] > 0.45 * 30 * 300
    log = reassignment.as_log()
    best = next(p for p in log["posteriors"] if p["arm"] == "b")
    assert best["p_best"] > 0.99 and best["alpha"] == 1 + counts["b"][0]


def test_the_same_counts_give_the_same_shares_and_equal_counts_equal_shares() -> None:
    """Monte Carlo gave two arms with the same record different shares, and the same counts
    on another day other shares; the computed probability does neither."""
    exp = experiment("a", "b", "c", routing="thompson", min_share=0.1)
    outcomes = {"a": Outcomes(12, 30), "b": Outcomes(18, 25), "c": Outcomes(18, 25)}
    first = thompson_shares(exp, outcomes)
    assert first == thompson_shares(exp, dict(outcomes))
    assert first.shares["b"] == first.shares["c"] > first.shares["a"]


def test_one_more_recovery_moves_share_toward_that_arm() -> None:
    exp = experiment("a", "b", routing="thompson", min_share=0.1)
    before = thompson_shares(exp, {"a": Outcomes(20, 40), "b": Outcomes(20, 40)}).shares
    after = thompson_shares(exp, {"a": Outcomes(21, 40), "b": Outcomes(20, 40)}).shares
    assert after["a"] > before["a"] == pytest.approx(0.45) and after["b"] < before["b"]


# Posteriors as routing meets them: flat, lopsided, a few thousand outcomes, a million outcomes a
# few thousandths apart (narrow peaks), many arms with some far out of the running.
POSTERIORS = [
    [(1, 1), (1, 1)],
    [(13, 31), (19, 26)],
    [(1, 501), (1, 1)],
    [(501, 1), (1, 1), (2, 2)],
    [(31, 71), (31, 70), (30, 71)],
    [(1e6, 2e6), (1.001e6, 2e6)],
    [(5, 900), (1, 1), (300, 300)],
    [(1, 1), (2, 1), (1, 2), (50, 50), (400, 100)],
    [(247, 446), (187, 292)],
    [(8, 387), (387, 144), (128, 138), (57, 409), (320, 95)],
]


def _quadrature(params: list[tuple[float, float]]) -> list[float]:
    """The same integral by scipy's adaptive quadrature with its own Beta distribution."""
    import scipy.integrate

    out = []
    for i, (a, b) in enumerate(params):
        others = [scipy.stats.beta(c, d) for j, (c, d) in enumerate(params) if j != i]

        def integrand(x: float, a: float = a, b: float = b, others: list[Any] = others) -> float:
            return float(scipy.stats.beta.pdf(x, a, b) * math.prod(o.cdf(x) for o in others))

        sd = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
        low, high = max(0.0, a / (a + b) - 15 * sd), min(1.0, a / (a + b) + 15 * sd)
        out.append(scipy.integrate.quad(integrand, low, high, epsabs=1e-12, limit=500)[0])
    return out


@pytest.mark.parametrize("params", POSTERIORS)
def test_chance_of_being_best_is_the_integral_scipy_computes(
    params: list[tuple[float, float]],
) -> None:
    assert best_arm_probabilities(params) == pytest.approx(_quadrature(params), abs=1e-5)


def test_chance_of_being_best_is_what_thompson_sampling_would_draw() -> None:
    """The share per-customer Thompson sampling sends each arm: what routing did by 10,000
    draws a day before, here with enough draws that the Monte Carlo error is ~0.002."""
    params = [(31.0, 71.0), (36.0, 70.0), (30.0, 81.0)]
    rng, draws, wins = random.Random(3), 60_000, [0, 0, 0]
    for _ in range(draws):
        sampled = [rng.betavariate(a, b) for a, b in params]
        wins[sampled.index(max(sampled))] += 1
    computed = best_arm_probabilities(params)
    for won, p in zip(wins, computed, strict=True):
        assert won / draws == pytest.approx(p, abs=4 * math.sqrt(0.25 / draws))


def test_thompson_refuses_fixed_experiments_and_unknown_arms() -> None:
    with pytest.raises(ValueError, match="fixed"):
        thompson_shares(experiment("a", "b"), {})
    exp = experiment("a", "b", routing="thompson", min_share=0.1)
    with pytest.raises(ValueError, match="no arm c"):
        thompson_shares(exp, {"c": Outcomes(1, 1)})


@st.composite
def thompson_cases(draw: st.DrawFn) -> tuple[Experiment, dict[str, Outcomes]]:
    arms = draw(st.integers(2, 5))
    holdout = draw(st.sampled_from([0.0, 0.05, 0.1, 0.2, 0.5]))
    min_share = draw(st.floats(0.001, (1 - holdout) / arms))
    counts = {
        f"arm{i}": Outcomes(draw(st.integers(0, 500)), draw(st.integers(0, 500)))
        for i in range(arms)
        if draw(st.booleans())
    }
    names = tuple(f"arm{i}" for i in range(arms))
    exp = experiment(*names, holdout=holdout, routing="thompson", min_share=min_share)
    return exp, counts


@PROPERTY
@given(case=thompson_cases())
def test_thompson_shares_sum_to_one_keep_min_share_and_the_holdout(
    case: tuple[Experiment, dict[str, Outcomes]],
) -> None:
    exp, counts = case
    result = thompson_shares(exp, counts)
    shares = result.shares
    assert shares.holdout == exp.holdout
    assert math.isclose(sum(shares.as_dict().values()), 1.0, abs_tol=1e-9)
    assert all(share >= exp.min_share for _, share in shares.arms)
    assert [p.arm for p in result.posteriors] == [a.name for a in exp.arms]
    assert math.isclose(sum(p.p_best for p in result.posteriors), 1.0)
