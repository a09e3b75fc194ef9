"""A case's whole story for its dashboard page, merged in time order, in sentences.

Case events (decisions with why and when, our retries, closing), the charges on the invoice
with their declines in plain words, messages with their delivery (each message's card-update
link under it: opened, revoked), the Stripe events about the invoice, and admin actions from
the audit log. Wording: `timeline_words`. A time that was chosen in the customer's zone (a
retry, a reminder's send time) carries that zone, so the page can show both clocks.

A fixed number of queries, however long the story.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from recovery.domain.declines import classify
from recovery.domain.timezones import customer_timezone
from recovery.models import (
    CardUpdateLink,
    CaseEvent,
    Customer,
    Invoice,
    OutboxMessage,
    PaymentAttempt,
    RecoveryCase,
    StripeEvent,
)
from recovery.models.users import AuditEntry
from recovery.services.cases import evidence
from recovery.services.cases import log as case_log
from recovery.services.cases import timeline_words as words
from recovery.services.reporting.case_list import mask_email

EVENT_LIMIT = 500  # a case's lines rarely pass a few dozen; a runaway one must not sink the page


@dataclass(frozen=True)
class Line:
    at: datetime
    source: str  # case | charge | message | stripe | admin
    kind: str
    summary: str  # one sentence
    note: str = ""  # why, or what it was for
    planned_at: datetime | None = None  # what the line plans, when (a retry, a message)
    customer_zone: str | None = None  # set when `planned_at` was chosen in the customer's zone
    children: tuple[Line, ...] = ()  # what followed from it (a message's link opened)
    order: int = 0


@dataclass(frozen=True)
class CaseStory:
    case: RecoveryCase
    customer_email: str
    customer_name: str | None
    customer_zone: str
    lines: list[Line] = field(default_factory=list)


def _recipient(channel: str, recipient: str, full: bool) -> str:
    if full:
        return recipient
    if channel == "email":
        return mask_email(recipient)
    return f"•••{recipient[-4:]}" if len(recipient) > 4 else "•••"


def _ours(
    events: list[CaseEvent], attempts: list[PaymentAttempt]
) -> tuple[dict[str, int], set[int]]:
    """Our retries' charge ids, with their number, and the retry events whose charge is on the
    timeline. A retry that went through is recorded without its charge id: it is the
    successful charge made within a minute or two of it."""
    ours = {
        str(e.data["attempt_id"]): int(e.data.get("attempt") or 0)
        for e in events
        if e.kind == "our_attempt" and (e.data or {}).get("attempt_id")
    }
    charged = {r.id for r in attempts}
    shown = {
        e.id
        for e in events
        if e.kind == "our_attempt" and str((e.data or {}).get("attempt_id")) in charged
    }
    for e in events:
        data = e.data or {}
        if e.kind != "our_attempt" or data.get("attempt_id") or not data.get("succeeded"):
            continue
        for r in attempts:
            near = abs((r.created or 0) - e.at.timestamp()) <= 120
            if r.status == "succeeded" and near and r.id not in ours:
                ours[r.id] = int(data.get("attempt") or 0)
                shown.add(e.id)
                break
    return ours, shown


def _attempts(session: Session, case: RecoveryCase) -> list[PaymentAttempt]:
    invoice = session.get(Invoice, case.invoice_id)
    if invoice is not None:
        rows = evidence.attempts_for(session, case, invoice)
    else:
        rows = list(
            session.scalars(
                select(PaymentAttempt)
                .where(PaymentAttempt.invoice_id == case.invoice_id)
                .limit(EVENT_LIMIT)
            )
        )
    return sorted((r for r in rows if r.created is not None), key=lambda r: (r.created, r.id))


def _charge_lines(
    case: RecoveryCase, rows: list[PaymentAttempt], ours: dict[str, int]
) -> list[Line]:
    lines = []
    for r in rows:
        assert r.created is not None
        who = f"Our retry {ours[r.id]}" if r.id in ours else "A charge"
        what = f"{who} of {words.money(r.amount, r.currency or case.currency)}"
        card = words.card_words(r.card_brand, r.card_last4)
        if r.status == "failed":
            code = r.decline_code or r.failure_code
            summary = f"{what} on {card} was declined: {words.decline_words(code)}."
            note = _network_note(r)
        elif r.status == "succeeded":
            summary, note = f"{what} on {card} went through.", ""
        else:
            summary, note = f"{what} on {card} is {r.status}.", ""
        at = datetime.fromtimestamp(r.created, UTC)
        lines.append(Line(at, "charge", r.status, summary, note))
    return lines


def _network_note(r: PaymentAttempt) -> str:
    parts = []
    brand = (r.card_brand or "the card network").title()
    if r.network_decline_code:
        parts.append(f"{brand} response code {r.network_decline_code}")
    if r.network_advice_code:
        parts.append(f"{brand} merchant advice code {r.network_advice_code}")
    if r.advice_code:
        parts.append(f"Stripe's advice: {r.advice_code.replace('_', ' ')}")
    return "; ".join(parts) + ("." if parts else "")


def _decline_before(rows: list[PaymentAttempt], at: datetime) -> PaymentAttempt | None:
    cut = at.timestamp()
    failed = [r for r in rows if r.status == "failed" and (r.created or 0) <= cut]
    return failed[-1] if failed else None


def _decision(e: CaseEvent, attempts: list[PaymentAttempt], case: RecoveryCase, zone: str) -> Line:
    data = e.data or {}
    nxt = data.get("next_retry_at")
    # The decline the decision read, as it wrote it; a line from before it did (or an attempt
    # mirrored in the same second as the decision, which it did not read) would otherwise
    # lend the decision another decline's reason.
    if data.get("decline_category"):
        category, code = str(data["decline_category"]), data.get("decline_code")
    elif (last := _decline_before(attempts, e.at)) is not None:
        category = classify(evidence.decline_of(last)).category.value
        code = last.decline_code or last.failure_code
    else:
        category, code = case.decline_category or "", case.decline_code
    cause = words.cause_words(data.get("cause"))
    why = words.CATEGORY_WHY.get(category, "")
    reasons = [f"{words.decline_words(code)[0].upper()}{words.decline_words(code)[1:]}"]
    if why:
        reasons.append(why)
    if nxt:
        planned = datetime.fromisoformat(nxt)
        timing = words.retry_timing(e.summary)
        note = "Why: " + "; ".join(reasons) + (f". When: {timing}." if timing else ".")
        return Line(
            e.at,
            "case",
            "decision",
            f"Decided {cause}: retry the card." if cause else "Decided: retry the card.",
            note,
            planned_at=planned,
            customer_zone=zone,
            order=e.id,
        )
    if data.get("stop") and data.get("wait_for_new_card"):
        summary = "Retries stopped: this card is not charged again; waiting for a new card."
    elif data.get("stop"):
        summary = "Retries stopped: dunning ends."
    else:
        summary = "No retry planned: waiting for the customer."
    note = "Why: " + "; ".join(reasons) + "."
    if cause:
        summary = f"{summary[:-1]} (decided {cause})."
    return Line(e.at, "case", "decision", summary, note, order=e.id)


def _case_line(e: CaseEvent, case: RecoveryCase, attempts: list[PaymentAttempt], zone: str,
               shown: set[int]) -> Line | None:  # fmt: skip
    data = e.data or {}
    kind = e.kind
    if kind == "decision":
        return _decision(e, attempts, case, zone)
    if kind == "opened":
        summary = (
            f"The payment of {words.money(case.amount_due, case.currency)} failed: case opened."
        )
        return Line(e.at, "case", kind, summary, order=e.id)
    if kind == "our_attempt":
        if e.id in shown:
            return None  # the charge's own line says it
        n = data.get("attempt") or "?"
        if data.get("succeeded"):
            return Line(e.at, "case", kind, f"Our retry {n} went through.", order=e.id)
        code = data.get("decline_code") or data.get("failure_code")
        summary = f"Our retry {n} was declined: {words.decline_words(code)}."
        return Line(e.at, "case", kind, summary, order=e.id)
    if kind == "reminders":
        if data.get("replaces") == "paused":
            summary = "Reminders start again after the pause."
        else:
            sequence = words.SEQUENCES.get(str(data.get("sequence")), "no reminders")
            if data.get("after_the_page"):
                sequence += ", from the next day: the customer saw the new card fail on the"
                sequence += " card-update page"
            summary = f"Reminder plan: {sequence}."
        return Line(e.at, "case", kind, summary, order=e.id)
    if kind == "auto_advance_off":
        summary = "Stripe's own retries were turned off for this invoice: this service retries it."
        return Line(e.at, "case", kind, summary, order=e.id)
    if kind == "link_opened":
        return None  # under the message whose link it was
    if kind == "card_update_declined":
        code = data.get("decline_code")
        summary = f"The new card the customer saved was declined: {words.decline_words(code)}."
        return Line(e.at, "case", kind, summary, order=e.id)
    if kind == "card_updated":
        card = words.card_words(data.get("brand"), data.get("last4"))
        summary = f"The customer saved a new card, {card}, through the card-update link."
        return Line(e.at, "case", kind, summary, order=e.id)
    if kind == "recovered":
        via = words.VIA.get(case.recovered_via or str(data.get("via")), "")
        amount = words.money(data.get("amount") or case.amount_recovered, case.currency)
        return Line(e.at, "case", kind, f"Recovered {amount} {via}.".replace(" .", "."), order=e.id)
    if kind == "lost":
        action = e.summary.rsplit(": ", 1)[-1] if ": " in e.summary else ""
        then = words.END_OF_DUNNING.get(action)
        summary = "Lost: dunning ended without payment" + (f"; {then}." if then else ".")
        return Line(e.at, "case", kind, summary, order=e.id)
    if kind == "end_of_dunning":
        return Line(e.at, "case", kind, f"In Stripe: {e.summary}.", order=e.id)
    if kind == "closed":
        reason = str(data.get("reason", "")).replace("_", " ")
        return Line(e.at, "case", kind, f"Closed: {reason or e.summary}.", order=e.id)
    return Line(e.at, "case", kind, e.summary, order=e.id)


def _link_children(link: CardUpdateLink) -> list[Line]:
    out = []
    if link.first_opened_at:
        times = "once" if link.opened_count == 1 else f"{link.opened_count} times"
        out.append(Line(link.first_opened_at, "link", "opened", f"Its link was opened {times}."))
    if link.completed_at:
        outcome = words.LINK_OUTCOMES.get(link.last_outcome or "", "the customer used it")
        out.append(Line(link.completed_at, "link", "completed", f"Through it, {outcome}."))
    if link.revoked_at:
        out.append(Line(link.revoked_at, "link", "revoked", "Its link was switched off."))
    return out


def _message_lines(session: Session, case: RecoveryCase, zone: str, full: bool) -> list[Line]:
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
    links = session.scalars(
        select(CardUpdateLink)
        .where(CardUpdateLink.case_id == case.id)
        .order_by(CardUpdateLink.id)
        .limit(EVENT_LIMIT)
    ).all()
    by_message = {link.message_key: link for link in links if link.message_key}
    lines = []
    for m in rows:
        to = _recipient(m.channel, m.recipient, full)
        channel = "Email" if m.channel == "email" else "SMS"
        status = words.MESSAGE_STATUS.get(m.status, m.status)
        summary = f"{channel} to {to} {words.template_words(m.template)}: {status}."
        note = ""
        if m.status == "failed" and m.last_error:
            note = f"The last error: {m.last_error[:200]}"
        link = by_message.pop(m.dedupe_key, None)
        children = tuple(_link_children(link)) if link else ()
        at = m.sent_at or m.finished_at or m.send_after
        lines.append(
            Line(at, "message", m.status, summary, note, planned_at=m.send_after,
                 customer_zone=zone, children=children)
        )  # fmt: skip
    for link in by_message.values():  # links whose message is gone or not the case's
        for child in _link_children(link):
            summary = child.summary.replace("Its link", "A card-update link", 1)
            summary = summary.replace("Through it,", "Through a card-update link,", 1)
            lines.append(replace(child, summary=summary))
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
    lines = []
    for eid, etype, received, status in rows:
        said = words.STRIPE_EVENTS.get(etype, f"sent the event {etype}")
        summary = f"{said[0].upper()}{said[1:]}."
        note = "" if status == "processed" else f"Not processed yet ({status}); event {eid}."
        lines.append(Line(received, "stripe", etype, summary, note))
    return lines


def _admin_lines(session: Session, case: RecoveryCase, full: bool) -> list[Line]:
    rows = session.scalars(
        select(AuditEntry)
        .where(AuditEntry.case_id == case.id)
        .order_by(AuditEntry.at, AuditEntry.id)
        .limit(EVENT_LIMIT)
    ).all()
    lines = []
    for a in rows:
        who = a.actor if full else mask_email(a.actor)
        did = words.ADMIN.get(a.action, a.action.replace("_", " "))
        details: dict[str, Any] = a.details or {}
        if a.action == "close" and details.get("reason"):
            did += f": {str(details['reason']).replace('_', ' ')}"
        if a.action == "retry_now" and details.get("attempt"):
            did += f" (our retry {details['attempt']})"
        note = f"Note: {details['note']}" if details.get("note") else ""
        lines.append(Line(a.at, "admin", a.action, f"{who} {did}.", note, order=a.id))
    return lines


SOURCE_ORDER = {"stripe": 0, "charge": 1, "case": 2, "admin": 3, "link": 4, "message": 5}


def story(session: Session, case_id: int, *, full_emails: bool = False) -> CaseStory | None:
    case = session.get(RecoveryCase, case_id)
    if case is None:
        return None
    customer = session.get(Customer, case.customer_id) if case.customer_id else None
    zone = customer_timezone(
        customer.address_country if customer else None,
        customer.preferred_locales if customer else (),
    )
    events = list(
        session.scalars(
            select(CaseEvent)
            .where(CaseEvent.case_id == case.id)
            .order_by(CaseEvent.at, CaseEvent.id)
            .limit(EVENT_LIMIT)
        )
    )
    attempts = _attempts(session, case)
    ours, shown = _ours(events, attempts)
    intents = {r.payment_intent_id for r in attempts if r.payment_intent_id}
    case_lines = [_case_line(e, case, attempts, zone, shown) for e in events]
    lines = [
        *(line for line in case_lines if line is not None),
        *_charge_lines(case, attempts, ours),
        *_message_lines(session, case, zone, full_emails),
        *_stripe_lines(session, case, intents),
        *_admin_lines(session, case, full_emails),
    ]
    lines.sort(key=lambda line: (line.at, SOURCE_ORDER[line.source], line.order))
    email = customer.email if customer else None
    return CaseStory(
        case=case,
        customer_email=(email or "") if full_emails else mask_email(email),
        customer_name=customer.name if customer else None,
        customer_zone=zone,
        lines=lines,
    )
