"""A simulated month of dunning: a seeded population of failed renewals played against the
Stripe fake, and the final state of every case, message and Stripe write, to compare runs.

Each customer's fate is scripted up front on the fake (how many of our retries decline, or all
of them; 3-D Secure; a card that needs replacing), so whatever runs the worker - one process,
or processes killed at random moments - faces the same Stripe, and an honest run ends the same.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from recovery.adapters.clock import FrozenClock
from recovery.adapters.stripe_fake import FakeStripeGateway
from recovery.models import ActionStatus, CaseEvent, DueAction, OutboxMessage, RecoveryCase
from recovery.runtime import Runtime
from tests.support.scenario import Story

MONTH = timedelta(days=31)
COUNTRIES = ["DE", "US", "FR", "GB", "NL", "US", "DE", "ES"]
PHONES = {"DE": "+49151", "US": "+1415555", "FR": "+33612", "GB": "+447700", "NL": "+31612"}
PHONES |= {"ES": "+34612"}
# What failed on Stripe's own renewal charge (decline codes: fixtures3.json, docs/card-networks.md).
FIRST_DECLINES = [
    "insufficient_funds",
    "insufficient_funds",
    "generic_decline",
    "do_not_honor",
    "try_again_later",
    "expired_card",
    "authentication_required",
]


@dataclass(frozen=True)
class Fate:
    """One customer's month, fixed before anything runs."""

    country: str
    decline_code: str
    declined_retries: int  # our retries that decline before one succeeds; 99 = never pays
    phone: bool


def fates(n: int, seed: int) -> list[Fate]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        retries = rng.choice([0, 0, 1, 1, 2, 3, 5, 99, 99])
        out.append(
            Fate(
                country=rng.choice(COUNTRIES),
                decline_code=rng.choice(FIRST_DECLINES),
                declined_retries=retries,
                phone=rng.random() < 0.35,
            )
        )
    return out


def _with_phone(story: Story, customer_id: str, phone: str) -> None:
    cus = story.fake.retrieve_customer(customer_id)
    metadata = {**(cus.get("metadata") or {}), "sms_consent": "true"}
    story.fake.put({**cus, "phone": phone, "metadata": metadata})
    story.fake.add_event("customer.updated", story.fake.retrieve_customer(customer_id))


def seed_population(story: Story, n: int, seed: int) -> list[str]:
    """Open the month: every customer's renewal fails on Stripe's own charge, spread over the
    first days. Returns the invoice ids in creation order."""
    invoices = []
    gap = timedelta(hours=2) / max(n, 1)  # a morning's renewal run
    for i, fate in enumerate(fates(n, seed)):
        story.clock.set(story.clock.now() + gap)
        billing = story.customer(country=fate.country, amount=1000 + (i % 9) * 500)
        if fate.phone:
            story.clock.advance(timedelta(seconds=1))
            _with_phone(story, billing.customer, f"{PHONES[fate.country]}{i:06d}"[:13])
        # Stripe's own renewal charge fails first, then our retries meet the scripted rest.
        if fate.decline_code == "authentication_required":
            story.fake.require_authentication(billing.invoice)
        else:
            story.fake.fail_next_payment(billing.invoice, fate.decline_code)
        if fate.declined_retries and fate.decline_code == "authentication_required":
            story.fake.require_authentication(billing.invoice, times=fate.declined_retries)
        elif fate.declined_retries:
            story.fake.fail_next_payment(
                billing.invoice, "insufficient_funds", times=fate.declined_retries
            )
        story.stripe_charges(billing.invoice)
        invoices.append(billing.invoice)
    return invoices


StepRunner = Callable[[datetime], object]


def next_moment(rt: Runtime) -> datetime | None:
    """When something is next runnable: the earliest pending action, or the earliest lease of a
    crashed worker's claim running out (that action becomes claimable just after it)."""
    with rt.db.transaction() as s:
        due = s.scalar(
            select(func.min(DueAction.due_at)).where(DueAction.status == ActionStatus.PENDING)
        )
        lease = s.scalar(
            select(func.min(DueAction.lease_expires_at)).where(
                DueAction.status == ActionStatus.RUNNING
            )
        )
    if lease is not None:
        lease = lease + timedelta(microseconds=1)
    moments = [m for m in (due, lease) if m is not None]
    return min(moments) if moments else None


def run_month(
    story: Story, end: datetime, step: StepRunner, on_step: Callable[[], None] | None = None
) -> int:
    """Walk the clock from due moment to due moment until `end`; at each, `step(now)` runs the
    worker until idle, then Stripe's events from those calls are delivered. Returns the steps."""
    steps = 0
    while True:
        at = next_moment(story.rt)
        if at is None or _aware(at) > end:
            return steps
        if _aware(at) > story.clock.now():
            story.clock.set(_aware(at))
        step(story.clock.now())
        story.deliver()
        steps += 1
        if on_step is not None:
            on_step()


def _aware(at: datetime) -> datetime:
    from datetime import UTC

    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


# ---- comparing runs -------------------------------------------------------------------------


# Timeline entries that log how a result was reached rather than what happened: a webhook that
# beats the worker's commit (as after a kill) re-evaluates once more, corrects a guessed
# attribution, or puts the case into "awaiting authentication" first (so the worker's re-run
# finds it there and logs nothing new). The case's state (awaiting included), attempts and
# messages are compared in full.
BOOKKEEPING = ("decision", "attribution", "awaiting_customer")


def case_outcomes(rt: Runtime) -> dict[str, tuple[Any, ...]]:
    """Per invoice: how its case ended, what it did, what it sent. No timestamps: a crashed
    worker's claims run a lease later, which is the only thing a crash may change."""
    with rt.db.transaction() as s:
        cases = s.scalars(select(RecoveryCase).order_by(RecoveryCase.id)).all()
        events: dict[int, list[str]] = {}
        for case_id, kind in s.execute(
            select(CaseEvent.case_id, CaseEvent.kind)
            .where(CaseEvent.kind.not_in(BOOKKEEPING))
            .order_by(CaseEvent.case_id, CaseEvent.id)
        ):
            events.setdefault(case_id, []).append(kind)
        sent: dict[int, list[tuple[str, str, str, str]]] = {}
        for m in s.scalars(select(OutboxMessage).order_by(OutboxMessage.dedupe_key)):
            if m.case_id is not None:
                sent.setdefault(m.case_id, []).append(
                    (m.dedupe_key, m.channel, m.template, str(m.status))
                )
        return {
            c.invoice_id: (
                str(c.status),
                str(c.awaiting),
                str(c.close_reason),
                str(c.recovered_via),
                c.amount_recovered,
                c.our_attempts,
                tuple(sorted(events.get(c.id, []))),
                tuple(sent.get(c.id, [])),
            )
            for c in cases
        }


def action_outcomes(rt: Runtime) -> dict[str, str]:
    with rt.db.transaction() as s:
        return {
            key: str(status)
            for key, status in s.execute(select(DueAction.dedupe_key, DueAction.status))
        }


def stripe_effects(fake: FakeStripeGateway) -> dict[str, int]:
    """Idempotency key of every write -> how many requests carried it (replays included)."""
    counts: dict[str, int] = {}
    for request in fake.requests:
        if request.idempotency_key is not None:
            counts[request.idempotency_key] = counts.get(request.idempotency_key, 0) + 1
    return counts


def charges_per_invoice(fake: FakeStripeGateway) -> dict[str, int]:
    """Charges Stripe actually attempted on each invoice (attempt_count)."""
    return {oid: int(inv["attempt_count"]) for oid, inv in fake.store["invoice"].items()}


def new_story(rt: Runtime, clock: FrozenClock, start: datetime) -> Story:
    clock.set(start)
    fake = FakeStripeGateway(clock=clock)
    rt.gateway = fake
    return Story(rt, fake, clock)
