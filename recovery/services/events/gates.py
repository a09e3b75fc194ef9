"""Reactions that run only when the state they depend on moved, or is there at all.

Most events re-tell what the mirror already holds (a retried delivery, an older state arriving
late, a renewal that changes nothing a planner reads), or are about customers without a
recovery case. The reactions are idempotent, so running them anyway was correct, but it was
most of the work of an event:

- the reminders planner runs for the recovery cases whose state moved in this event (a case
  moves when its timeline gets a line: opened, a decision, recovered, closed, lost, ...) and
  for the cases of a subscription whose status moved (an ended subscription gets its notice);
  a case moved by a due action or a page is planned before that unit of work commits
  (`sync_moved_cases`, run by the runtime);
- the expiring-card planner runs only when a card's expiry, a default card, or a
  subscription's renewal date or liveness changed in the mirror, for a customer with a notice
  pending;
- a case reaction for an invoice, a customer or a subscription without a case does nothing,
  and is not run;
- the win-back reaction to a live subscription runs only for a customer with a win-back it
  would stop or count as reactivated (every renewal's customer.subscription.updated ran it,
  which made every renewal the slow path).
The checks read the batch's `Facts` (read once per batch, grown as cases open and after every
event whose reactions ran; outside a batch, e.g. for a re-fetched object, they always say yes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from recovery.domain import stripe_objects as so
from recovery.domain.cases import ACTIVE
from recovery.models import MessageStatus, OutboxMessage, RecoveryCase, WinBack
from recovery.runtime import (
    Facts,
    Gated,
    Payload,
    ProcessingContext,
    Reaction,
    Runtime,
    has_moved_cases,
    take_moved_cases,
)
from recovery.services.messaging import expiry, reminders


def customer_of(obj: Payload) -> str | None:
    """The customer an object belongs to (a customer: itself)."""
    if obj.get("object") == "customer":
        oid = obj.get("id")
        return str(oid) if oid else None
    return so.ref(obj.get("customer"))


# ---- is there a case to act on? ----------------------------------------------------------------


def _invoice_has_case(ctx: ProcessingContext, event: Payload, obj: Payload) -> bool:
    return ctx.facts is None or obj.get("id") in ctx.facts.invoices_with_cases


def _customer_has_active_case(ctx: ProcessingContext, event: Payload, obj: Payload) -> bool:
    return ctx.facts is None or customer_of(obj) in ctx.facts.customers_with_active_cases


def _subscription_has_case(ctx: ProcessingContext, event: Payload, obj: Payload) -> bool:
    return ctx.facts is None or obj.get("id") in ctx.facts.subscriptions_with_cases


def _customer_has_win_back(ctx: ProcessingContext, event: Payload, obj: Payload) -> bool:
    facts = ctx.facts
    return not isinstance(facts, BatchFacts) or customer_of(obj) in facts.customers_with_win_backs


def if_invoice_has_case(reaction: Reaction) -> Gated:
    return Gated(_invoice_has_case, reaction)


def if_customer_has_active_case(reaction: Reaction) -> Gated:
    return Gated(_customer_has_active_case, reaction)


def if_subscription_has_case(reaction: Reaction) -> Gated:
    return Gated(_subscription_has_case, reaction)


def if_customer_has_win_back(reaction: Reaction) -> Gated:
    return Gated(_customer_has_win_back, reaction)


# ---- the planners --------------------------------------------------------------------------


def sync_moved_cases(runtime: Runtime, session: Session, case_ids: Sequence[int]) -> None:
    """Make the reminders of these cases match their state now."""
    if not case_ids:
        return
    now = runtime.clock.now()
    cases = session.scalars(
        select(RecoveryCase).where(RecoveryCase.id.in_(case_ids)).order_by(RecoveryCase.id)
    ).all()
    for case in cases:
        reminders.sync_case(session, case, runtime.rules, runtime.settings, now)
    take_moved_cases(session)  # the planner's own timeline lines are not moves to follow


def _ended_with_cases(ctx: ProcessingContext) -> set[str]:
    ended = ctx.changes.subscription_status
    if ctx.facts is None:
        return set(ended)
    return ended & ctx.facts.subscriptions_with_cases


def _reminders_needed(ctx: ProcessingContext, event: Payload, obj: Payload) -> bool:
    return has_moved_cases(ctx.session) or bool(_ended_with_cases(ctx))


def _reminders_for_moved_cases(ctx: ProcessingContext, event: Payload, obj: Payload) -> None:
    ids = take_moved_cases(ctx.session)
    ended = _ended_with_cases(ctx)
    if ended:
        ids.update(
            ctx.session.scalars(
                select(RecoveryCase.id).where(RecoveryCase.subscription_id.in_(sorted(ended)))
            )
        )
    sync_moved_cases(ctx.runtime, ctx.session, sorted(ids))


reminders_for_moved_cases = Gated(_reminders_needed, _reminders_for_moved_cases)


def _expiry_needed(ctx: ProcessingContext, event: Payload, obj: Payload) -> bool:
    if not ctx.changes.expiry_inputs:
        return False
    return ctx.facts is None or customer_of(obj) in ctx.facts.customers_with_expiry_notices


def _expiry_on_card_change(ctx: ProcessingContext, event: Payload, obj: Payload) -> None:
    expiry.on_card_change(ctx, event, obj)


expiry_when_inputs_moved = Gated(_expiry_needed, _expiry_on_card_change)


# ---- a batch's facts -----------------------------------------------------------------------

# The win-backs a customer's new live subscription stops or counts as reactivated
# (services/outreach/win_back.py, on_subscription_started).
_OPEN_WIN_BACK = ("planned", "stopped")


class BatchFacts(Facts):
    """`Facts`, and which customers have an open win-back (read when first asked)."""

    def __init__(
        self,
        read_cases: Callable[[Facts], None],
        read_notices: Callable[[Facts], None],
        read_win_backs: Callable[[], Iterable[str]],
    ) -> None:
        super().__init__(read_cases, read_notices)
        self._read_win_backs: Callable[[], Iterable[str]] | None = read_win_backs
        self._win_backs: set[str] = set()

    @property
    def customers_with_win_backs(self) -> set[str]:
        read, self._read_win_backs = self._read_win_backs, None
        if read is not None:
            self._win_backs.update(read())
        return self._win_backs

    def add_win_back(self, customer_id: str) -> None:
        self._win_backs.add(customer_id)


def read_facts(session: Session, events: Sequence[Payload]) -> BatchFacts:
    """What the batch's events may act on, read when first needed: the cases of its invoices,
    customers and subscriptions (one statement), the customers with a notice pending (one), the
    customers with an open win-back (one)."""
    invoices, customers, subscriptions = set(), set(), set()
    for event in events:
        obj = event["data"]["object"]
        kind, oid = obj.get("object"), obj.get("id")
        if kind == "invoice" and oid:
            invoices.add(str(oid))
        elif kind == "subscription" and oid:
            subscriptions.add(str(oid))
        customer = customer_of(obj)
        if customer:
            customers.add(customer)

    def read_cases(facts: Facts) -> None:
        if invoices or customers or subscriptions:
            where = or_(
                RecoveryCase.invoice_id.in_(sorted(invoices)),
                RecoveryCase.customer_id.in_(sorted(customers)),
                RecoveryCase.subscription_id.in_(sorted(subscriptions)),
            )
            _add_cases(facts, session.execute(_CASE_KEYS.where(where)))

    def read_notices(facts: Facts) -> None:
        if customers:
            facts.add_notices(
                str(c)
                for c in session.scalars(
                    select(OutboxMessage.customer_id)
                    .where(OutboxMessage.customer_id.in_(sorted(customers)))
                    .where(OutboxMessage.status == MessageStatus.PENDING)
                    .where(OutboxMessage.about.like("expiry:%"))
                    .distinct()
                )
            )

    def read_win_backs() -> list[str]:
        if not customers:
            return []
        return [
            str(c)
            for c in session.scalars(
                select(WinBack.customer_id)
                .where(WinBack.customer_id.in_(sorted(customers)))
                .where(WinBack.status.in_(_OPEN_WIN_BACK))
                .distinct()
            )
        ]

    return BatchFacts(read_cases, read_notices, read_win_backs)


_CASE_KEYS = select(
    RecoveryCase.invoice_id,
    RecoveryCase.customer_id,
    RecoveryCase.subscription_id,
    RecoveryCase.status,
)


def grow_facts(
    session: Session, facts: Facts, moved_case_ids: set[int], event: Payload | None = None
) -> None:
    """Cases opened or moved by an event of the batch: what the events after it may act on.
    `event` ran its reactions, which may have opened a win-back for its customer (one ended
    subscription plans one)."""
    if moved_case_ids:
        where = RecoveryCase.id.in_(sorted(moved_case_ids))
        _add_cases(facts, session.execute(_CASE_KEYS.where(where)))
    if event is not None and isinstance(facts, BatchFacts):
        obj = event.get("data", {}).get("object")
        customer = customer_of(obj) if isinstance(obj, Mapping) else None
        if customer:
            facts.add_win_back(customer)


def _add_cases(facts: Facts, rows: Iterable[Any]) -> None:
    active = {s.value for s in ACTIVE}
    for invoice_id, customer_id, subscription_id, status in rows:
        facts.add_case(invoice_id, customer_id, subscription_id, status in active)
