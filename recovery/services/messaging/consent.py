"""Who may be texted: the one rule the reminder planner, the expiry tracker and the sender ask.

A number may get a text when it is a valid E.164 number, has not opted out (STOP, or Twilio's
21610 - kept in `sms_opt_outs`, docs/messaging.md#sms-opt-out) and the customer's metadata
records consent (`domain.sms.consent_recorded`, the key named by the rules). Planning asks so
that no text is written for a number that may not get one; the sender asks again right before
sending, since a STOP may have arrived in between.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from recovery.domain import sms as sms_rules
from recovery.domain.reminders import ReminderRules
from recovery.models import AccountContact, Customer
from recovery.models.outbox import SmsOptOut

OPTED_OUT = "the number opted out of texts (STOP)"
NO_CONSENT = "no SMS consent recorded for the customer"
NOT_E164 = "not a valid E.164 number"


def may_text(
    session: Session, customer: Customer | None, phone: str | None, rules: ReminderRules
) -> str | None:
    """None when `phone` may get a text about `customer`, else the reason it may not."""
    if phone is not None and is_opted_out(session, phone):
        return OPTED_OUT
    if customer is None or not (
        sms_rules.consent_recorded(customer.metadata_, rules.sms_consent_metadata_key)
        or _contact_consented(session, customer.id, phone)
    ):
        return NO_CONSENT
    if phone is None or sms_rules.e164(phone) != phone:
        return NOT_E164
    return None


def _contact_consented(session: Session, customer_id: str, phone: str | None) -> bool:
    """An account contact with this number recorded SMS consent (services/outreach/contacts)."""
    if phone is None:
        return False
    found = session.scalar(
        select(AccountContact.id).where(
            AccountContact.customer_id == customer_id,
            AccountContact.phone == phone,
            AccountContact.sms_consent.is_(True),
            AccountContact.removed_at.is_(None),
        )
    )
    return found is not None


def is_opted_out(session: Session, phone: str) -> bool:
    row = session.get(SmsOptOut, phone)
    return row is not None and row.opted_out


def set_opt_out(session: Session, phone: str, opted_out: bool, via: str, now: datetime) -> None:
    """Record a STOP (or a START that takes it back) for the number."""
    row = session.get(SmsOptOut, phone, with_for_update=True)
    if row is None:
        session.add(SmsOptOut(phone=phone, opted_out=opted_out, via=via, changed_at=now))
    else:
        row.opted_out, row.via, row.changed_at = opted_out, via, now
    session.flush()
