"""The shadow report: for the invoices that first failed in a period, side by side, what Stripe's
own retries did (the mirror's payment attempts: when, and how each ended) and what we would
have done (our retry policy and reminder sequence from the first failure, `domain.shadow_plan`),
with the Stripe retries our policy would not have made and the invoices Stripe lost while our
plan still had attempts left.

It reads only the mirror (and, where the service was running, the recovery case and its shadow
actions), so it answers the same for a shadow-mode run and for history: `recovery sync` mirrors
an account's last months, `recovery shadow-replay --days 90` then reports on them. Nothing is
written: the replay is the report with the clock set to each invoice's first failure.

Stripe's own emails to customers cannot be read through its API (the Dashboard's "Customer
emails" settings decide them), so the report names them as a setting to compare, not a count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, union
from sqlalchemy.orm import Session

from recovery.db import utcnow_from
from recovery.domain import reminders as reminder_rules
from recovery.domain import shadow_plan
from recovery.domain.business_days import calendar_for, customer_country
from recovery.domain.declines import classify
from recovery.domain.retry_policy import (
    CAP_PERIOD,
    Attempt,
    CardInfo,
    Funding,
    RetryContext,
    RetryRules,
)
from recovery.domain.timezones import customer_timezone
from recovery.models import (
    ActionStatus,
    CaseEvent,
    Customer,
    DueAction,
    Invoice,
    InvoicePayment,
    OutboxMessage,
    PaymentAttempt,
    RecoveryCase,
    Subscription,
)
from recovery.runtime import Runtime
from recovery.services.cases.evidence import attempts_for, decline_of, first_attempt_success_days
from recovery.services.work.shadow import masked, money

FUNDING: dict[str, Funding] = {"credit": "credit", "debit": "debit", "prepaid": "prepaid"}
MAX_DAYS = 366
DEFAULT_LIMIT = 500
STRIPE_EMAILS = (
    "Stripe's own emails to customers are not visible through its API: see Stripe Dashboard > "
    "Billing > Revenue recovery > Emails. With those on and this service live, customers "
    "would get two emails for every failed payment."
)
LOST_INVOICE = ("uncollectible", "void")
ENDED_SUBSCRIPTION = ("canceled", "unpaid", "incomplete_expired")


class BadPeriod(ValueError):
    """The period is not from <= to, or longer than a year."""


def period_of(day_from: date, day_to: date) -> tuple[datetime, datetime]:
    if day_from > day_to:
        raise BadPeriod("from must not be after to")
    if (day_to - day_from).days >= MAX_DAYS:
        raise BadPeriod(f"a period is at most {MAX_DAYS} days")
    start = datetime.combine(day_from, time(0), UTC)
    return start, datetime.combine(day_to, time(0), UTC) + timedelta(days=1)


def _iso(at: datetime | None) -> str | None:
    if at is None:
        return None
    return at.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _parse(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def _failed_invoices(session: Session, start: datetime, end: datetime) -> list[str]:
    """Invoices with a failed attempt in the period, by their own link or their payment's, and
    those a recovery case opened for in it."""
    lo, hi = int(start.timestamp()), int(end.timestamp())
    failed = (
        select(PaymentAttempt.invoice_id, PaymentAttempt.payment_intent_id)
        .where(PaymentAttempt.status == "failed")
        .where(PaymentAttempt.created >= lo, PaymentAttempt.created < hi)
        .subquery()
    )
    ids = union(
        select(failed.c.invoice_id).where(failed.c.invoice_id.is_not(None)),
        select(InvoicePayment.invoice_id).where(
            InvoicePayment.payment_intent_id.in_(select(failed.c.payment_intent_id))
        ),
        select(RecoveryCase.invoice_id).where(
            RecoveryCase.opened_at >= start, RecoveryCase.opened_at < end
        ),
    ).subquery()
    return list(session.scalars(select(ids.c[0])).all())


def _attempt(row: PaymentAttempt, on_invoice: bool, ours: set[str]) -> Attempt:
    return Attempt(
        at=utcnow_from(row.created or row.version_ts) or datetime.min.replace(tzinfo=UTC),
        card_fingerprint=row.card_fingerprint,
        card_brand=row.card_brand,
        decline=None if row.status == "succeeded" else decline_of(row),
        succeeded=row.status == "succeeded",
        by="recovery" if row.id in ours else "stripe",
        on_this_invoice=on_invoice,
    )


def _our_attempt_ids(session: Session, case: RecoveryCase | None) -> set[str]:
    if case is None or case.id is None:
        return set()
    rows = session.scalars(
        select(CaseEvent.data).where(CaseEvent.case_id == case.id, CaseEvent.kind == "our_attempt")
    )
    return {str(d.get("attempt_id")) for d in rows if d.get("attempt_id")}


def _stripe_outcome(
    invoice: Invoice, sub: Subscription | None, case: RecoveryCase | None
) -> tuple[str, datetime | None]:
    if invoice.status == "paid":
        return "recovered", invoice.paid_at
    if invoice.status in LOST_INVOICE or (sub is not None and sub.status in ENDED_SUBSCRIPTION):
        ended = (sub.ended_at or sub.canceled_at) if sub is not None else None
        return "lost", ended or (case.closed_at if case else None)
    if case is not None and case.status == "lost":
        return "lost", case.closed_at
    return "open", None


def _reminders(
    rt: Runtime, zone: str, country: str | None, category: str | None, start: datetime
) -> list[reminder_rules.PlannedReminder]:
    rules = rt.rules.reminders
    if not rules.enabled:
        return []
    steps = rules.sequences.get(reminder_rules.sequence_for(None, category), ())
    deadline = start + timedelta(days=rt.rules.retry.window_days)
    calendar = calendar_for(country) if rt.rules.retry.business_days else None
    return reminder_rules.plan(
        steps,
        started_at=start,
        deadline=deadline,
        zone=zone,
        send_hour=rules.send_hour,
        calendar=calendar,
    )


def _recorded(session: Session, case: RecoveryCase) -> dict[str, Any]:
    """What the running service planned and recorded for the case: its shadow actions (with
    what each would have done) and its messages."""
    actions = session.scalars(
        select(DueAction)
        .where(DueAction.subject == f"case:{case.id}")
        .where(DueAction.status.in_([ActionStatus.SHADOW, ActionStatus.PENDING]))
        .order_by(DueAction.due_at, DueAction.id)
    ).all()
    messages = session.scalars(
        select(OutboxMessage).where(OutboxMessage.case_id == case.id).order_by(OutboxMessage.id)
    ).all()
    return {
        "id": case.id,
        "status": case.status,
        "actions": [
            {"kind": a.kind, "due_at": _iso(a.due_at), "status": a.status, "note": a.shadow_note}
            for a in actions
        ],
        "messages": [
            {
                "channel": m.channel,
                "template": m.template,
                "send_after": _iso(m.send_after),
                "status": m.status,
                "to": masked(m.channel, m.recipient),
            }
            for m in messages
        ],
    }


def invoice_report(
    rt: Runtime, session: Session, invoice: Invoice, rules: RetryRules
) -> dict[str, Any] | None:
    """One invoice, side by side; None when it has no failed attempt to compare."""
    case = session.scalar(select(RecoveryCase).where(RecoveryCase.invoice_id == invoice.id))
    probe = case or RecoveryCase(customer_id=invoice.customer_id, invoice_id=invoice.id)
    rows = sorted(attempts_for(session, probe, invoice), key=lambda r: r.created or 0)
    failed = [r for r in rows if r.status == "failed"]
    if not failed:
        return None
    ours = _our_attempt_ids(session, case)
    first = failed[0]
    first_at = utcnow_from(first.created) or datetime.now(UTC)
    fingerprint = first.card_fingerprint
    elsewhere: Sequence[PaymentAttempt] = []
    if fingerprint:
        since = int((first_at - CAP_PERIOD).timestamp())
        elsewhere = session.scalars(
            select(PaymentAttempt)
            .where(PaymentAttempt.card_fingerprint == fingerprint)
            .where(PaymentAttempt.created >= since)
            .where(PaymentAttempt.id.not_in([r.id for r in rows]))
        ).all()
    customer = session.get(Customer, invoice.customer_id) if invoice.customer_id else None
    country = customer.address_country if customer else None
    locales = list(customer.preferred_locales or []) if customer else []
    zone = customer_timezone(country, locales)
    funding = FUNDING.get(first.card_funding or "", "unknown")
    ctx = RetryContext(
        case_opened_at=first_at,
        attempts=[_attempt(r, True, ours) for r in rows]
        + [_attempt(r, False, ours) for r in elsewhere],
        card=CardInfo(first.card_brand, funding, fingerprint),
        card_changed_since_last_failure=False,
        customer_timezone=zone,
        amount=invoice.amount_due,
        currency=invoice.currency,
        past_success_days=first_attempt_success_days(session, invoice.customer_id, ZoneInfo(zone)),
        customer_country=customer_country(country, locales),
    )
    sub = session.get(Subscription, invoice.subscription_id) if invoice.subscription_id else None
    outcome, ended_at = _stripe_outcome(invoice, sub, case)
    settled = ended_at if outcome == "recovered" else None
    plan = shadow_plan.our_plan(ctx, rules, first_at, until=settled)
    avoided = shadow_plan.stripe_retries_we_would_not_make(ctx, rules, fingerprint)
    stripe_attempts = [a for a in ctx.attempts if a.on_this_invoice and a.by == "stripe"]
    last_stripe = max((a.at for a in stripe_attempts), default=first_at)
    left = shadow_plan.attempts_left_after(plan, last_stripe) if outcome == "lost" else 0
    category = classify(decline_of(first)).category.value
    planned_reminders = [
        r
        for r in _reminders(rt, zone, customer_country(country, locales), category, first_at)
        if settled is None or r.at < settled
    ]
    return {
        "invoice": invoice.id,
        "customer": invoice.customer_id,
        "amount_due": invoice.amount_due,
        "currency": invoice.currency,
        "amount": money(invoice.amount_due, invoice.currency),
        "first_failure_at": _iso(first_at),
        "decline_code": first.decline_code or first.failure_code,
        "decline_category": category,
        "card_brand": first.card_brand,
        "stripe": {
            "attempts": [
                {
                    "at": _iso(a.at),
                    "succeeded": a.succeeded,
                    "decline_code": shadow_plan.code_of(a),
                }
                for a in stripe_attempts
            ],
            "retries": max(len(stripe_attempts) - 1, 0),
            "outcome": outcome,
            "ended_at": _iso(ended_at),
        },
        "ours": {
            "retries": [{"at": _iso(r.at), "reason": r.reason} for r in plan.retries],
            "stopped": plan.stopped,
            "reminders": [
                {"at": _iso(r.at), "channel": r.channel, "template": r.template}
                for r in planned_reminders
            ],
        },
        "stripe_retries_we_would_not_make": [
            {
                "at": _iso(a.at),
                "decline_code": a.decline_code,
                "kind": a.kind,
                "why": a.why,
                "paid": a.paid,
            }
            for a in avoided
        ],
        "lost_with_attempts_left": left,
        "case": _recorded(session, case) if case is not None else None,
    }


def report(
    rt: Runtime, start: datetime, end: datetime, limit: int = DEFAULT_LIMIT
) -> dict[str, Any]:
    """The shadow report for invoices whose first failure falls in [start, end): the first
    `limit` of them, oldest first (each takes about ten indexed queries; the figures are those
    of the invoices compared, and `truncated` says when the period had more)."""
    # Compared as if we owned the retries, whatever [retry] retry_owner says today.
    rules = replace(rt.rules.retry, retry_owner="recovery")
    items: list[dict[str, Any]] = []
    truncated = False
    with rt.db.reading() as session:
        ids = _failed_invoices(session, start, end)
        invoices = session.scalars(
            select(Invoice).where(Invoice.id.in_(ids)).order_by(Invoice.created, Invoice.id)
        ).all()
        for invoice in invoices:
            if len(items) == limit:
                truncated = True
                break
            item = invoice_report(rt, session, invoice, rules)
            # (an invoice that failed before the period and again in it belongs to its first)
            if item is not None and start <= _parse(item["first_failure_at"]) < end:
                items.append(item)
    return {
        "period": {"from": _iso(start), "to": _iso(end)},
        "mode": rt.settings.mode,
        "generated_at": _iso(rt.clock.now()),
        "rules": {
            "window_days": rules.window_days,
            "max_attempts": rules.max_attempts,
            "network_caps": {
                "visa": rules.network_caps.visa,
                "mastercard": rules.network_caps.mastercard,
                "other": rules.network_caps.default,
            },
        },
        "stripe_emails": STRIPE_EMAILS,
        "totals": totals(items),
        "invoices": items,
        "truncated": truncated,
    }


def totals(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    outcomes = [i["stripe"]["outcome"] for i in items]
    by_currency: dict[str, dict[str, int]] = {}
    for i in items:
        cur = by_currency.setdefault(
            i["currency"].upper(),
            {"failed": 0, "stripe_recovered": 0, "lost_with_attempts_left": 0},
        )
        cur["failed"] += i["amount_due"]
        if i["stripe"]["outcome"] == "recovered":
            cur["stripe_recovered"] += i["amount_due"]
        if i["lost_with_attempts_left"]:
            cur["lost_with_attempts_left"] += i["amount_due"]
    avoided = [a for i in items for a in i["stripe_retries_we_would_not_make"]]
    return {
        "invoices": len(items),
        "stripe_retries": sum(i["stripe"]["retries"] for i in items),
        "our_planned_retries": sum(len(i["ours"]["retries"]) for i in items),
        "our_planned_reminders": sum(len(i["ours"]["reminders"]) for i in items),
        "stripe_recovered": outcomes.count("recovered"),
        "stripe_lost": outcomes.count("lost"),
        "still_open": outcomes.count("open"),
        "stripe_retries_we_would_not_make": len(avoided),
        "of_which_network_rules": sum(1 for a in avoided if a["kind"] == shadow_plan.NETWORK_RULE),
        # retries we would not have made that paid: what following our policy would have cost
        "of_which_paid": sum(1 for a in avoided if a["paid"]),
        "lost_with_attempts_left": sum(1 for i in items if i["lost_with_attempts_left"]),
        "amounts_minor_units_by_currency": by_currency,
    }
