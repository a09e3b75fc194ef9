"""What Twilio tells us about texts: a recipient's keyword (STOP / START) and a message's
delivery status. Twilio answers STOP/START itself; we keep our own record of opt-outs so we
never even try (docs/messaging.md#sms-opt-out)."""

from __future__ import annotations

from sqlalchemy import select

from recovery.models import MessageStatus, OutboxMessage
from recovery.runtime import Runtime
from recovery.services.messaging.consent import set_opt_out

UNDELIVERED = ("failed", "undelivered")
OPTED_OUT_CODE = "21610"  # Twilio: the recipient has replied STOP to this sender


def record_keyword(rt: Runtime, phone: str, word: str) -> None:
    """`stop` opts the number out, `start` back in; `help` changes nothing."""
    if word not in ("stop", "start"):
        return
    stop = word == "stop"
    with rt.db.transaction() as session:
        set_opt_out(session, phone, stop, f"inbound_{word}", rt.clock.now())


def record_delivery(rt: Runtime, sid: str, state: str, code: str) -> None:
    """A status callback for the message Twilio knows as `sid`: a text that could not be
    delivered is marked failed with Twilio's reason, and 21610 records the opt-out."""
    now = rt.clock.now()
    with rt.db.transaction() as session:
        row = session.scalar(
            select(OutboxMessage).where(OutboxMessage.provider_id == sid).with_for_update()
        )
        if row is None or state not in UNDELIVERED:
            return
        row.status = MessageStatus.FAILED
        row.last_error = f"Twilio {state}" + (f" (error {code})" if code else "")
        row.finished_at = now
        if code == OPTED_OUT_CODE:
            set_opt_out(session, row.recipient, True, "twilio_21610", now)
