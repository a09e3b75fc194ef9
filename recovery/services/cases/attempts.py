"""Which charges are an invoice's attempts (Stripe's and ours), and which are the same cards'
attempts elsewhere: read for every decision and every case page."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from sqlalchemy import (
    BigInteger,
    Integer,
    String,
    Table,
    and_,
    any_,
    bindparam,
    func,
    or_,
    select,
    true,
    union,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, aliased

from recovery.domain.stripe_objects.fields import MAX_TIMESTAMP
from recovery.models import Invoice, InvoicePayment, PaymentAttempt, RecoveryCase


def attempts_for(session: Session, case: RecoveryCase, invoice: Invoice) -> list[PaymentAttempt]:
    """Attempts on this invoice. Since API 2025-03-31 a charge no longer names its invoice:
    besides explicit links, a charge of the same customer for the same amount since the
    invoice was created is taken to be this invoice's - but only until the invoice was paid,
    and only until the customer's next invoice for that amount was created (a renewal's
    charges are the renewal's, not the month before's)."""
    return list(session.scalars(_attempts_statement(), attempt_params(case, invoice)))


def attempt_params(case: RecoveryCase, invoice: Invoice) -> dict[str, Any]:
    # The charge that paid it is at most a moment before Stripe marks it paid.
    paid = int(invoice.paid_at.timestamp()) + 60 if invoice.paid_at is not None else None
    return {
        "invoice_id": invoice.id,
        "customer_id": case.customer_id,
        "amount": invoice.amount_due,
        "currency": invoice.currency,
        "created": invoice.created or 0,
        "paid": MAX_TIMESTAMP if paid is None else paid,
    }


@functools.cache
def _attempts_statement() -> Any:
    """Built once, with parameters: run for every decision and every case page, and as a fresh
    statement each time most of its cost was building it."""
    return select(PaymentAttempt).where(PaymentAttempt.id.in_(_attempt_ids()))


@functools.cache
def attempts_and_same_card_statement() -> Any:
    """A decision's attempts: those on the invoice (`on_invoice`), and the same cards' in the
    last CAP_PERIOD elsewhere (the cards tried on it and the current one), in one statement
    (two before, on every decision)."""
    on_invoice = _attempt_ids().cte("on_invoice")
    cards = (
        select(PaymentAttempt.card_fingerprint)
        .where(PaymentAttempt.id.in_(select(on_invoice.c.id)))
        .where(PaymentAttempt.card_fingerprint.is_not(None), PaymentAttempt.card_fingerprint != "")
    )
    since = PaymentAttempt.created >= bindparam("since")
    # Each branch on its own index (see _attempt_ids).
    ids = union(
        select(on_invoice.c.id),
        select(PaymentAttempt.id).where(PaymentAttempt.card_fingerprint.in_(cards), since),
        select(PaymentAttempt.id).where(
            PaymentAttempt.card_fingerprint == bindparam("card_fingerprint"), since
        ),
    )
    return select(
        PaymentAttempt, PaymentAttempt.id.in_(select(on_invoice.c.id)).label("on_invoice")
    ).where(PaymentAttempt.id.in_(ids))


@functools.cache
def _attempt_ids() -> Any:
    return _attempt_ids_of(
        _Given(
            invoice_id=bindparam("invoice_id"),
            customer_id=bindparam("customer_id"),
            amount=bindparam("amount"),
            currency=bindparam("currency"),
            created=bindparam("created"),
            paid=bindparam("paid"),
        )
    )


@dataclass(frozen=True)
class _Given:
    """What the rules of `attempts_for` read of a case and its invoice: parameters for one
    case, or the columns of a round's cases for one statement over them all."""

    invoice_id: Any
    customer_id: Any
    amount: Any
    currency: Any
    created: Any
    paid: Any


def _attempt_ids_of(given: _Given) -> Any:
    invoice_id = given.invoice_id
    customer_id = given.customer_id
    amount = given.amount
    currency = given.currency
    created = given.created
    # Each subquery reads its own table only: the case's columns and the attempt come from
    # the statements around it (correlate_except), in a LATERAL over a round's cases too.
    linked_intents = (
        select(InvoicePayment.payment_intent_id)
        .where(InvoicePayment.invoice_id == invoice_id)
        .correlate_except(InvoicePayment)
    )
    # Correlated, so it probes the payment_intent_id index once per candidate row; a plain
    # NOT IN (all other invoices' payments) read the whole table on every failure - quadratic
    # over a mirror's life.
    paid_elsewhere = (
        select(InvoicePayment.id)
        .where(InvoicePayment.payment_intent_id == PaymentAttempt.payment_intent_id)
        .where(InvoicePayment.invoice_id != invoice_id)
        .correlate_except(InvoicePayment)
        .exists()
    )
    # Another invoice of the customer for the same amount, created after this one and no later
    # than the attempt: the attempt is that invoice's.
    later = aliased(Invoice)
    later_invoice_for_same_amount = (
        select(later.id)
        .where(later.customer_id == customer_id)
        .where(later.id != invoice_id)
        .where(later.amount_due == amount, later.currency == currency)
        .where(later.created > created)
        .where(later.created <= PaymentAttempt.created)
        .correlate_except(later)
        .exists()
    )
    unlinked_same_amount = and_(
        PaymentAttempt.invoice_id.is_(None),
        PaymentAttempt.customer_id == customer_id,
        PaymentAttempt.amount == amount,
        PaymentAttempt.currency == currency,
        PaymentAttempt.created >= created,
        # Until the invoice was paid (an unpaid one: the largest timestamp there is).
        PaymentAttempt.created <= given.paid,
        or_(
            PaymentAttempt.payment_intent_id.is_(None),
            ~paid_elsewhere,
        ),
        ~later_invoice_for_same_amount,
    )
    # Three branches, each on its own index (invoice, payment intent, customer), as a UNION:
    # written as one OR, PostgreSQL read all 300k charges of bench/dashboard_scale.py per case.
    return union(
        select(PaymentAttempt.id).where(PaymentAttempt.invoice_id == invoice_id),
        select(PaymentAttempt.id).where(PaymentAttempt.payment_intent_id.in_(linked_intents)),
        select(PaymentAttempt.id).where(unlinked_same_amount),
    )


_ATTEMPTS = cast(Table, PaymentAttempt.__table__)

# Each case's part of `attempts_of_cases`: its own invoice's rules, one array element a case.
_CASE_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("case_id", Integer()),
    ("invoice_id", String()),
    ("customer_id", String()),
    ("amount", BigInteger()),
    ("currency", String()),
    ("created", BigInteger()),
    ("paid", BigInteger()),
)


class AttemptRow(Protocol):
    """What a decision reads of a charge: a PaymentAttempt, or its row as read without the ORM
    (`attempts_of_cases`: a round's hundreds of charges, only ever read)."""

    @property
    def id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def created(self) -> int | None: ...
    @property
    def version_ts(self) -> int | None: ...
    @property
    def payment_method_id(self) -> str | None: ...
    @property
    def card_fingerprint(self) -> str | None: ...
    @property
    def card_brand(self) -> str | None: ...
    @property
    def card_funding(self) -> str | None: ...
    @property
    def failure_code(self) -> str | None: ...
    @property
    def decline_code(self) -> str | None: ...
    @property
    def advice_code(self) -> str | None: ...
    @property
    def network_advice_code(self) -> str | None: ...
    @property
    def network_decline_code(self) -> str | None: ...
    @property
    def outcome_type(self) -> str | None: ...
    @property
    def outcome_reason(self) -> str | None: ...


def attempts_of_cases(
    session: Session,
    cases: Sequence[tuple[RecoveryCase, Invoice]],
    card_fingerprints: Mapping[int, str | None],
    since: int,
) -> dict[int, tuple[list[AttemptRow], list[AttemptRow]]]:
    """PostgreSQL: `attempts_and_same_card_statement` for a round's cases (by case id: the
    attempts on its invoice, and its cards' attempts since `since` elsewhere) in two statements,
    where it took one a case: the invoices' attempts in one (each case's rules joined LATERAL
    over its parameters as arrays), then all their cards' attempts in one. `card_fingerprints`:
    each case's current card's. The charges as rows, not ORM objects: loading them as objects
    was most of the reads' cost (py-spy), and a row is the database's now, where an object
    the session held already would keep what it had."""
    rows = [{"case_id": case.id, **attempt_params(case, invoice)} for case, invoice in cases]
    arrays = {f"u_{name}": [row[name] for row in rows] for name, _ in _CASE_COLUMNS}
    on_invoice: dict[int, dict[str, AttemptRow]] = {case.id: {} for case, _ in cases}
    for row in session.execute(_on_invoices_statement(), arrays):
        on_invoice[row.case_id][row.id] = cast(AttemptRow, row)
    # ('' is no fingerprint, as NULL is: it names no card)
    cards_of: dict[int, set[str]] = {}
    for case_id, found in on_invoice.items():
        cards_of[case_id] = {a.card_fingerprint for a in found.values() if a.card_fingerprint}
        current = card_fingerprints.get(case_id)
        if current:
            cards_of[case_id].add(current)
    cards = sorted(set().union(*cards_of.values()))
    by_card: dict[str, list[AttemptRow]] = {}
    if cards:
        for row in session.execute(_same_cards_statement(), {"cards": cards, "since": since}):
            by_card.setdefault(row.card_fingerprint or "", []).append(cast(AttemptRow, row))
    return {
        case_id: (
            list(found.values()),
            [
                attempt
                for card in sorted(cards_of[case_id])
                for attempt in by_card.get(card, ())
                if attempt.id not in found
            ],
        )
        for case_id, found in on_invoice.items()
    }


@functools.cache
def _on_invoices_statement() -> Any:
    arrays = [bindparam(f"u_{name}", type_=ARRAY(type_)) for name, type_ in _CASE_COLUMNS]
    given = func.unnest(*arrays).table_valued(*(name for name, _ in _CASE_COLUMNS))
    given = given.render_derived().alias("given")
    ids = _attempt_ids_of(
        _Given(
            invoice_id=given.c.invoice_id,
            customer_id=given.c.customer_id,
            amount=given.c.amount,
            currency=given.c.currency,
            created=given.c.created,
            paid=given.c.paid,
        )
    ).lateral("ids")
    # (aliased: the rules' own payment_attempts stay theirs, not correlated to this one)
    attempt = _ATTEMPTS.alias("attempt")
    return (
        select(given.c.case_id, *attempt.c)
        .select_from(given)
        .join(ids, true())
        .join(attempt, attempt.c.id == ids.c.id)
    )


@functools.cache
def _same_cards_statement() -> Any:
    return select(*_ATTEMPTS.c).where(
        _ATTEMPTS.c.card_fingerprint == any_(bindparam("cards", type_=ARRAY(String()))),
        _ATTEMPTS.c.created >= bindparam("since", type_=BigInteger()),
    )
