"""Shadow mode (RECOVERY_MODE=shadow): a due action that would call a provider is decided as in
live mode and then finished as `shadow`, with a note of what it would have done and when
(`due_actions.decide` calls `hold` instead of handing the plan to the call step).

The note is read from the plan and the rows it names, by the action's kind. The kinds are
spelt here rather than imported: the modules that define them schedule due actions
themselves, so importing them from the due-action runner would be a cycle;
tests/test_shadow_mode.py checks that every three-step kind of the registry has a note.

Reading Stripe changes nothing there, so `READS_ONLY` kinds (re-reading an object after a
doubtful update) run as in live mode and keep the mirror true.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from recovery.db import execute_count
from recovery.domain import sms as sms_rules
from recovery.i18n import major_units
from recovery.models import (
    ActionStatus,
    CancelSession,
    DueAction,
    MessageStatus,
    OutboxMessage,
    RecoveryCase,
)
from recovery.runtime import Claimed

log = logging.getLogger(__name__)

REMINDER_STEP = re.compile(r"[a-z_]+\.(\d+)")

READS_ONLY = frozenset({"stripe.refetch"})

# The due-action kinds a note is written for (the constants live with their handlers).
RETRY = "case.retry"
AUTO_ADVANCE_OFF = "case.auto_advance_off"
END_OF_DUNNING = "case.end_of_dunning"
SEND = "outbox.send"
CARD_UPDATE = "card_update.complete"
CANCEL_APPLY = "cancel_flow.apply"
CANCEL_WEBHOOK = "cancel_flow.webhook"
PAUSE_APPLY = "pause.apply"
NOTED_KINDS = frozenset(
    {
        RETRY,
        AUTO_ADVANCE_OFF,
        END_OF_DUNNING,
        SEND,
        CARD_UPDATE,
        CANCEL_APPLY,
        CANCEL_WEBHOOK,
        PAUSE_APPLY,
    }
)


class ShadowLeaseLost(RuntimeError):
    """The action was taken over by another worker before it could be finished as shadow."""


def money(amount: int, currency: str) -> str:
    return f"{major_units(amount, currency):.{_places(currency)}f} {currency.upper()}"


def _places(currency: str) -> int:
    exponent = major_units(1, currency).as_tuple().exponent
    return -exponent if isinstance(exponent, int) else 2


def masked(channel: str, recipient: str) -> str:
    """Who a message was for, as the dashboard shows it to viewers: `j***@example.com`."""
    if channel == "sms":
        return sms_rules.mask_phone(recipient)
    return sms_rules.mask_email(recipient)


def _retry(session: Session, plan: Any) -> str:
    case = session.get(RecoveryCase, int(plan.case_id))
    amount = f" {money(case.amount_due, case.currency)}" if case is not None else ""
    if plan.replay_only:
        return f"check whether an earlier retry paid {plan.invoice_id}"
    if plan.stripe_owns:
        return f"re-read {plan.invoice_id} ([retry] retry_owner = stripe: Stripe charges)"
    return f"retry charge of {plan.invoice_id}{amount} (our attempt {plan.attempt})"


def _case_call(plan: Any) -> str:
    if plan.what == "auto_advance_off":
        return f"switch off Stripe's own retries of {plan.target}"
    if plan.what == "cancel_subscription":
        return f"cancel subscription {plan.target} at Stripe (end of dunning)"
    return f"mark {plan.target} uncollectible at Stripe (end of dunning)"


def _send(session: Session, plan: Any, now: datetime) -> str:
    """The note, and the message itself finished as shadow: it will never be sent."""
    row = session.get(OutboxMessage, int(plan.message_id), with_for_update=True)
    if row is None:
        return f"{plan.channel} message {plan.message_id}"
    row.status = MessageStatus.SHADOW
    row.finished_at = now
    what = row.template.replace("_", " ")
    numbered = REMINDER_STEP.fullmatch(row.step or "")
    if numbered:  # reminders' steps count from 0 (`soft.0` is the first)
        what = f"reminder {int(numbered.group(1)) + 1} ({what})"
    return f"{row.channel} {what} to {masked(row.channel, row.recipient)}"


def _card_update(plan: Any) -> str:
    target = plan.target
    pays = f" and charge {target.invoice_id}" if target.invoice_id and target.case_active else ""
    return f"make the saved card {target.customer_id}'s default{pays}"


def _cancel_apply(session: Session, plan: Any) -> str:
    row = plan.session
    fresh = session.get(CancelSession, row.id)
    outcome = (fresh or row).outcome or "decision"
    return f"apply the cancel flow's {outcome} to subscription {row.subscription_id} at Stripe"


def note(session: Session, action: Claimed, plan: Any, now: datetime) -> str:
    """What `action` would have done with `plan`, in one line."""
    kind = action.kind
    if kind == RETRY:
        return _retry(session, plan)
    if kind in (AUTO_ADVANCE_OFF, END_OF_DUNNING):
        return _case_call(plan)
    if kind == SEND:
        return _send(session, plan, now)
    if kind == CARD_UPDATE:
        return _card_update(plan)
    if kind == CANCEL_APPLY:
        return _cancel_apply(session, plan)
    if kind == CANCEL_WEBHOOK:
        return f"notify the business's endpoint {plan.url}"
    if kind == PAUSE_APPLY:
        return (
            f"pause collection of subscription {plan.subscription_id} until "
            f"{plan.resumes_at:%Y-%m-%d} and void {plan.invoice_id} at Stripe"
        )
    return f"{kind} about {action.subject}"


def hold(session: Session, action: Claimed, owner: str, plan: Any, now: datetime) -> str:
    """Finish a claimed action as shadow with its note, in the caller's savepoint; only while
    our lease holds. Returns the note."""
    what = note(session, action, plan, now)[:2000]
    finished = execute_count(
        session,
        update(DueAction)
        .where(DueAction.id == action.id)
        .where(DueAction.status == ActionStatus.RUNNING)
        .where(DueAction.lease_owner == owner)
        .values(status=ActionStatus.SHADOW, finished_at=now, shadow_note=what, last_error=None),
    )
    if finished != 1:
        raise ShadowLeaseLost(f"action {action.id} was taken over")
    log.info("shadow: %s %s due %s: %s", action.kind, action.subject, action.due_at, what)
    return what
