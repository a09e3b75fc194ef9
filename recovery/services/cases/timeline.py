"""A case's whole story for its dashboard page, merged in time order.

Case events (decisions with the policy's reasons, our attempts, closing), Stripe's charge
attempts with their decline codes, messages with delivery status, card-update link opens and
completions, the Stripe events about the invoice, and admin actions from the audit log. A fixed
number of queries, however long the story.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from recovery.models import (
    CardUpdateLink,
    CaseEvent,
    Customer,
    OutboxMessage,
    PaymentAttempt,
    RecoveryCase,
    StripeEvent,
)
from recovery.models.users import AuditEntry
from recovery.services.cases import log as case_log
from recovery.services.reporting.case_list import mask_email

EVENT_LIMIT = 500  # a case's lines rarely pass a few dozen; a runaway one must not sink the page


@dataclass(frozen=True)
class Line:
    at: datetime
    source: str  # case | attempt | message | link | stripe | admin
    kind: str
    summary: str
    detail: dict[str, Any] = field(default_factory=dict)
    order: int = 0


@dataclass(frozen=True)
class CaseStory:
    case: RecoveryCase
    customer_email: str
    customer_name: str | None
    lines: list[Line]


def _mask_recipient(channel: str, recipient: str) -> str:
    if channel == "email":
        return mask_email(recipient)
    return f"***{recipient[-4:]}" if len(recipient) > 4 else "***"


def _attempt_lines(session: Session, case: RecoveryCase) -> tuple[list[Line], set[str]]:
    rows = session.scalars(
        select(PaymentAttempt)
        .where(PaymentAttempt.invoice_id == case.invoice_id)
        .order_by(PaymentAttempt.created)
        .limit(EVENT_LIMIT)
    ).all()
    lines, intents = [], set()
    for r in rows:
        if r.payment_intent_id:
            intents.add(r.payment_intent_id)
        if r.created is None:
            continue
        card = " ".join(x for x in (r.card_brand, f"…{r.card_last4}" if r.card_last4 else "") if x)
        if r.status == "failed":
            code = r.decline_code or r.failure_code or "declined"
            summary = f"charge declined: {code}" + (f" ({card})" if card else "")
        else:
            summary = f"charge {r.status}" + (f" ({card})" if card else "")
        detail = {
            k: v
            for k, v in (
                ("failure_code", r.failure_code),
                ("decline_code", r.decline_code),
                ("advice_code", r.advice_code),
                ("network_advice_code", r.network_advice_code),
                ("network_decline_code", r.network_decline_code),
                ("outcome", r.outcome_reason or r.outcome_type),
            )
            if v
        }
        at = datetime.fromtimestamp(r.created, UTC)
        lines.append(Line(at, "attempt", "charge", summary, detail))
    return lines, intents


def _message_lines(session: Session, case: RecoveryCase) -> list[Line]:
    subject = case_log.subject(case.id)
    rows = session.scalars(
        select(OutboxMessage)
        .where(
            or_(
                OutboxMessage.case_id == case.id,
                OutboxMessage.about.in_([subject, f"notice:{subject}"]),
            )
        )
        .order_by(OutboxMessage.send_after, OutboxMessage.id)
        .limit(EVENT_LIMIT)
    ).all()
    lines = []
    for m in rows:
        to = _mask_recipient(m.channel, m.recipient)
        when = m.sent_at or m.finished_at or m.send_after
        summary = f"{m.channel} “{m.template.replace('_', ' ')}” to {to}: {m.status}"
        detail: dict[str, Any] = {"step": m.step, "planned_for": m.send_after.isoformat()}
        if m.last_error:
            detail["error"] = m.last_error[:200]
        if m.attempts:
            detail["attempts"] = m.attempts
        lines.append(Line(when, "message", m.status, summary, detail))
    return lines


def _link_lines(session: Session, case: RecoveryCase) -> list[Line]:
    rows = session.scalars(
        select(CardUpdateLink)
        .where(CardUpdateLink.case_id == case.id)
        .order_by(CardUpdateLink.id)
        .limit(EVENT_LIMIT)
    ).all()
    lines = []
    for link in rows:
        ref = f"link #{link.id}"
        lines.append(Line(link.created_at, "link", "created", f"card-update {ref} created"))
        if link.first_opened_at:
            opens = f"opened {link.opened_count} time{'s' if link.opened_count != 1 else ''}"
            lines.append(Line(link.first_opened_at, "link", "opened", f"{ref} {opens}"))
        if link.completed_at:
            outcome = link.last_outcome or "completed"
            lines.append(Line(link.completed_at, "link", "completed", f"{ref}: {outcome}"))
        if link.revoked_at:
            lines.append(Line(link.revoked_at, "link", "revoked", f"{ref} revoked"))
    return lines


def _stripe_lines(session: Session, case: RecoveryCase, intents: set[str]) -> list[Line]:
    ids = [case.invoice_id, *sorted(intents)]
    rows = session.execute(
        select(
            StripeEvent.id, StripeEvent.type, StripeEvent.received_at, StripeEvent.status
        )  # never the payload: it can be large and holds the customer's details
        .where(StripeEvent.object_id.in_(ids))
        .order_by(StripeEvent.received_at)
        .limit(EVENT_LIMIT)
    ).all()
    return [
        Line(received, "stripe", etype, f"Stripe event {etype}", {"id": eid, "status": status})
        for eid, etype, received, status in rows
    ]


def _case_lines(session: Session, case: RecoveryCase) -> list[Line]:
    rows = session.scalars(
        select(CaseEvent)
        .where(CaseEvent.case_id == case.id)
        .order_by(CaseEvent.at, CaseEvent.id)
        .limit(EVENT_LIMIT)
    ).all()
    return [Line(e.at, "case", e.kind, e.summary, dict(e.data or {}), e.id) for e in rows]


def _admin_lines(session: Session, case: RecoveryCase) -> list[Line]:
    rows = session.scalars(
        select(AuditEntry)
        .where(AuditEntry.case_id == case.id)
        .order_by(AuditEntry.at, AuditEntry.id)
        .limit(EVENT_LIMIT)
    ).all()
    return [
        Line(a.at, "admin", a.action, f"{a.actor}: {a.action.replace('_', ' ')}", a.details, a.id)
        for a in rows
    ]


SOURCE_ORDER = {"stripe": 0, "attempt": 1, "case": 2, "admin": 3, "link": 4, "message": 5}


def story(session: Session, case_id: int) -> CaseStory | None:
    case = session.get(RecoveryCase, case_id)
    if case is None:
        return None
    customer = session.get(Customer, case.customer_id) if case.customer_id else None
    attempts, intents = _attempt_lines(session, case)
    lines = [
        *_case_lines(session, case),
        *attempts,
        *_message_lines(session, case),
        *_link_lines(session, case),
        *_stripe_lines(session, case, intents),
        *_admin_lines(session, case),
    ]
    lines.sort(key=lambda line: (line.at, SOURCE_ORDER[line.source], line.order))
    return CaseStory(
        case=case,
        customer_email=mask_email(customer.email if customer else None),
        customer_name=customer.name if customer else None,
        lines=lines,
    )
