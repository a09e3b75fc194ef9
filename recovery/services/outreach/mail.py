"""Writing an outreach email (an annual offer, a win-back note) to the outbox: one copy per
recipient (each billing contact, else the customer), each with its own link and unsubscribe."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from recovery.config import Settings
from recovery.models import Customer, OutboxMessage
from recovery.rules import Rules
from recovery.services.messaging import outbox, reminders
from recovery.services.outreach import contacts, links


def write(
    session: Session,
    *,
    rules: Rules,
    settings: Settings,
    customer: Customer,
    kind: str,
    row_id: int,
    template: str,
    step: str,
    key: str,
    send_after: datetime,
    now: datetime,
    context: dict[str, Any],
    term_offer_id: int | None = None,
    win_back_id: int | None = None,
) -> int:
    """Queue the email for every marketing recipient of the customer. Returns how many."""
    written = 0
    zone = reminders.zone_of(customer)
    for i, target in enumerate(contacts.marketing_targets(session, customer)):
        message_key = f"{key}{target.suffix}"
        if session.scalar(select(OutboxMessage.id).where(OutboxMessage.dedupe_key == message_key)):
            continue
        locale = target.locale or reminders.locale_of(customer)
        links.issue(
            session,
            message_key=message_key,
            kind=kind,
            customer_id=customer.id,
            recipient=target.address,
            settings=settings,
            now=now,
            sent_at=send_after,
            contact_id=target.contact_id,
            term_offer_id=term_offer_id,
            win_back_id=win_back_id,
        )
        values = {
            "business": rules.business.name,
            "sender": rules.business.sender_name,
            "product": rules.business.name,
            "name": ((customer.name or "").split() or [""])[0],
            "link": links.stored_url(settings, links.PAGES[kind]),
            "unsubscribe": links.stored_url(settings, "unsubscribe"),
            **context,
        }
        rendered = reminders.render_email(template, locale, values)
        row = outbox.enqueue(
            session,
            about=links.about(kind, row_id),
            case_id=None,
            customer_id=customer.id,
            channel="email",
            template=template,
            step=step,
            locale=locale,
            recipient=target.address,
            subject=rendered.subject,
            body=rendered.body,
            send_after=send_after,
            dedupe_key=message_key,
            now=now,
            # At most one message a day per customer: the first copy takes the day, the
            # other contacts' copies go with it.
            cap_zone=zone if i == 0 else None,
            send_hour=rules.reminders.send_hour,
        )
        written += row is not None
    return written
