"""The subscriber's decision: accept the one offer, cancel, or keep the subscription as it is.

Each decision runs in one transaction that first locks the session row, so a double click, a
refresh or a second tab waits for the first and then finds the decision made: one Stripe change.
The Stripe call carries an idempotency key derived from the session and the decision, and an
accepted offer is also a row unique per session.

A cancellation is recorded before Stripe is called. If Stripe cannot be reached, the decision
stays `pending` and a due action applies it later with the same key; the subscriber gets the
confirmation page and email either way. An offer Stripe refuses for good (say, a price that no
longer exists) rolls back entirely: nothing was promised, and cancelling is still one click away.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from recovery.adapters.stripe.errors import AccessDenied, GatewayError
from recovery.adapters.stripe.protocol import StripeGateway
from recovery.adapters.stripe.shadow import ShadowModeRefused
from recovery.db import utcnow_from
from recovery.domain.cancel_terms import CancelPlan, Standing
from recovery.domain.offer_terms import OfferTerms, offer_ends_at, pause_until
from recovery.domain.offers import OfferKind, eligibility
from recovery.domain.stripe_objects.states import subscription_state
from recovery.models import CancelSession, OfferAcceptance, Subscription
from recovery.models.cancel_flow import Outcome, StripeStatus
from recovery.rules import Rules
from recovery.runtime import Runtime
from recovery.services.cancel import messages as cancel_messages
from recovery.services.cancel.flow import (
    BadInput,
    FlowError,
    SessionExpired,
    cancel_plan,
    check_answer,
    flow_env,
    locked_session,
    offer_history,
    record_answer,
    subscription_facts,
)
from recovery.services.events import mirror
from recovery.services.work import due_actions

log = logging.getLogger(__name__)

APPLY_ACTION = "cancel_flow.apply"
EMAIL_CANCELLED = "email.cancel_confirmation"
EMAIL_PAUSE_ENDING = "email.pause_ending"
WEBHOOK_ACTION = "cancel_flow.webhook"
# The inline attempt normally settles it; the worker picks a decision up after this, so the two
# rarely race (and when they do, the idempotency key makes it one change).
APPLY_GRACE = timedelta(minutes=2)
# Backoff doubles from 1 min to a 6 h cap: 30 attempts keep trying for about five days.
APPLY_MAX_ATTEMPTS = 30

SAVED_BY = {
    OfferKind.PAUSE: Outcome.SAVED_BY_PAUSE,
    OfferKind.DOWNGRADE: Outcome.SAVED_BY_DOWNGRADE,
    OfferKind.LONGER_TERM: Outcome.SAVED_BY_LONGER_TERM,
    OfferKind.DISCOUNT: Outcome.SAVED_BY_DISCOUNT,
}
SAVED = frozenset(SAVED_BY.values())


class OfferUnavailable(FlowError):
    """The offer cannot be had (anymore): nothing changed; cancelling is still possible."""

    status, code = 409, "offer_unavailable"


def idempotency_key(session_id: str, decision: str) -> str:
    return f"cancel-flow:{session_id}:{decision}"


def _subject(row: CancelSession) -> str:
    return f"cancel_session:{row.id}"


def _retry_later(exc: GatewayError) -> bool:
    # A revoked or wrong key is fixed by an operator; until then, keep the decision.
    return exc.transient or isinstance(exc, AccessDenied)


# ---- Stripe -------------------------------------------------------------------------------------


def apply_in_stripe(gateway: StripeGateway, row: CancelSession, feedback: str | None) -> Any:
    """Make the session's decision true in Stripe; returns the subscription Stripe answered."""
    if row.outcome == Outcome.CANCELLED:
        cancelled = gateway.cancel_subscription(
            row.subscription_id,
            at_period_end=bool(row.cancel_at_period_end),
            feedback=feedback,
            comment=(row.reason_text or None),
            idempotency_key=idempotency_key(row.id, "cancel"),
        )
        plan = CancelPlan.from_json(row.cancel_plan) if row.cancel_plan else None
        for invoice_id in plan.void_invoices if plan else ():
            _void(gateway, row, invoice_id)
        return cancelled
    terms = OfferTerms.from_json(row.offer_terms or {})
    key = idempotency_key(row.id, f"offer:{terms.kind.value}")
    if terms.kind == OfferKind.PAUSE:
        return gateway.pause_subscription(
            row.subscription_id,
            behavior=terms.pause_behavior or "void",
            resumes_at=int(row.ends_at.timestamp()) if row.ends_at else None,
            idempotency_key=key,
        )
    if terms.kind == OfferKind.DISCOUNT:
        return gateway.apply_subscription_coupon(
            row.subscription_id, terms.coupon or "", idempotency_key=key
        )
    return gateway.change_subscription_price(
        row.subscription_id,
        item_id=terms.item_id or "",
        price_id=terms.to_price or "",
        proration_behavior=terms.proration_behavior or "create_prorations",
        quantity=terms.quantity,
        idempotency_key=key,
    )


def _void(gateway: StripeGateway, row: CancelSession, invoice_id: str) -> None:
    """The rules void the unpaid invoice with the cancellation (`[cancel_flow] unpaid_invoice`).
    Transient errors propagate: the whole decision is applied again, with the same keys."""
    try:
        gateway.void_invoice(
            invoice_id, idempotency_key=idempotency_key(row.id, f"void:{invoice_id}")
        )
    except GatewayError as exc:
        if _retry_later(exc):
            raise
        # Paid or voided since the decision: nothing is owed on it either way.
        log.info("cancel session %s: invoice %s not voided: %s", row.id, invoice_id, exc.message)


def record_applied(
    session: Session,
    row: CancelSession,
    result: Any,
    now: datetime,
    reminder_days: int,
    rules: Rules,
) -> None:
    """Stripe made the change: mirror its answer, mark the decision applied, plan what follows."""
    if isinstance(result, dict) and result.get("object") == "subscription":
        state = subscription_state(result)
        mirror.apply_subscription(session, state, int(now.timestamp()))
        if row.outcome == Outcome.CANCELLED and row.cancel_at_period_end and state.cancel_at:
            row.ends_at = utcnow_from(state.cancel_at)
    row.stripe_status = StripeStatus.APPLIED
    row.stripe_error = None
    row.applied_at = now
    acceptance = session.scalar(select(OfferAcceptance).where(OfferAcceptance.session_id == row.id))
    if acceptance is not None and row.outcome in SAVED:
        acceptance.applied_at = acceptance.applied_at or now
    if row.outcome == Outcome.SAVED_BY_PAUSE and row.ends_at is not None:
        # The reminder goes out a few days before billing resumes (never in the past).
        cancel_messages.remind_pause_ending(
            session, row, rules, now, row.ends_at - timedelta(days=reminder_days)
        )


def _attempt(rt: Runtime, session: Session, row: CancelSession, now: datetime) -> None:
    """Try Stripe now; if it cannot be reached, a due action applies the decision later."""
    rules = rt.rules.cancel_flow
    reason = rules.reason(row.reason)
    feedback = reason.feedback if reason else None
    try:
        result = apply_in_stripe(rt.gateway, row, feedback)
    except GatewayError as exc:
        if row.outcome in SAVED and not _retry_later(exc):
            raise OfferUnavailable(f"Stripe refused the offer: {exc.message}") from exc
        row.stripe_status = StripeStatus.PENDING if _retry_later(exc) else StripeStatus.FAILED
        row.stripe_error = f"{exc.__class__.__name__}: {exc.message}"[:2000]
        if _retry_later(exc):
            if isinstance(exc, ShadowModeRefused):
                log.info("cancel session %s: shadow mode, not applied at Stripe", row.id)
            else:
                log.warning("cancel session %s: Stripe unavailable, applying later", row.id)
            due_actions.schedule(
                session,
                kind=APPLY_ACTION,
                subject=_subject(row),
                dedupe_key=f"{APPLY_ACTION}:{row.id}:{row.outcome}",
                due_at=now + APPLY_GRACE,
                now=now,
                payload={"session_id": row.id},
                max_attempts=APPLY_MAX_ATTEMPTS,
            )
        else:
            log.error("cancel session %s: Stripe refused %s: %s", row.id, row.outcome, exc)
        return
    reminder_days = rules.offers.get(OfferKind.PAUSE).reminder_days_before
    record_applied(session, row, result, now, reminder_days, rt.rules)


def notify_business(rt: Runtime, session: Session, row: CancelSession, now: datetime) -> None:
    if flow_env(rt.settings).webhook_url:
        due_actions.schedule(
            session,
            kind=WEBHOOK_ACTION,
            subject=_subject(row),
            dedupe_key=f"{WEBHOOK_ACTION}:{row.id}:{row.outcome}",
            due_at=now,
            now=now,
            payload={"session_id": row.id, "outcome": row.outcome},
        )


# ---- decisions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decided:
    session_id: str
    outcome: str
    token: str


def _open_for_decision(session: Session, token: str, now: datetime) -> CancelSession:
    row = locked_session(session, token, now)
    if row.expires_at <= now and row.outcome not in (Outcome.CANCELLED, *SAVED):
        raise SessionExpired("this link has expired")
    return row


def cancel(
    rt: Runtime, token: str, locale: str, reason_id: str | None = None, text: str | None = None
) -> Decided:
    rules = rt.rules.cancel_flow
    check_answer(rules, reason_id, text)
    now = rt.clock.now()
    with rt.db.transaction() as session:
        row = _open_for_decision(session, token, now)
        if row.outcome == Outcome.CANCELLED:
            return Decided(row.id, row.outcome, token)  # a double click: already done
        if row.expires_at <= now:
            raise SessionExpired("this link has expired")
        record_answer(row, reason_id, text, now)
        sub = session.get(Subscription, row.subscription_id)
        row.outcome = Outcome.CANCELLED
        row.decided_at = now
        row.display_locale = locale
        # What the pages said a cancellation would do, from the subscription's real state.
        plan = cancel_plan(session, sub, rules, now) or CancelPlan(Standing.PAID_UP, False, now)
        row.cancel_plan = plan.to_json()
        row.cancel_at_period_end = plan.at_period_end
        row.mrr_after = 0
        row.ends_at = plan.ends_at
        row.stripe_status = StripeStatus.PENDING
        notify_business(rt, session, row, now)
        # A save decided earlier but not applied yet must not land after the cancellation.
        due_actions.cancel_pending(session, _subject(row), now, kinds=(APPLY_ACTION,))
        _attempt(rt, session, row, now)
        # The confirmation is owed the moment we accept the request, Stripe or not: it is
        # written in this transaction (after the attempt, which may settle the end date).
        cancel_messages.confirm_cancellation(session, row, rt.rules, now)
        return Decided(row.id, row.outcome, token)


def accept_offer(rt: Runtime, token: str, locale: str, kind: str, months: str | None) -> Decided:
    rules = rt.rules.cancel_flow
    now = rt.clock.now()
    with rt.db.transaction() as session:
        row = _open_for_decision(session, token, now)
        if row.outcome in SAVED or row.outcome == Outcome.CANCELLED:
            return Decided(row.id, str(row.outcome), token)  # already decided: show it
        if not row.offer_shown or kind != row.offer_shown:
            raise BadInput("that offer was not offered in this session", "offer")
        terms = OfferTerms.from_json(row.offer_terms or {})
        chosen: int | None = None
        if terms.kind == OfferKind.PAUSE:
            if not months or not months.isdigit() or int(months) not in terms.pause_months:
                raise BadInput("choose one of the offered pause lengths", "pause_length")
            chosen = int(months)
        sub = session.get(Subscription, row.subscription_id)
        history = offer_history(session, row.customer_id)
        if (
            sub is None
            or not eligibility(
                terms.kind, rules.offers, subscription_facts(sub), history, now
            ).eligible
        ):
            raise OfferUnavailable("this offer is no longer available")
        row.outcome = SAVED_BY[terms.kind]
        row.decided_at = now
        row.display_locale = locale
        row.mrr_after = terms.monthly_after
        row.ends_at = pause_until(now, chosen) if chosen else offer_ends_at(terms, now, None)
        row.stripe_status = StripeStatus.PENDING
        session.add(
            OfferAcceptance(
                session_id=row.id,
                customer_id=row.customer_id,
                subscription_id=row.subscription_id,
                kind=terms.kind.value,
                months=chosen,
                terms=row.offer_terms or {},
                idempotency_key=idempotency_key(row.id, f"offer:{terms.kind.value}"),
                accepted_at=now,
                ends_at=offer_ends_at(terms, now, chosen),
            )
        )
        session.flush()  # the unique session_id: a second acceptance cannot be written
        notify_business(rt, session, row, now)
        _attempt(rt, session, row, now)  # a refusal for good rolls all of this back
        cancel_messages.confirm_offer(session, row, rt.rules, now)
        return Decided(row.id, str(row.outcome), token)


def keep(rt: Runtime, token: str, locale: str) -> Decided:
    """ "Keep my subscription": nothing changes in Stripe; the session ends as abandoned."""
    now = rt.clock.now()
    with rt.db.transaction() as session:
        row = _open_for_decision(session, token, now)
        if row.outcome is None:
            row.outcome = Outcome.ABANDONED
            row.decided_at = now
            row.display_locale = locale
            notify_business(rt, session, row, now)
        return Decided(row.id, str(row.outcome), token)
