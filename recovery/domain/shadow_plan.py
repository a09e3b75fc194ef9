"""Shadow mode's comparison, for one failed invoice: what our retry policy would have done from
the first failure on, and which of Stripe's own retries it would not have made. Pure.

Our plan is `decide_next_retry` asked at the first failure, then again at each of our planned
attempts, each assumed declined the way the last real one was (we cannot know it would have
paid; an upper bound of our attempts, as Stripe's retries are, with Stripe's own retries off).
A Stripe retry is one we would not have made when the policy, asked at that moment with what
was known then, would not charge: the card must never be charged again (a network "do not try
again" code, e.g. Visa's category 1: docs/card-networks.md), the network's cap of attempts on
a card in 30 days was reached, the attempts or the window were used up, or only the customer
can help (authentication, a new card).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from recovery.domain.declines import Decline, DeclineCategory, classify, normalize_brand
from recovery.domain.retry_policy import (
    CAP_PERIOD,
    Attempt,
    RetryContext,
    RetryRules,
    decide_next_retry,
)

NETWORK_RULE = "network_rule"  # a do-not-retry code, or the network's cap of attempts
POLICY = "policy"  # our window, our attempt budget, or waiting for the customer


@dataclass(frozen=True)
class PlannedRetry:
    at: datetime
    reason: str


@dataclass(frozen=True)
class OurPlan:
    retries: tuple[PlannedRetry, ...]
    stopped: str  # why no further retry is planned after the last one


@dataclass(frozen=True)
class Avoided:
    """A Stripe retry our policy would not have made, and why."""

    at: datetime
    decline_code: str | None
    kind: str  # NETWORK_RULE or POLICY
    why: str
    paid: bool = False  # Stripe's retry paid the invoice: one our policy would have missed


def _with_brand(attempt: Attempt) -> Decline:
    decline = attempt.decline or Decline()
    if decline.card_brand is None and attempt.card_brand is not None:
        return replace(decline, card_brand=attempt.card_brand)
    return decline


def code_of(attempt: Attempt) -> str | None:
    decline = attempt.decline or Decline()
    return decline.decline_code or decline.network_decline_code or decline.failure_code


def _on_card(attempt: Attempt, fingerprint: str | None) -> bool:
    return fingerprint is None or attempt.card_fingerprint == fingerprint


def our_plan(
    ctx: RetryContext, rules: RetryRules, first_failure: datetime, until: datetime | None = None
) -> OurPlan:
    """Our retries from `first_failure`, knowing only the attempts made by then, each of ours
    assumed declined like the last real one; none at or after `until` (the invoice was paid,
    voided...)."""
    known = [a for a in ctx.attempts if a.at <= first_failure]
    invoice = sorted((a for a in known if a.on_this_invoice), key=lambda a: a.at)
    if not invoice:
        return OurPlan((), "no failed attempt to start from")
    last = invoice[-1]
    planned: list[PlannedRetry] = []
    now = first_failure
    for _ in range(rules.max_attempts + 1):  # each pass plans one attempt or stops
        decision = decide_next_retry(
            replace(ctx, attempts=known, retries_made=None, card_changed_since_last_failure=False),
            rules,
            now,
        )
        if decision.at is None:
            return OurPlan(tuple(planned), decision.reason)
        if until is not None and decision.at >= until:
            return OurPlan(tuple(planned), "the invoice was settled before our next retry")
        planned.append(PlannedRetry(decision.at, decision.reason))
        known.append(replace(last, at=decision.at, succeeded=False, by="recovery"))
        now = decision.at
    return OurPlan(tuple(planned), "all attempts planned")


def stripe_retries_we_would_not_make(
    ctx: RetryContext, rules: RetryRules, fingerprint: str | None
) -> list[Avoided]:
    """Each of Stripe's retries of this invoice (its attempts after the first) that our policy,
    asked at that moment, would not have made."""
    ordered = sorted(ctx.attempts, key=lambda a: a.at)
    on_invoice = [a for a in ordered if a.on_this_invoice and a.by == "stripe"]
    avoided = []
    for retry in on_invoice[1:]:
        before = [a for a in ordered if a.at < retry.at]
        if any(a.succeeded and a.on_this_invoice for a in before):
            break
        failed = [a for a in before if a.on_this_invoice and not a.succeeded]
        if not failed:
            continue
        last = failed[-1]
        verdict = classify(_with_brand(last))
        cap = rules.network_caps.for_brand(retry.card_brand or last.card_brand)
        window = [a for a in before if _on_card(a, fingerprint) and a.at > retry.at - CAP_PERIOD]
        if len(window) >= cap:
            brand = normalize_brand(retry.card_brand or last.card_brand) or "the network's"
            why = f"the {brand} cap of {cap} attempts on a card in 30 days was reached"
            avoided.append(Avoided(retry.at, code_of(last), NETWORK_RULE, why, retry.succeeded))
            continue
        if verdict.stop_card or verdict.category is DeclineCategory.NEVER_RETRY:
            avoided.append(
                Avoided(retry.at, code_of(last), NETWORK_RULE, verdict.reason, retry.succeeded)
            )
            continue
        if verdict.not_before is not None and retry.at - last.at < verdict.not_before:
            why = f"sooner than the network allows after this decline ({verdict.reason})"
            avoided.append(Avoided(retry.at, code_of(last), NETWORK_RULE, why, retry.succeeded))
            continue
        decision = decide_next_retry(
            replace(ctx, attempts=before, retries_made=None, card_changed_since_last_failure=False),
            rules,
            retry.at,
        )
        if decision.at is None:
            avoided.append(
                Avoided(retry.at, code_of(last), POLICY, decision.reason, retry.succeeded)
            )
    return avoided


def attempts_left_after(plan: OurPlan, moment: datetime) -> int:
    """How many of our planned retries fall after `moment` (when Stripe gave up)."""
    return sum(1 for r in plan.retries if r.at > moment)


def first_failure(attempts: Sequence[Attempt]) -> Attempt | None:
    failed = sorted(
        (a for a in attempts if a.on_this_invoice and not a.succeeded), key=lambda a: a.at
    )
    return failed[0] if failed else None
