"""Which charges are an invoice's attempts (Stripe's and ours), and which are the same cards'
attempts elsewhere: read for every decision and every case page."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import and_, bindparam, or_, select, union
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
    invoice_id: Any = bindparam("invoice_id")
    customer_id: Any = bindparam("customer_id")
    amount: Any = bindparam("amount")
    currency: Any = bindparam("currency")
    created: Any = bindparam("created")
    linked_intents = select(InvoicePayment.payment_intent_id).where(
        InvoicePayment.invoice_id == invoice_id
    )
    # Correlated, so it probes the payment_intent_id index once per candidate row; a plain
    # NOT IN (all other invoices' payments) read the whole table on every failure - quadratic
    # over a mirror's life.
    paid_elsewhere = (
        select(InvoicePayment.id)
        .where(InvoicePayment.payment_intent_id == PaymentAttempt.payment_intent_id)
        .where(InvoicePayment.invoice_id != invoice_id)
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
        .exists()
    )
    unlinked_same_amount = and_(
        PaymentAttempt.invoice_id.is_(None),
        PaymentAttempt.customer_id == customer_id,
        PaymentAttempt.amount == amount,
        PaymentAttempt.currency == currency,
        PaymentAttempt.created >= created,
        # Until the invoice was paid (an unpaid one: the largest timestamp there is).
        PaymentAttempt.created <= bindparam("paid"),
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
