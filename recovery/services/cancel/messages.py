"""The cancel flow's emails to the subscriber, written to the outbox (services/outbox.py).

- the cancellation confirmation: written in the decision's transaction, so a cancellation we
  accepted is always confirmed in writing (Germany's §312k BGB and the EU's Art. 11a CRD want an
  immediate acknowledgment on a durable medium, docs/cancellation.md) - whether Stripe took the
  change at once or the worker applies it later;
- the confirmation of an accepted offer (pause, downgrade, yearly billing, discount): what
  changes and when, written in the decision's transaction like the cancellation's;
- the pause reminder: written when Stripe applied the pause, to go out a few days before
  billing resumes; dropped by the sender if the subscriber cancelled meanwhile.

Both are rendered in the language of the pages the subscriber saw, plain text, and sent by the
worker from the business's named sender, with the outbox's retries and dedupe keys.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.orm import Session

from recovery.domain.cancel_terms import CancelPlan
from recovery.domain.offer_terms import OfferTerms
from recovery.domain.offers import OfferKind
from recovery.i18n import DEFAULT_LOCALE, negotiate, render_message
from recovery.models import CancelSession, Customer, OutboxMessage
from recovery.models.cancel_flow import Outcome
from recovery.rules import Rules
from recovery.services.messaging import outbox

log = logging.getLogger(__name__)

CONFIRMATION_TEMPLATE = "cancel_confirmation"
OFFER_TEMPLATE = "offer_confirmation"
PAUSE_TEMPLATE = "pause_ending"
ABOUT_PREFIX = "cancel_session"
SAVED_OUTCOMES = frozenset(
    {
        Outcome.SAVED_BY_PAUSE,
        Outcome.SAVED_BY_DOWNGRADE,
        Outcome.SAVED_BY_LONGER_TERM,
        Outcome.SAVED_BY_DISCOUNT,
    }
)


def about(row: CancelSession) -> str:
    return f"{ABOUT_PREFIX}:{row.id}"


def dedupe_key(template: str, session_id: str) -> str:
    # The same keys the due actions of the log-only version used: one message per session.
    return f"email.{template}:{session_id}"


def _write(
    session: Session,
    row: CancelSession,
    rules: Rules,
    template: str,
    step: str,
    send_after: datetime,
    now: datetime,
) -> OutboxMessage | None:
    reminder_days = rules.cancel_flow.offers.get(OfferKind.PAUSE).reminder_days_before
    customer = session.get(Customer, row.customer_id)
    if customer is None or customer.deleted or not customer.email:
        log.warning("cancel session %s: no email address for %s", row.id, template)
        return None
    preferred = list(customer.preferred_locales or [])
    locale = negotiate([row.display_locale, row.locale, *preferred]) or DEFAULT_LOCALE
    message = render_message(
        f"cancel_flow/email/{template}.txt",
        locale,
        business=rules.business.name,
        sender=rules.business.sender_name,
        name=((customer.name or "").split() or [""])[0],
        session=row,
        terms=OfferTerms.from_json(row.offer_terms) if row.offer_terms else None,
        plan=CancelPlan.from_json(row.cancel_plan) if row.cancel_plan else None,
        reminder_days=reminder_days,
    )
    return outbox.enqueue(
        session,
        about=about(row),
        case_id=None,
        customer_id=row.customer_id,
        channel="email",
        template=template,
        step=step,
        locale=locale,
        recipient=customer.email,
        subject=message.subject,
        body=message.body,
        send_after=send_after,
        dedupe_key=dedupe_key(template, row.id),
        now=now,
    )


def confirm_cancellation(
    session: Session, row: CancelSession, rules: Rules, now: datetime
) -> OutboxMessage | None:
    """Write the confirmation (once per session), in the caller's transaction."""
    if row.outcome != Outcome.CANCELLED:
        return None
    return _write(session, row, rules, CONFIRMATION_TEMPLATE, outbox.CONFIRMATION, now, now)


def confirm_offer(
    session: Session, row: CancelSession, rules: Rules, now: datetime
) -> OutboxMessage | None:
    """Write the confirmation of an accepted offer - what changes and when - once per session,
    in the decision's transaction, as a cancellation is confirmed."""
    if row.outcome not in SAVED_OUTCOMES or not row.offer_terms:
        return None
    return _write(session, row, rules, OFFER_TEMPLATE, outbox.CONFIRMATION, now, now)


def remind_pause_ending(
    session: Session, row: CancelSession, rules: Rules, now: datetime, send_after: datetime
) -> OutboxMessage | None:
    """Write the "billing resumes on ..." reminder (once per session)."""
    if row.outcome != Outcome.SAVED_BY_PAUSE or row.ends_at is None:
        return None
    return _write(session, row, rules, PAUSE_TEMPLATE, "pause.reminder", max(send_after, now), now)


def still_wanted(session: Session, message: OutboxMessage) -> str | None:
    """Checked right before sending: a pause reminder is stale once the subscriber cancelled."""
    if message.template != PAUSE_TEMPLATE:
        return None  # a confirmation always goes out
    row = session.get(CancelSession, message.about.partition(":")[2])
    if row is None:
        return "the cancel session no longer exists"
    if row.outcome != Outcome.SAVED_BY_PAUSE:
        return f"the subscriber chose {row.outcome} since"
    return None
