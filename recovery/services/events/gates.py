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
  which made every renewal the slow path);
- a customer's metadata contacts are synced only when the event names some or the customer
  has some to keep or remove (every customer.created and customer.updated ran it: 3
  statements, and the one-event path, for the customers - nearly all - with none);
- a subscription's update re-steers the customer's active cases only when it changed the
  card Stripe will charge (its default card): that is all a decision reads of a subscription
  (services/cases/evidence.py), where every past_due update of a failure re-steered them.
The checks read the batch's `Facts` (read once per batch, grown as cases open and after every
event whose reactions ran; outside a batch, e.g. for a re-fetched object, they always say yes).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import Integer, String, bindparam, literal, or_, select, union_all
from sqlalchemy import event as sa_event
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session

from recovery.db import dialect_of, in_list
from recovery.domain import stripe_objects as so
from recovery.domain.cases import ACTIVE
from recovery.domain.outreach import metadata_contacts
from recovery.models import AccountContact, MessageStatus, OutboxMessage, RecoveryCase, WinBack
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
from recovery.services.cases.reactions import note_reevaluation, reevaluate_deferred
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


def _card_moved_for_active_case(ctx: ProcessingContext, event: Payload, obj: Payload) -> bool:
    if ctx.facts is None:
        return True
    changes = ctx.changes
    return (changes.default_card or changes.cards) and _customer_has_active_case(ctx, event, obj)


def _contacts_to_sync(ctx: ProcessingContext, event: Payload, obj: Payload) -> bool:
    """The event's customer names metadata contacts, or has some that may have to go."""
    facts = ctx.facts
    if not isinstance(facts, BatchFacts) or metadata_contacts(_metadata(obj)):
        return True
    return customer_of(obj) in facts.customers_with_metadata_contacts


def _metadata(obj: Payload) -> Payload | None:
    metadata = obj.get("metadata")
    return metadata if isinstance(metadata, dict) else None


def _invoice_update_steers(ctx: ProcessingContext, event: Payload, obj: Payload) -> bool:
    """An update of an invoice with a case steers it - unless its re-evaluation is noted
    instead (`_noted_instead`)."""
    return _invoice_has_case(ctx, event, obj) and not _noted_instead(ctx, event, obj)


def _invoice_failure_steers(ctx: ProcessingContext, event: Payload, obj: Payload) -> bool:
    """A failure opens or steers the invoice's case - unless its re-evaluation is noted instead
    (`_noted_instead`): Stripe's every retry of the invoice sends one."""
    return not _noted_instead(ctx, event, obj)


def _noted_instead(ctx: ProcessingContext, event: Payload, obj: Payload) -> bool:
    """In a batch, when the invoice's case is active, the invoice still owed and the case's
    re-evaluation can be noted for later (services/cases/reactions.py): noting it is all the
    case reaction would do, so it is noted here and the event is written with the batch's
    mirror-only ones (an invoice's failure sends an update and a failure with every attempt;
    each took the one-event path to note what the failure's other events note too)."""
    facts = ctx.facts
    if not isinstance(facts, BatchFacts) or not _still_owed(obj):
        return False
    found = facts.active_case_of_invoice(str(obj.get("id")))
    if found is None:
        return False
    case_id, customer_id = found
    return note_reevaluation(ctx.session, case_id, customer_id, event)


def _still_owed(obj: Payload) -> bool:
    """Open with money left to pay: an invoice a case is steered on, not closed on (as the
    reaction tells it, `reactions._settled`; anything else runs the reaction)."""
    remaining = obj.get("amount_remaining")
    return obj.get("status") == "open" and isinstance(remaining, int) and remaining > 0


def if_invoice_has_case(reaction: Reaction) -> Gated:
    return Gated(_invoice_has_case, reaction)


def if_customer_has_active_case(reaction: Reaction) -> Gated:
    return Gated(_customer_has_active_case, reaction)


def if_subscription_has_case(reaction: Reaction) -> Gated:
    return Gated(_subscription_has_case, reaction)


def if_customer_has_win_back(reaction: Reaction) -> Gated:
    return Gated(_customer_has_win_back, reaction)


def if_invoice_update_steers(reaction: Reaction) -> Gated:
    """For `on_invoice_updated` on invoice.updated (see `_invoice_update_steers`)."""
    return Gated(_invoice_update_steers, reaction)


def if_invoice_failure_steers(reaction: Reaction) -> Gated:
    """For `on_invoice_failure` on invoice.payment_failed (see `_invoice_failure_steers`)."""
    return Gated(_invoice_failure_steers, reaction)


def if_card_moved_for_active_case(reaction: Reaction) -> Gated:
    """For a subscription's update: its default card changed, and the customer has an active
    case."""
    return Gated(_card_moved_for_active_case, reaction)


def if_metadata_contacts(reaction: Reaction) -> Gated:
    """For the metadata contacts' sync (services/outreach/contacts.py, `on_customer`)."""
    return Gated(_contacts_to_sync, reaction)


# ---- the planners --------------------------------------------------------------------------


def sync_moved_cases(runtime: Runtime, session: Session, case_ids: Sequence[int]) -> None:
    """Make the reminders of these cases match their state now, together
    (`reminders.sync_cases`: one statement per table where it was one per case)."""
    if not case_ids:
        return
    now = runtime.clock.now()
    cases = _cases(session, case_ids)
    reminders.sync_cases(session, cases, runtime.rules, runtime.settings, now)
    take_moved_cases(session)  # the planner's own timeline lines are not moves to follow


def _cases(session: Session, case_ids: Sequence[int]) -> list[RecoveryCase]:
    """The cases by id, in id order: those the unit of work holds already (the usual: it just
    moved them) from the session, the others in one statement."""
    held: dict[int, RecoveryCase] = {}
    for case_id in case_ids:
        found = session.identity_map.get(Session.identity_key(RecoveryCase, case_id))
        if isinstance(found, RecoveryCase):
            held[case_id] = found
    missing = sorted(set(case_ids) - held.keys())
    if missing:
        held.update((c.id, c) for c in session.scalars(_CASES_BY_ID, {"ids": missing}))
    return [held[case_id] for case_id in sorted(held)]


_CASES_BY_ID = select(RecoveryCase).where(RecoveryCase.id.in_(bindparam("ids", expanding=True)))


# The statuses in which a lost case's subscription has ended (reminders._ended): a move to any
# other (a renewal's past_due, active again) changes nothing the planner reads.
_ENDED = frozenset(("canceled", "incomplete_expired", "unpaid"))


def _ended_with_cases(ctx: ProcessingContext, obj: Payload) -> set[str]:
    ended = set(ctx.changes.subscription_status)
    if obj.get("object") == "subscription" and obj.get("status") not in _ENDED:
        ended.discard(str(obj.get("id")))  # it moved to this event's state: not an ending
    if ctx.facts is None:
        return ended
    return ended & ctx.facts.subscriptions_with_cases


def _reminders_needed(ctx: ProcessingContext, event: Payload, obj: Payload) -> bool:
    return has_moved_cases(ctx.session) or bool(_ended_with_cases(ctx, obj))


def _reminders_for_moved_cases(ctx: ProcessingContext, event: Payload, obj: Payload) -> None:
    ids = take_moved_cases(ctx.session)
    ended = _ended_with_cases(ctx, obj)
    if ended:
        ids.update(
            ctx.session.scalars(
                select(RecoveryCase.id).where(RecoveryCase.subscription_id.in_(sorted(ended)))
            )
        )
    # A case's noted re-evaluation first: the reminders follow the decision.
    if reevaluate_deferred(ctx.runtime, ctx.session, ids):
        ids.update(take_moved_cases(ctx.session))
    sync_moved_cases(ctx.runtime, ctx.session, sorted(ids))


reminders_for_moved_cases = Gated(_reminders_needed, _reminders_for_moved_cases)


def _expiry_needed(ctx: ProcessingContext, event: Payload, obj: Payload) -> bool:
    if not ctx.changes.expiry_inputs:
        return False
    return ctx.facts is None or customer_of(obj) in ctx.facts.customers_with_expiry_notices


def _expiry_on_card_change(ctx: ProcessingContext, event: Payload, obj: Payload) -> None:
    expiry.on_card_change(ctx, event, obj)
    customer = customer_of(obj)
    if ctx.facts is not None and customer:
        # It may have planned a notice: the batch's later events for the customer must see it
        # (the batch read its notices once, maybe before).
        ctx.facts.add_notices((customer,))


expiry_when_inputs_moved = Gated(_expiry_needed, _expiry_on_card_change)


# ---- a batch's facts -----------------------------------------------------------------------

# The win-backs a customer's new live subscription stops or counts as reactivated
# (services/outreach/win_back.py, on_subscription_started).
_OPEN_WIN_BACK = ("planned", "stopped")


class BatchFacts(Facts):
    """`Facts`, which customers have an open win-back and which have metadata contacts. All are
    read together, by one prepared statement, when the first of them is asked: a batch is often
    a single event (the demo, an inline webhook), and a statement each built anew cost more
    than the event."""

    def __init__(self, read: Callable[[BatchFacts], None]) -> None:
        self._read_all: Callable[[BatchFacts], None] | None = read
        super().__init__(self._read, self._read)
        self._win_backs: set[str] = set()
        self._contacts: set[str] = set()
        self._active_cases: dict[str, tuple[int, str | None]] = {}

    def _read(self, _facts: Facts | None = None) -> None:
        read, self._read_all = self._read_all, None
        if read is not None:
            read(self)

    @property
    def customers_with_win_backs(self) -> set[str]:
        self._read()
        return self._win_backs

    def add_win_back(self, customer_id: str) -> None:
        self._win_backs.add(customer_id)

    @property
    def customers_with_metadata_contacts(self) -> set[str]:
        self._read()
        return self._contacts

    def add_metadata_contacts(self, customer_id: str) -> None:
        self._contacts.add(customer_id)

    def active_case_of_invoice(self, invoice_id: str) -> tuple[int, str | None] | None:
        """The invoice's case (its id and customer) when it is active, as last read."""
        self._read()
        return self._active_cases.get(invoice_id)

    def note_case(
        self, case_id: int, invoice_id: str, customer_id: str | None, active: bool
    ) -> None:
        if active:
            self._active_cases[invoice_id] = (case_id, customer_id)
        else:
            self._active_cases.pop(invoice_id, None)


def read_facts(session: Session, events: Sequence[Payload]) -> BatchFacts:
    """What the batch's events may act on, read when first needed, in one statement: the cases
    of its invoices, customers and subscriptions, the customers with an expiring-card notice
    pending, the customers with an open win-back, the customers with metadata contacts."""
    session.info.pop(_WIN_BACKS_LOADED, None)  # loaded before this batch: in what it reads
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

    def read(facts: BatchFacts) -> None:
        if not (invoices or customers or subscriptions):
            return
        rows = session.execute(
            _facts_statement(dialect_of(session)),
            {
                "invoices": sorted(invoices),
                "customers": sorted(customers),
                "subscriptions": sorted(subscriptions),
            },
        )
        for what, invoice_id, customer_id, subscription_id, status, case_id in rows:
            if what == "case":
                _add_case(facts, case_id, invoice_id, customer_id, subscription_id, status)
            elif what == "notice":
                facts.add_notices((str(customer_id),))
            elif what == "contacts":
                facts.add_metadata_contacts(str(customer_id))
            else:
                facts.add_win_back(str(customer_id))

    return BatchFacts(read)


@functools.cache
def _facts_statement(dialect: str) -> Any:
    # Built once, the lists as parameters (db.in_list): compiled once and reused every batch.
    def invoices(column: Any) -> Any:
        return in_list(column, "invoices", dialect)

    def customers(column: Any) -> Any:
        return in_list(column, "customers", dialect)

    def subscriptions(column: Any) -> Any:
        return in_list(column, "subscriptions", dialect)

    none = literal(None, String)
    no_id = literal(None, Integer)
    cases = select(
        literal("case", String),
        RecoveryCase.invoice_id,
        RecoveryCase.customer_id,
        RecoveryCase.subscription_id,
        RecoveryCase.status,
        RecoveryCase.id,
    ).where(
        or_(
            invoices(RecoveryCase.invoice_id),
            customers(RecoveryCase.customer_id),
            subscriptions(RecoveryCase.subscription_id),
        )
    )
    notices = (
        select(literal("notice", String), none, OutboxMessage.customer_id, none, none, no_id)
        .where(customers(OutboxMessage.customer_id))
        .where(OutboxMessage.status == MessageStatus.PENDING)
        .where(OutboxMessage.about.like("expiry:%"))
        .distinct()
    )
    win_backs = (
        select(literal("win_back", String), none, WinBack.customer_id, none, none, no_id)
        .where(customers(WinBack.customer_id))
        .where(WinBack.status.in_(_OPEN_WIN_BACK))
        .distinct()
    )
    # (A removed one matters only when the metadata names it again: the event says so.)
    contacts = (
        select(literal("contacts", String), none, AccountContact.customer_id, none, none, no_id)
        .where(customers(AccountContact.customer_id))
        .where(AccountContact.source == "metadata", AccountContact.removed_at.is_(None))
        .distinct()
    )
    return union_all(cases, notices, win_backs, contacts)


_CASE_KEYS = select(
    RecoveryCase.id,
    RecoveryCase.invoice_id,
    RecoveryCase.customer_id,
    RecoveryCase.subscription_id,
    RecoveryCase.status,
)


def grow_facts(
    session: Session, facts: Facts, moved_case_ids: set[int], event: Payload | None = None
) -> None:
    """Cases opened or moved by an event of the batch, win-backs its reactions loaded (so
    planned, or stopped: see `_win_back_loaded`) and metadata contacts it synced: what the
    events after it may act on. (Taking
    it that every event whose reactions ran planned a win-back sent the customer's every later
    event in the batch down the slow path.)"""
    if moved_case_ids:
        _add_cases(facts, _case_keys(session, moved_case_ids))
    customers: set[str] = session.info.pop(_WIN_BACKS_LOADED, set())
    if event is not None and isinstance(facts, BatchFacts):
        for customer in customers:
            facts.add_win_back(customer)
        obj = event["data"]["object"]
        named = customer_of(obj)
        if named and obj.get("object") == "customer" and metadata_contacts(_metadata(obj)):
            facts.add_metadata_contacts(named)  # synced: the batch's later events keep them


def _case_keys(session: Session, case_ids: set[int]) -> list[Any]:
    """The moved cases' keys, from the cases the session holds (the event just moved them, and
    its flush is done: `processing._guarded`); those it does not hold, or holds expired (a
    savepoint rolled back), read. A statement per moving event before - 5 % of the webhook
    mix's first pass (bench/event_processing.py)."""
    rows: list[Any] = []
    missing = []
    for case_id in sorted(case_ids):
        case = session.identity_map.get(Session.identity_key(RecoveryCase, case_id))
        if isinstance(case, RecoveryCase) and not (sa_inspect(case).unloaded & _KEY_NAMES):
            rows.append(
                (case.id, case.invoice_id, case.customer_id, case.subscription_id, case.status)
            )
        else:
            missing.append(case_id)
    if missing:
        rows.extend(session.execute(_CASE_KEYS.where(RecoveryCase.id.in_(missing))))
    return rows


_KEY_NAMES = frozenset(("id", "invoice_id", "customer_id", "subscription_id", "status"))
_WIN_BACKS_LOADED = "recovery.batch_win_backs"


@sa_event.listens_for(WinBack, "load")
def _win_back_loaded(target: WinBack, context: Any) -> None:
    """win_back.plan, the only writer of win-backs, loads the row it inserted; so does the
    reaction that stops one. Noted per session for `grow_facts`."""
    if target.customer_id:
        context.session.info.setdefault(_WIN_BACKS_LOADED, set()).add(str(target.customer_id))


def _add_cases(facts: Facts, rows: Iterable[Any]) -> None:
    for case_id, invoice_id, customer_id, subscription_id, status in rows:
        _add_case(facts, case_id, invoice_id, customer_id, subscription_id, status)


_ACTIVE = frozenset(s.value for s in ACTIVE)


def _add_case(
    facts: Facts,
    case_id: int,
    invoice_id: str,
    customer_id: str | None,
    subscription_id: str | None,
    status: str,
) -> None:
    facts.add_case(invoice_id, customer_id, subscription_id, status in _ACTIVE)
    if isinstance(facts, BatchFacts):
        facts.note_case(case_id, invoice_id, customer_id, status in _ACTIVE)
