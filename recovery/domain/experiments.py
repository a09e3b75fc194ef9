"""Experiments: arms, a holdout, who is in which arm, and routing to the winner. Pure.

An experiment splits customers between a holdout (the service leaves them alone, so their
outcome is what Stripe alone achieves) and arms (variants of what the service does). A customer's
place is a point in [0, 1) from a keyed hash of (experiment key, customer id); the holdout owns
[0, holdout) and the arms follow in their order, each owning a stretch as long as its share. So
the same shares always give the same arm, different experiment keys shuffle independently, and the
holdout's stretch never moves even when routing changes the arms' shares.

With `routing = "thompson"` the arms' shares come from Thompson sampling (Thompson 1933; Russo et
al., "A Tutorial on Thompson Sampling", 2018, ch. 3): each arm's recovered / not-recovered counts
give a Beta posterior, and each arm gets the probability that it is the best arm - the share of
customers per-customer Thompson sampling would send it - on top of a floor of `min_share`, while
the holdout keeps its fixed share. That probability is computed, not sampled: the integral of
one arm's density times the other arms' distribution functions (`best_arm_probabilities`). A
customer's arm is recorded when it is first assigned and never changes (the caller records it);
this module only maps a customer to an arm for given shares.

The rules format is in `recovery.domain.experiment_rules`; intervals and verdicts in
`recovery.domain.stats`.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from recovery.domain.offers import OfferKind
from recovery.domain.reminders import CHANNELS, Channel, ReminderStep
from recovery.domain.retry_policy import RetryRules

AppliesTo = Literal["dunning", "cancel_flow"]
RoutingMode = Literal["fixed", "thompson"]
APPLIES_TO: tuple[AppliesTo, ...] = ("dunning", "cancel_flow")
ROUTING_MODES: tuple[RoutingMode, ...] = ("fixed", "thompson")
HOLDOUT = "holdout"  # the holdout's name wherever arms are named; no arm may take it
# Beta(1, 1): uniform before any outcome, so an arm without data is as likely best as any other.
PRIOR_ALPHA = 1.0
PRIOR_BETA = 1.0
# The integration grid of `best_arm_probabilities`: this many points evenly over [0, 1], and as
# many again over each posterior's bulk (its mean +- BULK_SDS standard deviations, where all but
# ~1e-30 of a Beta's mass lies), so a posterior of a million outcomes, a few thousandths wide, is
# as finely resolved as the flat prior. The error is below 1e-5 a share (tests/domain/
# test_experiments.py checks it against scipy's adaptive quadrature); the 10,000 Monte Carlo
# draws used before had a standard error of up to 0.5 points (5e-3) and cost ~10 times the CPU
# (two arms: 31 ms against 2.8 ms).
GRID_POINTS = 1000
BULK_SDS = 12.0


@dataclass(frozen=True)
class DunningOptions:
    """What a dunning arm changes. The defaults are the service's own behaviour."""

    retry_days: tuple[int, ...] | None = None  # days after the case opened; None: our policy
    channels: tuple[Channel, ...] = CHANNELS  # reminders only on these; () sends none
    # Sequences that replace the [reminders] ones of the same name; the others are kept.
    sequences: Mapping[str, tuple[ReminderStep, ...]] = field(default_factory=dict)
    first_reminder_delay_hours: int = 0  # the sequence starts this long after the case opens


@dataclass(frozen=True)
class CancelFlowOptions:
    """What a cancel-flow arm changes: the offers it may show (None: every offer)."""

    offers: frozenset[OfferKind] | None = None


@dataclass(frozen=True)
class Arm:
    name: str
    weight: float  # fixed routing: the arms split (1 - holdout) in proportion to their weights
    options: DunningOptions | CancelFlowOptions


@dataclass(frozen=True)
class Shares:
    """Who gets which share of all customers: the holdout first, then the arms in order."""

    holdout: float
    arms: tuple[tuple[str, float], ...]

    def __getitem__(self, name: str) -> float:
        if name == HOLDOUT:
            return self.holdout
        for arm, share in self.arms:
            if arm == name:
                return share
        raise KeyError(name)

    def as_dict(self) -> dict[str, float]:
        return {HOLDOUT: self.holdout, **dict(self.arms)}


@dataclass(frozen=True)
class Experiment:
    key: str
    applies_to: AppliesTo
    arms: tuple[Arm, ...]
    holdout: float  # share of all customers the service leaves alone
    routing: RoutingMode = "fixed"
    min_share: float = 0.0  # thompson: every arm keeps at least this share of all customers
    active: bool = True  # False: ended - nobody new is assigned, its results stay
    # Set only for the experiment made from [[cancel_flow.variants]]: customers keep the variant
    # that `CancelFlowRules.assign_variant` gave them (see `variant_point`).
    variant_salt: str | None = None

    def arm(self, name: str) -> Arm | None:
        return next((a for a in self.arms if a.name == name), None)

    def fixed_shares(self) -> Shares:
        """The shares before any routing: by weight for fixed routing, equal for thompson (an
        arm without data is as likely best as any other)."""
        rest = 1.0 - self.holdout
        if self.routing == "thompson":
            return Shares(self.holdout, tuple((a.name, rest / len(self.arms)) for a in self.arms))
        total = sum(a.weight for a in self.arms)
        return Shares(self.holdout, tuple((a.name, rest * a.weight / total) for a in self.arms))

    def point(self, customer_id: str) -> float:
        if self.variant_salt is not None:
            total = round(sum(a.weight for a in self.arms))
            return variant_point(self.variant_salt, customer_id, total)
        return assignment_point(self.key, customer_id)

    def assign(self, customer_id: str, shares: Shares | None = None) -> str:
        """The arm (or HOLDOUT) for a customer not yet assigned, under `shares` (default: the
        fixed shares). Deterministic; the caller records it and never asks again."""
        return arm_at(self.point(customer_id), shares or self.fixed_shares())


def assignment_point(key: str, customer_id: str) -> float:
    """A customer's place in [0, 1) for one experiment: BLAKE2b keyed with the experiment key
    (RFC 7693 keyed mode), so two experiments' splits are independent of each other."""
    digest = hashlib.blake2b(customer_id.encode(), key=key.encode(), digest_size=8).digest()
    # 53 bits: every value is exact as a float and the point stays below 1.0.
    return (int.from_bytes(digest, "big") >> 11) / 2.0**53


def variant_point(salt: str, customer_id: str, total_weight: int) -> float:
    """The point of `CancelFlowRules.assign_variant`'s bucket: that method takes sha256(salt:id)
    modulo the total weight; the middle of that bucket, scaled to [0, 1), falls in the same
    variant's stretch when the shares are weight / total, so no customer changes variant."""
    digest = hashlib.sha256(f"{salt}:{customer_id}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % total_weight
    return (bucket + 0.5) / total_weight


def arm_at(point: float, shares: Shares) -> str:
    """The arm whose stretch holds `point`: the holdout owns [0, holdout), then each arm in order
    owns a stretch as long as its share."""
    if point < shares.holdout:
        return HOLDOUT
    edge = shares.holdout
    for name, share in shares.arms:
        edge += share
        if point < edge:
            return name
    # Shares summing to a hair under 1 (floating point): the top belongs to the last arm
    # that gets customers at all.
    return next((name for name, share in reversed(shares.arms) if share > 0), shares.arms[-1][0])


# ---- Thompson sampling --------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcomes:
    """An arm's customers whose outcome is final: recovered (saved) or not. For dunning that is
    the cases opened at least the retry window ago - not every closed case: in the last window's
    worth of cases the recovered ones have closed and the failures not yet, so counting closed
    cases inflates every rate, most for the arm that recovers soonest or got the most recent
    customers (which Thompson routing itself sends to the leader)."""

    recovered: int = 0
    not_recovered: int = 0


@dataclass(frozen=True)
class Posterior:
    arm: str
    recovered: int
    not_recovered: int
    alpha: float
    beta: float
    p_best: float  # probability that this arm's rate is the highest, under the posteriors

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)


@dataclass(frozen=True)
class Reassignment:
    """New shares and the posteriors that caused them: what the routing log records."""

    experiment: str
    shares: Shares
    posteriors: tuple[Posterior, ...]

    def as_log(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment,
            "shares": {name: round(share, 4) for name, share in self.shares.as_dict().items()},
            "posteriors": [
                {
                    "arm": p.arm,
                    "recovered": p.recovered,
                    "not_recovered": p.not_recovered,
                    "alpha": p.alpha,
                    "beta": p.beta,
                    "mean": round(p.mean, 4),
                    "p_best": round(p.p_best, 4),
                }
                for p in self.posteriors
            ],
        }


def thompson_shares(experiment: Experiment, outcomes: Mapping[str, Outcomes]) -> Reassignment:
    """The arms' next shares: `min_share` each, and what is left of (1 - holdout) split by each
    arm's probability of being best under its Beta posterior. `outcomes` has an entry per arm
    with data (a missing arm has none yet). The same counts always give the same shares."""
    if experiment.routing != "thompson":
        raise ValueError(f"experiment {experiment.key} routes fixed shares")
    names = [a.name for a in experiment.arms]
    unknown = sorted(set(outcomes) - set(names))
    if unknown:
        raise ValueError(f"experiment {experiment.key} has no arm {unknown[0]}")
    counts = [outcomes.get(name, Outcomes()) for name in names]
    if any(c.recovered < 0 or c.not_recovered < 0 for c in counts):
        raise ValueError("outcome counts cannot be negative")
    params = [(PRIOR_ALPHA + c.recovered, PRIOR_BETA + c.not_recovered) for c in counts]
    best = best_arm_probabilities(params)
    free = max(0.0, 1.0 - experiment.holdout - experiment.min_share * len(names))
    shares = Shares(
        experiment.holdout,
        tuple((name, experiment.min_share + free * p) for name, p in zip(names, best, strict=True)),
    )
    posteriors = tuple(
        Posterior(name, c.recovered, c.not_recovered, a, b, p)
        for name, c, (a, b), p in zip(names, counts, params, best, strict=True)
    )
    return Reassignment(experiment.key, shares, posteriors)


def best_arm_probabilities(params: Sequence[tuple[float, float]]) -> tuple[float, ...]:
    """For independent Beta(a, b) rates, the probability that each is the highest:
    P_i = integral over [0, 1] of f_i(x) * prod_{j != i} F_j(x) dx (f the density, F the
    distribution function), by the trapezoid rule on a grid fine wherever any density has mass.
    Each F is the running integral of its own f on the same grid, so the P_i sum to 1 up to
    rounding (and are normalised to exactly that). Needs a, b >= 1 (the prior is Beta(1, 1)):
    every density is then finite on [0, 1]."""
    if not params:
        return ()
    if any(a < 1 or b < 1 for a, b in params):
        raise ValueError("Beta parameters below 1 are not supported")
    grid = _grid(params)
    steps = [right - left for left, right in itertools.pairwise(grid)]
    densities = [_beta_density(grid, a, b) for a, b in params]
    cdfs, masses = [], []
    for f in densities:
        running, cdf = 0.0, [0.0]
        for step, left, right in zip(steps, f, f[1:], strict=False):
            running += step * (left + right) / 2
            cdf.append(running)
        masses.append(running)  # the grid's own normalisation: each F ends at exactly 1
        cdfs.append([value / running for value in cdf])
    raw = []
    for i, f in enumerate(densities):
        integrand = [value / masses[i] for value in f]
        for j, cdf in enumerate(cdfs):
            if j != i:
                integrand = [value * below for value, below in zip(integrand, cdf, strict=True)]
        raw.append(
            sum(
                step * (left + right)
                for step, left, right in zip(steps, integrand, integrand[1:], strict=False)
            )
            / 2
        )
    total = sum(raw)
    return tuple(p / total for p in raw)


def _grid(params: Sequence[tuple[float, float]]) -> list[float]:
    points = {k / GRID_POINTS for k in range(GRID_POINTS + 1)}
    for a, b in params:
        mean = a / (a + b)
        sd = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
        low, high = max(0.0, mean - BULK_SDS * sd), min(1.0, mean + BULK_SDS * sd)
        points.update(low + (high - low) * k / GRID_POINTS for k in range(GRID_POINTS + 1))
    return sorted(points)


def _beta_density(grid: Sequence[float], a: float, b: float) -> list[float]:
    log_norm = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    out = []
    for x in grid:
        if (x <= 0.0 and a > 1) or (x >= 1.0 and b > 1):
            out.append(0.0)
            continue
        log_f = log_norm
        if a != 1:
            log_f += (a - 1) * math.log(x)
        if b != 1:
            log_f += (b - 1) * math.log1p(-x)
        out.append(math.exp(log_f))
    return out


# ---- what an arm changes ------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Where one case or cancel session sits: its experiment and its customer's arm. Read once
    per case by the service that acts on it and passed down; `options` is None for the holdout."""

    experiment: str
    arm: str
    options: DunningOptions | CancelFlowOptions | None

    @property
    def holdout(self) -> bool:
        return self.arm == HOLDOUT

    @property
    def dunning(self) -> DunningOptions:
        """The arm's dunning options (the service's own for the holdout, which never uses them)."""
        return self.options if isinstance(self.options, DunningOptions) else DunningOptions()


def placement(experiment: Experiment, arm: str) -> Placement:
    """The placement of a customer recorded in `arm` (an arm the rules no longer list acts as
    the service's own behaviour: its customers were assigned, their results stay)."""
    found = experiment.arm(arm)
    return Placement(experiment.key, arm, found.options if found else None)


def holdout_retry_rules(retry: RetryRules) -> RetryRules:
    """What a holdout case runs under: Stripe's own retries (no charge of ours, `auto_advance`
    left as Stripe has it) and, when the window ends, no end of dunning of ours either - the
    subscription goes where Stripe's own settings take it (docs/stripe.md, Smart Retries)."""
    return replace(retry, retry_owner="stripe", end_of_dunning="leave_past_due")


def arm_sequence(
    options: DunningOptions, name: str, steps: tuple[ReminderStep, ...]
) -> tuple[ReminderStep, ...]:
    """The steps of reminder sequence `name` under a dunning arm: the arm's own sequence of that
    name if it has one, and only on the arm's channels."""
    chosen = options.sequences.get(name, steps)
    return tuple(step for step in chosen if step.channel in options.channels)


def arm_retry(retry: RetryRules, placed: Placement | None) -> tuple[RetryRules, tuple[int, ...]]:
    """The retry rules a case runs under and its fixed schedule (empty: the policy decides)."""
    if placed is None:
        return retry, ()
    if placed.holdout:
        return holdout_retry_rules(retry), ()
    return retry, placed.dunning.retry_days or ()
