"""Apply mirrored states to the database, newest state wins, in any arrival order.

Each write first reads the row's version (and the columns reactions depend on) locked
(`FOR UPDATE` on PostgreSQL; SQLite has a single writer), then inserts the row or replaces it
only if the incoming version is newer: two statements for a state that wins, one for a stale
one. Concurrent processors of two events about one object therefore serialize on the row, and
the older one can never commit last and win. What a write changed goes into the event's
`Changes`, so reactions that depend on one kind of state run only when it moved.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.orm import Session

from recovery.db import insert_or_ignore, update_by_key, utcnow_from
from recovery.domain.stripe_objects.attempts import AttemptState
from recovery.domain.stripe_objects.states import (
    CardState,
    CustomerState,
    InvoiceState,
    SubscriptionState,
)
from recovery.models import (
    Customer,
    Invoice,
    InvoicePayment,
    PaymentAttempt,
    PaymentMethod,
    Subscription,
    SubscriptionItem,
)
from recovery.runtime import Changes
from recovery.services.cases import cards

# Within one second Stripe can emit several events for one invoice; when their states differ,
# the one further along its life wins (a paid invoice is never reopened).
_INVOICE_STATUS_RANK = {
    "draft": 0,
    "open": 1,
    "uncollectible": 2,
    "void": 3,
    "paid": 3,
    "deleted": 4,
}
_ATTEMPT_STATUS_RANK = {"pending": 0, "failed": 1, "succeeded": 2}


@dataclass(frozen=True, order=True)
class Version:
    ts: int  # Stripe's event `created`, or the fetch time for state read from the API
    tiebreak: str  # deterministic order for two different states stamped with the same second


def _digest(state: Any) -> str:
    canonical = json.dumps(_plain(state), sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


@functools.cache
def _field_names(cls: type[Any]) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


_LEAVES = (str, int, float, type(None))


def _plain(value: Any) -> Any:
    """`dataclasses.asdict` as JSON sees it (a tuple is an array either way), without its
    deep copy of every leaf, which was a tenth of an event's processing. The digest is stored
    (`version_tiebreak`), so it must stay byte for byte what asdict gave."""
    if isinstance(value, _LEAVES):  # most values: asked first, before the dataclass check
        return value
    if is_dataclass(value) and not isinstance(value, type):
        return {name: _plain(getattr(value, name)) for name in _field_names(type(value))}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def version_of(ts: int, state: Any, rank: int = 0) -> Version:
    return Version(ts, f"{rank:04d}:{_digest(state)}")


def _insert(session: Session, model: type[Any], values: dict[str, Any]) -> bool:
    """Insert unless the primary key exists. True when this call inserted the row."""
    return insert_or_ignore(session, model, values)


# The columns reactions depend on, read with the version: a write reports which of them moved.
WATCHED: dict[Any, tuple[str, ...]] = {
    Customer: ("default_payment_method_id", "default_source_id", "deleted"),
    PaymentMethod: ("customer_id", "exp_month", "exp_year"),
    Subscription: (
        "default_payment_method_id",
        "default_source_id",
        "status",
        "current_period_end",
        "cancel_at_period_end",
    ),
    Invoice: (),
}


@functools.cache
def _locked_row_statement(model: Any) -> Any:
    # Built once per table, values passed as parameters (see recovery.db.insert_or_ignore).
    columns = [model.version_ts, model.version_tiebreak]
    columns += [getattr(model, name) for name in WATCHED[model]]
    return select(*columns).where(model.id == bindparam("oid")).with_for_update()


@dataclass(frozen=True)
class Stored:
    version: Version
    watched: dict[str, Any]


def _locked_row(session: Session, model: Any, oid: str) -> Stored | None:
    row = session.execute(_locked_row_statement(model), {"oid": oid}).first()
    if row is None:
        return None
    return Stored(Version(row[0], row[1]), dict(zip(WATCHED[model], row[2:], strict=True)))


REFETCH_KIND = "stripe.refetch"
_REFETCHABLE = {
    Customer: "customer",
    PaymentMethod: "payment_method",
    Subscription: "subscription",
    Invoice: "invoice",
}


def refetch_later(session: Session, model: Any, oid: str, ts: int) -> None:
    """Two different states stamped with the same second: the tie-break picks one, but only
    Stripe knows which is current. Ask it (a due action re-reads the object and applies it
    stamped with the fetch time, which outranks both)."""
    from recovery.services.work import due_actions

    kind = _REFETCHABLE.get(model)
    if kind is None:
        return
    when = utcnow_from(ts)
    assert when is not None
    due_actions.schedule(
        session,
        kind=REFETCH_KIND,
        subject=f"{kind}:{oid}",
        dedupe_key=f"refetch:{kind}:{oid}:{ts}",
        due_at=when,
        now=when,
        payload={"object": kind, "id": oid},
    )


@dataclass(frozen=True)
class Written:
    """A state that won: `moved` names the watched columns it changed (all of them when the
    row is new)."""

    moved: frozenset[str]


def moved_columns(model: Any, stored: Stored | None, values: dict[str, Any]) -> frozenset[str]:
    if stored is None:
        return frozenset(WATCHED[model])
    return frozenset(k for k, old in stored.watched.items() if values.get(k) != old)


def _upsert_versioned(
    session: Session, model: Any, oid: str, values: dict[str, Any], version: Version
) -> Written | None:
    """Write `values` if `version` is newer than what the row holds. None when not written."""
    cards.forget(session)  # a card or a customer read before may be another now
    values = {**values, "version_ts": version.ts, "version_tiebreak": version.tiebreak}
    stored = _locked_row(session, model, oid)
    if stored is None:
        if _insert(session, model, {"id": oid, **values}):
            return Written(moved_columns(model, None, values))
        # Another transaction inserted it since we looked (PostgreSQL waited for its commit).
        stored = _locked_row(session, model, oid)
        assert stored is not None
    if is_tie(stored.version, version):
        refetch_later(session, model, oid, version.ts)
    if version <= stored.version:
        return None
    update_by_key(session, model, oid, values)
    return Written(moved_columns(model, stored, values))


def is_tie(stored: Version, incoming: Version) -> bool:
    """Two different states stamped with the same second: only Stripe knows which is current."""
    return stored.ts == incoming.ts and stored.tiebreak != incoming.tiebreak


def note(changes: Changes | None, table: str, oid: str, moved: frozenset[str] | None) -> None:
    """Record a written row (`moved`: its watched columns that changed) in the event's changes."""
    if changes is None or moved is None:
        return
    changes.mirrored.add((table, oid))
    if table == "payment_methods" and moved:
        changes.cards = True
    if moved & {"default_payment_method_id", "default_source_id", "deleted"}:
        changes.default_card = True
    if table == "subscriptions":
        if moved & {"status", "current_period_end", "cancel_at_period_end"}:
            changes.renewal = True
        if "status" in moved:
            changes.subscription_status.add(oid)


# ---- states as rows -------------------------------------------------------------------------


@dataclass(frozen=True)
class Versioned:
    """A state ready to be written: the row's values and the version that orders it."""

    model: Any
    oid: str
    values: dict[str, Any]
    version: Version
    items: tuple[dict[str, Any], ...] | None = None  # a subscription's items, replaced with it
    links: tuple[str, ...] = ()  # an invoice's PaymentIntents

    @property
    def table(self) -> str:
        return str(self.model.__tablename__)


def customer_write(state: CustomerState, ts: int) -> Versioned:
    values = {
        "email": state.email,
        "name": state.name,
        "phone": state.phone,
        "preferred_locales": list(state.preferred_locales),
        "address_country": state.address_country,
        "default_payment_method_id": state.default_payment_method_id,
        "default_source_id": state.default_source_id,
        "metadata_": dict(state.metadata),
        "deleted": state.deleted,
        "created": state.created,
    }
    # A deletion is final: rank it above every live state stamped with the same second.
    return Versioned(Customer, state.id, values, version_of(ts, state, 1 if state.deleted else 0))


def card_write(state: CardState, ts: int) -> Versioned:
    values = {
        "customer_id": state.customer_id,
        "type": state.type,
        "brand": state.brand,
        "last4": state.last4,
        "exp_month": state.exp_month,
        "exp_year": state.exp_year,
        "funding": state.funding,
        "fingerprint": state.fingerprint,
        "country": state.country,
        "wallet": state.wallet,
        "created": state.created,
    }
    return Versioned(PaymentMethod, state.id, values, version_of(ts, state))


def subscription_write(state: SubscriptionState, ts: int) -> Versioned:
    values = {
        "customer_id": state.customer_id,
        "status": state.status,
        "collection_method": state.collection_method,
        "currency": state.currency,
        "default_payment_method_id": state.default_payment_method_id,
        "default_source_id": state.default_source_id,
        "cancel_at_period_end": state.cancel_at_period_end,
        "cancel_at": utcnow_from(state.cancel_at),
        "canceled_at": utcnow_from(state.canceled_at),
        "ended_at": utcnow_from(state.ended_at),
        "cancellation_reason": state.cancellation_reason,
        "cancellation_feedback": state.cancellation_feedback,
        "pause_behavior": state.pause_behavior,
        "pause_resumes_at": utcnow_from(state.pause_resumes_at),
        "current_period_start": utcnow_from(state.current_period_start),
        "current_period_end": utcnow_from(state.current_period_end),
        "trial_end": utcnow_from(state.trial_end),
        "latest_invoice_id": state.latest_invoice_id,
        "metadata_": dict(state.metadata),
        "created": state.created,
    }
    items = tuple(
        {
            "id": item.id,
            "subscription_id": state.id,
            "price_id": item.price_id,
            "product_id": item.product_id,
            "unit_amount": item.unit_amount,
            "quantity": item.quantity,
            "currency": item.currency,
            "interval": item.interval,
            "interval_count": item.interval_count,
            "current_period_start": utcnow_from(item.current_period_start),
            "current_period_end": utcnow_from(item.current_period_end),
        }
        for item in state.items
    )
    rank = 1 if state.status == "canceled" else 0  # cancelled is terminal
    return Versioned(Subscription, state.id, values, version_of(ts, state, rank), items)


def invoice_write(state: InvoiceState, ts: int) -> Versioned:
    values = {
        "customer_id": state.customer_id,
        "subscription_id": state.subscription_id,
        "status": state.status,
        "currency": state.currency,
        "amount_due": state.amount_due,
        "amount_paid": state.amount_paid,
        "amount_remaining": state.amount_remaining,
        "attempt_count": state.attempt_count,
        "attempted": state.attempted,
        "next_payment_attempt": utcnow_from(state.next_payment_attempt),
        "hosted_invoice_url": state.hosted_invoice_url,
        "billing_reason": state.billing_reason,
        "collection_method": state.collection_method,
        "auto_advance": state.auto_advance,
        "paid_at": utcnow_from(state.paid_at),
        "period_end": utcnow_from(state.period_end),
        "created": state.created,
    }
    rank = _INVOICE_STATUS_RANK.get(state.status or "", 0) * 1000 + min(state.attempt_count, 999)
    version = version_of(ts, state, rank)
    return Versioned(Invoice, state.id, values, version, links=tuple(state.payment_intent_ids))


def replace_items(
    session: Session, subscription_ids: list[str], items: list[dict[str, Any]]
) -> None:
    # Core statements on the table, built once: the ORM's bulk DELETE and INSERT paths cost
    # more than the rows (two of them for every subscription update).
    session.execute(_DELETE_ITEMS, {"ids": subscription_ids})
    if items:
        session.execute(_INSERT_ITEMS, items)


_ITEMS: Any = SubscriptionItem.__table__
_DELETE_ITEMS = delete(_ITEMS).where(_ITEMS.c.subscription_id.in_(bindparam("ids", expanding=True)))
_INSERT_ITEMS = insert(_ITEMS)


def apply(session: Session, write: Versioned, changes: Changes | None = None) -> bool:
    """Write one state if it is the newest, in the caller's transaction. True when written."""
    for intent in write.links:
        link_invoice_payment(session, write.oid, intent)
    written = _upsert_versioned(session, write.model, write.oid, write.values, write.version)
    note(changes, write.table, write.oid, written.moved if written else None)
    if written is not None and write.items is not None:
        replace_items(session, [write.oid], list(write.items))
    return written is not None


def apply_customer(
    session: Session, state: CustomerState, ts: int, changes: Changes | None = None
) -> bool:
    return apply(session, customer_write(state, ts), changes)


def apply_card(session: Session, state: CardState, ts: int, changes: Changes | None = None) -> bool:
    return apply(session, card_write(state, ts), changes)


def apply_subscription(
    session: Session, state: SubscriptionState, ts: int, changes: Changes | None = None
) -> bool:
    return apply(session, subscription_write(state, ts), changes)


def link_invoice_payment(session: Session, invoice_id: str, payment_intent_id: str) -> None:
    values = {"invoice_id": invoice_id, "payment_intent_id": payment_intent_id}
    insert_or_ignore(session, InvoicePayment, values, ["invoice_id", "payment_intent_id"])


def apply_invoice(
    session: Session, state: InvoiceState, ts: int, changes: Changes | None = None
) -> bool:
    return apply(session, invoice_write(state, ts), changes)


ATTEMPT_FIELDS = (
    "payment_intent_id",
    "invoice_id",
    "customer_id",
    "payment_method_id",
    "amount",
    "currency",
    "failure_code",
    "failure_message",
    "decline_code",
    "outcome_type",
    "outcome_reason",
    "network_status",
    "advice_code",
    "network_advice_code",
    "network_decline_code",
    "card_brand",
    "card_last4",
    "card_funding",
    "card_fingerprint",
    "created",
)


def _merge_field(old: Any, new: Any) -> Any:
    # A charge and its PaymentIntent's error describe one immutable attempt, each with a subset
    # of the fields: union them. Should two sources ever disagree, the larger value wins so the
    # result does not depend on arrival order.
    if old is None or old == 0:
        return new if new is not None else old
    if new is None or new == 0 or new == old:
        return old
    return max(old, new, key=str)


def attempt_values(state: AttemptState) -> dict[str, Any]:
    return {name: getattr(state, name) for name in ATTEMPT_FIELDS}


def merged_attempt(
    stored: dict[str, Any], new_values: dict[str, Any], status: str, ts: int
) -> dict[str, Any]:
    """A stored attempt (`ATTEMPT_FIELDS`, status, version_ts) and what one more source says."""
    merged = {name: _merge_field(stored[name], new_values[name]) for name in ATTEMPT_FIELDS}
    old_status = str(stored["status"])
    newer = _ATTEMPT_STATUS_RANK.get(status, 0) > _ATTEMPT_STATUS_RANK.get(old_status, 0)
    merged["status"] = status if newer else old_status
    merged["version_ts"] = max(int(stored["version_ts"]), ts)
    return merged


@functools.cache
def _locked_attempt_statement() -> Any:
    columns = [getattr(PaymentAttempt, n) for n in (*ATTEMPT_FIELDS, "status", "version_ts")]
    return select(*columns).where(PaymentAttempt.id == bindparam("oid")).with_for_update()


def apply_attempt(
    session: Session,
    state: AttemptState,
    ts: int,
    changes: Changes | None = None,
    *,
    with_card: bool = True,
) -> None:
    """The attempt merged into what is stored of it (and, unless told otherwise, its card and
    its invoice's link to its PaymentIntent)."""
    if with_card:
        if state.card is not None:
            apply_card(session, state.card, ts, changes)
        if state.invoice_id and state.payment_intent_id:
            link_invoice_payment(session, state.invoice_id, state.payment_intent_id)
    new_values = attempt_values(state)
    values = {**new_values, "status": state.status, "version_ts": ts, "version_tiebreak": ""}
    if changes is not None:
        changes.mirrored.add(("payment_attempts", state.id))
    if _insert(session, PaymentAttempt, {"id": state.id, **values}):
        return
    merge_attempt(session, state.id, new_values, state.status, ts)


def merge_attempt(
    session: Session, oid: str, new_values: dict[str, Any], status: str, ts: int
) -> None:
    """Merge into the stored attempt, its row locked."""
    row = session.execute(_locked_attempt_statement(), {"oid": oid}).one()
    stored = dict(zip((*ATTEMPT_FIELDS, "status", "version_ts"), row, strict=True))
    update_by_key(session, PaymentAttempt, oid, merged_attempt(stored, new_values, status, ts))
