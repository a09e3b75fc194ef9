"""What an admin may do to a case from the dashboard: retry now, pause or resume dunning,
close, resend the card-update link. Each is idempotent (a double click does it once), refuses
with a sentence a person can act on, and is written to the audit log and the case's timeline.

Retry-now goes through the same due action as a scheduled retry (kind `case.retry`, key
`case:<id>:attempt:<n>`): the worker runs it, Stripe gets the same idempotency key, and the
retry policy's hard stops (a never-retry decline, a card that needs replacing, a spent budget,
the network's "not before") are checked first.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from recovery.config import Settings
from recovery.domain import cases as machine
from recovery.domain.cases import CaseStatus
from recovery.domain.declines import Decline, classify
from recovery.domain.retry_policy import decide_next_retry
from recovery.models import (
    ActionStatus,
    Customer,
    DueAction,
    Invoice,
    OutboxMessage,
    RecoveryCase,
)
from recovery.rules import Rules
from recovery.services.accounts import users as accounts
from recovery.services.card_update import links as card_update_links
from recovery.services.cases import evidence as case_evidence
from recovery.services.cases import log as case_log
from recovery.services.cases import scheduling as case_scheduling
from recovery.services.messaging import outbox, reminders
from recovery.services.work import due_actions

CLOSE_REASONS = ("paid_elsewhere", "written_off", "customer_left", "duplicate", "other")
RESEND_TEMPLATE = "card_replace"


@dataclass(frozen=True)
class Actor:
    user_id: int
    email: str


@dataclass(frozen=True)
class Outcome:
    done: bool  # False: refused or nothing to do; `message` says which
    message: str


def _lock(session: Session, case_id: int) -> RecoveryCase | None:
    # One admin action at a time per case, and none beside a worker's step on it.
    return session.scalars(
        select(RecoveryCase).where(RecoveryCase.id == case_id).with_for_update()
    ).one_or_none()


def _audit(
    session: Session,
    actor: Actor,
    case: RecoveryCase,
    action: str,
    now: datetime,
    details: dict[str, Any] | None = None,
) -> None:
    accounts.audit(
        session,
        at=now,
        user_id=actor.user_id,
        actor=actor.email,
        action=action,
        case_id=case.id,
        target=case.invoice_id,
        details=details,
    )


def _fmt(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


# ---- what may be done now (the case page shows only these) ----------------------------------


@dataclass(frozen=True)
class Available:
    """Which actions can apply to the case now; for retry and resend, why not when they cannot."""

    retry_refusal: str | None
    pause: bool
    resume: bool
    resend_refusal: str | None
    close: bool

    @property
    def anything(self) -> bool:
        return (
            self.retry_refusal is None
            or self.pause
            or self.resume
            or self.resend_refusal is None
            or self.close
        )


def available(session: Session, case: RecoveryCase, rules: Rules, now: datetime) -> Available:
    over = case.status in machine.TERMINAL
    resend = None
    if over:
        resend = f"The case is {case.status}: no link is needed."
    elif case.customer_id is None:
        resend = "The case has no customer to send a link to."
    else:
        customer = session.get(Customer, case.customer_id)
        if customer is None or not customer.email:
            resend = "The customer has no email address in the mirror."
    return Available(
        retry_refusal=retry_refusal(session, case, rules, now),
        pause=not over and not case.dunning_paused,
        resume=case.dunning_paused,
        resend_refusal=resend,
        close=not over,
    )


# ---- retry now ------------------------------------------------------------------------------


def retry_refusal(session: Session, case: RecoveryCase, rules: Rules, now: datetime) -> str | None:
    """Why the case must not be charged now, or None when it may."""
    if case.status in machine.TERMINAL:
        return f"The case is {case.status}: there is nothing to retry."
    if case.dunning_paused:
        return "Dunning is paused for this case: resume it first."
    if rules.retry.retry_owner == "stripe":
        return "Stripe runs the retries for this account (retry_owner = stripe)."
    invoice = session.get(Invoice, case.invoice_id)
    if invoice is None:
        return "The invoice is not in the mirror yet; try again in a minute."
    ctx, _failed = case_evidence.retry_context(session, case, invoice, now)
    decision = decide_next_retry(ctx, rules.retry, now)
    if decision.at is None:
        # The policy would not charge this card at all: a hard decline, a card to replace, a
        # customer who must act, or a spent budget. An admin cannot override card-network rules.
        return f"Not retried: {decision.reason}."
    earliest, why = now, ""
    for attempt in ctx.attempts:
        if attempt.succeeded or not attempt.on_this_invoice:
            continue
        gap = attempt.at + timedelta(hours=rules.retry.min_gap_hours)
        if gap > earliest:
            earliest, why = gap, f"at least {rules.retry.min_gap_hours} h between charges"
        decline = attempt.decline or Decline()
        if decline.card_brand is None and attempt.card_brand is not None:
            decline = replace(decline, card_brand=attempt.card_brand)
        verdict = classify(decline)
        if verdict.not_before is not None and attempt.at + verdict.not_before > earliest:
            earliest, why = attempt.at + verdict.not_before, verdict.reason
    if earliest > now:
        return f"Too soon to charge again: the earliest allowed is {_fmt(earliest)} ({why})."
    return None


def retry_now(session: Session, case_id: int, rules: Rules, actor: Actor, now: datetime) -> Outcome:
    case = _lock(session, case_id)
    if case is None:
        return Outcome(False, "No such case.")
    refusal = retry_refusal(session, case, rules, now)
    if refusal:
        return Outcome(False, refusal)
    attempt = case.our_attempts + 1
    key = case_scheduling.retry_key(case)
    existing = session.scalars(select(DueAction).where(DueAction.dedupe_key == key)).one_or_none()
    if existing is not None and (
        existing.status in (ActionStatus.RUNNING, ActionStatus.DONE)
        or (existing.status == ActionStatus.PENDING and existing.due_at <= now)
    ):
        return Outcome(False, f"Retry {attempt} is already queued, running or made.")
    reason = f"retry now, asked by {actor.email}"
    case_scheduling.plan_retry(session, case, now, now, reason)
    case.status = CaseStatus.RETRYING
    case.awaiting = None
    case.next_retry_at = now
    case.next_step_reason = reason
    _audit(session, actor, case, "retry_now", now, {"attempt": attempt})
    return Outcome(True, f"Retry {attempt} is queued; the worker charges the card in moments.")


# ---- pause / resume -------------------------------------------------------------------------


def pause(session: Session, case_id: int, actor: Actor, now: datetime) -> Outcome:
    case = _lock(session, case_id)
    if case is None:
        return Outcome(False, "No such case.")
    if case.status in machine.TERMINAL:
        return Outcome(False, f"The case is {case.status}: there is no dunning to pause.")
    if case.dunning_paused:
        return Outcome(False, "Dunning is already paused.")
    case.dunning_paused = True
    case.next_retry_at = None
    case.next_step_reason = f"dunning paused by {actor.email}"
    retries = due_actions.cancel_pending(
        session, case_log.subject(case.id), now, (case_log.RETRY_KIND,)
    )
    messages = outbox.cancel(session, case_log.subject(case.id), now)
    _audit(session, actor, case, "pause", now, {"retries": retries, "messages": messages})
    return Outcome(True, "Dunning is paused: no retries or reminders until it is resumed.")


def resume(
    session: Session, case_id: int, rules: Rules, settings: Settings, actor: Actor, now: datetime
) -> Outcome:
    case = _lock(session, case_id)
    if case is None:
        return Outcome(False, "No such case.")
    if not case.dunning_paused:
        return Outcome(False, "Dunning is not paused.")
    case.dunning_paused = False
    case.next_step_reason = None
    _audit(session, actor, case, "resume", now)
    if case.status in machine.TERMINAL:
        return Outcome(True, "Dunning is resumed (the case is already over).")
    # reevaluate plans the next attempt, reviving the retry the pause cancelled
    case_scheduling.reevaluate(session, case, rules, now, f"dunning resumed by {actor.email}")
    # The reminders were cancelled at the pause: a marker makes the planner start the sequence
    # afresh from today instead of seeing it as already planned.
    case_log.record(
        session,
        case,
        now,
        "reminders",
        "reminders: restarted after the pause",
        {"sequence": None, "replaces": "paused"},
    )
    reminders.plan_case(session, case, rules, settings, now)
    return Outcome(True, "Dunning is resumed.")


# ---- close ----------------------------------------------------------------------------------


def close(
    session: Session, case_id: int, reason: str, note: str, actor: Actor, now: datetime
) -> Outcome:
    if reason not in CLOSE_REASONS:
        return Outcome(False, "Choose a reason for closing the case.")
    case = _lock(session, case_id)
    if case is None:
        return Outcome(False, "No such case.")
    if machine.after_close(CaseStatus(case.status)) == CaseStatus(case.status):
        return Outcome(False, f"The case is already {case.status}.")
    case.status = CaseStatus.CLOSED
    case.awaiting = None
    case.close_reason = f"admin_{reason}"[:40]
    case.closed_at = now
    case.next_retry_at = None
    case.next_step_reason = None
    due_actions.cancel_pending(session, case_log.subject(case.id), now)
    outbox.cancel(session, case_log.subject(case.id), now)
    card_update_links.revoke_for_case(session, case.id, now)
    case_log.record(
        session,
        case,
        now,
        "closed",
        f"closed by {actor.email}: {reason.replace('_', ' ')}",
        {"reason": reason},
        f"case:{case.id}:closed",
    )
    _audit(session, actor, case, "close", now, {"reason": reason, "note": note[:500]})
    return Outcome(True, "The case is closed; nothing more goes out for it.")


# ---- resend the card-update link ------------------------------------------------------------


def resend_link(
    session: Session, case_id: int, rules: Rules, settings: Settings, actor: Actor, now: datetime
) -> Outcome:
    case = _lock(session, case_id)
    if case is None:
        return Outcome(False, "No such case.")
    if case.status in machine.TERMINAL:
        return Outcome(False, f"The case is {case.status}: no link is needed.")
    if case.customer_id is None:
        return Outcome(False, "The case has no customer to send a link to.")
    # One resend per case per hour: a double click, or two admins at once, send one email.
    key = f"case:{case.id}:resend:{now:%Y%m%d%H}"
    if session.scalar(select(OutboxMessage.id).where(OutboxMessage.dedupe_key == key)):
        return Outcome(False, "A link was sent in the last hour already.")
    # The reminders' own writer: same locale, template and consent checks, and a fresh link
    # made for this message.
    message = reminders._write(
        session,
        case,
        rules,
        settings,
        now,
        channel="email",
        template=RESEND_TEMPLATE,
        step="admin.resend_link",
        at=now,
        dedupe_key=key,
        capped=False,
    )
    if message is None:
        return Outcome(False, "The customer has no email address we may write to.")
    _audit(session, actor, case, "resend_link", now, {"message_id": message.id})
    return Outcome(True, "A new card-update link is on its way to the customer.")
