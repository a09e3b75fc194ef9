"""Recovery cases: opened by a failed invoice, steered by the retry policy, closed the moment
money arrives (every pending retry and reminder cancelled in the same transaction).

Everything here runs inside the caller's transaction - an event being processed or a due
action being run - and only writes to the database; calls to Stripe happen in due actions
(services/case_actions.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from recovery.config import Rules
from recovery.db import insert_or_ignore, utcnow_from
from recovery.domain import cases as machine
from recovery.domain.cases import CaseStatus, CloseReason, RecoveredVia
from recovery.domain.declines import Decline, classify
from recovery.domain.retry_policy import (
    Attempt,
    CardInfo,
    Funding,
    RetryContext,
    RetryDecision,
    decide_next_retry,
)
from recovery.domain.timezones import customer_timezone
from recovery.models import (
    ActionStatus,
    CaseEvent,
    Customer,
    DueAction,
    Invoice,
    InvoicePayment,
    PaymentAttempt,
    PaymentMethod,
    RecoveryCase,
    Subscription,
)
from recovery.services import due_actions, outbox

RETRY_KIND = "case.retry"
AUTO_ADVANCE_KIND = "case.auto_advance_off"
END_OF_DUNNING_KIND = "case.end_of_dunning"
WINDOW_END_KIND = "case.window_end"
CAP_PERIOD = timedelta(days=30)


def subject(case_id: int) -> str:
    """Every due action about a case (retries, reminders) carries this subject."""
    return f"case:{case_id}"


def record(
    session: Session,
    case: RecoveryCase,
    now: datetime,
    kind: str,
    summary: str,
    data: Mapping[str, Any] | None = None,
    dedupe_key: str | None = None,
) -> bool:
    """Add a line to the case's timeline (once per dedupe key). True when added."""
    values = {
        "case_id": case.id,
        "at": now,
        "kind": kind,
        "summary": summary,
        "data": dict(data or {}),
        "dedupe_key": dedupe_key,
    }
    if dedupe_key is None:
        session.add(CaseEvent(**values))
        return True
    return insert_or_ignore(session, CaseEvent, values, ["dedupe_key"])


def _lock(session: Session, invoice_id: str) -> RecoveryCase | None:
    return session.scalars(
        select(RecoveryCase).where(RecoveryCase.invoice_id == invoice_id).with_for_update()
    ).one_or_none()


def is_recoverable(invoice: Invoice) -> bool:
    """A subscription invoice Stripe collects automatically, open, with money still owed."""
    return (
        invoice.subscription_id is not None
        and invoice.collection_method in (None, "charge_automatically")
        and invoice.status == "open"
        and invoice.amount_remaining > 0
    )


def open_case(
    session: Session, invoice: Invoice, rules: Rules, now: datetime
) -> RecoveryCase | None:
    """The case for this invoice, opened now if it has none and is worth recovering."""
    existing = _lock(session, invoice.id)
    if existing is not None or not is_recoverable(invoice):
        return existing
    values = {
        "invoice_id": invoice.id,
        "customer_id": invoice.customer_id,
        "subscription_id": invoice.subscription_id,
        "status": CaseStatus.OPEN,
        "currency": invoice.currency,
        "amount_due": invoice.amount_remaining,
        "opened_at": now,
        "hosted_invoice_url": invoice.hosted_invoice_url,
    }
    insert_or_ignore(session, RecoveryCase, values, ["invoice_id"])
    case = _lock(session, invoice.id)
    assert case is not None
    amount = f"{invoice.amount_remaining / 100:.2f} {invoice.currency.upper()}"
    if record(
        session,
        case,
        now,
        "opened",
        f"payment of {amount} failed",
        {"invoice": invoice.id},
        f"case:{case.id}:opened",
    ):
        window_end = now + timedelta(days=rules.retry.window_days)
        due_actions.schedule(
            session,
            kind=WINDOW_END_KIND,
            subject=subject(case.id),
            dedupe_key=f"case:{case.id}:window_end",
            due_at=window_end,
            now=now,
            payload={"case_id": case.id},
        )
        if rules.retry.retry_owner == "recovery":
            # Stripe must stop its own attempts on this invoice, or the two collide.
            due_actions.schedule(
                session,
                kind=AUTO_ADVANCE_KIND,
                subject=subject(case.id),
                dedupe_key=f"case:{case.id}:auto_advance_off",
                due_at=now,
                now=now,
                payload={"case_id": case.id},
            )
    return case


# ---- what the policy needs to know ---------------------------------------------------------------


def attempts_for(session: Session, case: RecoveryCase, invoice: Invoice) -> list[PaymentAttempt]:
    """Attempts on this invoice. Since API 2025-03-31 a charge no longer names its invoice:
    besides explicit links, a failed charge of the same customer for the same amount since
    the invoice was created is taken to be this invoice's."""
    linked_intents = select(InvoicePayment.payment_intent_id).where(
        InvoicePayment.invoice_id == invoice.id
    )
    # Correlated, so it probes the payment_intent_id index once per candidate row; a plain
    # NOT IN (all other invoices' payments) read the whole table on every failure - quadratic
    # over a mirror's life.
    paid_elsewhere = (
        select(InvoicePayment.id)
        .where(InvoicePayment.payment_intent_id == PaymentAttempt.payment_intent_id)
        .where(InvoicePayment.invoice_id != invoice.id)
        .exists()
    )
    unlinked_same_amount = and_(
        PaymentAttempt.invoice_id.is_(None),
        PaymentAttempt.customer_id == case.customer_id,
        PaymentAttempt.amount == invoice.amount_due,
        PaymentAttempt.currency == invoice.currency,
        PaymentAttempt.created >= (invoice.created or 0),
        or_(
            PaymentAttempt.payment_intent_id.is_(None),
            ~paid_elsewhere,
        ),
    )
    return list(
        session.scalars(
            select(PaymentAttempt).where(
                or_(
                    PaymentAttempt.invoice_id == invoice.id,
                    PaymentAttempt.payment_intent_id.in_(linked_intents),
                    unlinked_same_amount,
                )
            )
        )
    )


def _decline(row: PaymentAttempt) -> Decline:
    return Decline(
        failure_code=row.failure_code,
        decline_code=row.decline_code,
        advice_code=row.advice_code,
        network_advice_code=row.network_advice_code,
        network_decline_code=row.network_decline_code,
        card_brand=row.card_brand,
        outcome_type=row.outcome_type,
        outcome_reason=row.outcome_reason,
    )


def _our_charge_ids(session: Session, case: RecoveryCase) -> set[str]:
    rows = session.scalars(
        select(CaseEvent.data).where(CaseEvent.case_id == case.id, CaseEvent.kind == "our_attempt")
    )
    return {str(d.get("attempt_id")) for d in rows if d.get("attempt_id")}


def _to_attempt(row: PaymentAttempt, ours: set[str], on_invoice: bool) -> Attempt:
    return Attempt(
        at=utcnow_from(row.created or row.version_ts) or datetime.min,
        card_fingerprint=row.card_fingerprint,
        card_brand=row.card_brand,
        decline=None if row.status == "succeeded" else _decline(row),
        succeeded=row.status == "succeeded",
        by="recovery" if row.id in ours else "stripe",
        on_this_invoice=on_invoice,
    )


def current_card(session: Session, case: RecoveryCase) -> PaymentMethod | None:
    """The card Stripe will charge: the subscription's default, else the customer's."""
    sub = session.get(Subscription, case.subscription_id) if case.subscription_id else None
    customer = session.get(Customer, case.customer_id) if case.customer_id else None
    for pm_id in (
        sub.default_payment_method_id if sub else None,
        sub.default_source_id if sub else None,
        customer.default_payment_method_id if customer else None,
        customer.default_source_id if customer else None,
    ):
        if pm_id:
            pm = session.get(PaymentMethod, pm_id)
            if pm is not None:
                return pm
            return PaymentMethod(id=pm_id)  # known by id only: a card nonetheless
    return None


_FUNDING: dict[str | None, Funding] = {"credit": "credit", "debit": "debit", "prepaid": "prepaid"}


def _funding(value: str | None) -> Funding:
    return _FUNDING.get(value, "unknown")


def retry_context(
    session: Session, case: RecoveryCase, invoice: Invoice, now: datetime
) -> tuple[RetryContext, list[PaymentAttempt]]:
    rows = attempts_for(session, case, invoice)
    ours = _our_charge_ids(session, case)
    failed = sorted((r for r in rows if r.status == "failed"), key=lambda r: r.created or 0)
    last_failed = failed[-1] if failed else None
    pm = current_card(session, case)
    card = None
    if pm is not None:
        card = CardInfo(brand=pm.brand, funding=_funding(pm.funding), fingerprint=pm.fingerprint)
    elif last_failed is not None:
        card = CardInfo(
            brand=last_failed.card_brand,
            funding=_funding(last_failed.card_funding),
            fingerprint=last_failed.card_fingerprint,
        )
    changed = False
    if pm is not None and last_failed is not None:
        changed = (
            (last_failed.payment_method_id is not None and pm.id != last_failed.payment_method_id)
            # the card updater or the customer changed this card after it failed
            or (pm.version_ts or 0) > (last_failed.created or 0)
        )
    fingerprints = {r.card_fingerprint for r in rows if r.card_fingerprint}
    if pm is not None and pm.fingerprint:
        fingerprints.add(pm.fingerprint)
    row_ids = {r.id for r in rows}
    since = int((now - CAP_PERIOD).timestamp())
    same_card_elsewhere = (
        session.scalars(
            select(PaymentAttempt).where(
                PaymentAttempt.card_fingerprint.in_(fingerprints),
                PaymentAttempt.created >= since,
            )
        ).all()
        if fingerprints
        else []
    )
    customer = session.get(Customer, case.customer_id) if case.customer_id else None
    zone = customer_timezone(
        customer.address_country if customer else None,
        customer.preferred_locales if customer else (),
    )
    successes = session.scalars(
        select(PaymentAttempt.created)
        .where(PaymentAttempt.customer_id == case.customer_id, PaymentAttempt.status == "succeeded")
        .order_by(PaymentAttempt.created.desc())
        .limit(24)
    ).all()
    tz = ZoneInfo(zone)
    attempts = [_to_attempt(r, ours, True) for r in rows] + [
        _to_attempt(r, ours, False) for r in same_card_elsewhere if r.id not in row_ids
    ]
    ctx = RetryContext(
        case_opened_at=case.opened_at,
        attempts=attempts,
        card=card,
        card_changed_since_last_failure=changed,
        customer_timezone=zone,
        amount=invoice.amount_remaining,
        currency=invoice.currency,
        past_success_days=[datetime.fromtimestamp(ts, tz).day for ts in successes if ts],
    )
    return ctx, failed


# ---- steering ------------------------------------------------------------------------------


def _pending_retries(session: Session, case: RecoveryCase) -> Sequence[DueAction]:
    return session.scalars(
        select(DueAction).where(
            DueAction.subject == subject(case.id),
            DueAction.kind == RETRY_KIND,
            DueAction.status == ActionStatus.PENDING,
        )
    ).all()


def retry_key(case: RecoveryCase) -> str:
    """The next retry's due-action key: one per attempt number, so one charge per attempt."""
    return f"case:{case.id}:attempt:{case.our_attempts + 1}"


def stripe_key(action_key: str, payload: Mapping[str, Any]) -> str:
    """The idempotency key of the charge a retry action makes. A revived attempt (see
    plan_retry) gets a fresh one: Stripe replays the stored answer to a reused key for 24 h."""
    revival = int(payload.get("revival") or 0)
    return f"{action_key}:r{revival}" if revival else action_key


def plan_retry(
    session: Session, case: RecoveryCase, due_at: datetime, now: datetime, reason: str
) -> None:
    """Make the case's next attempt due at `due_at`: a pending one moves, any other pending
    retry is cancelled. An action for this attempt that ended without charging (cancelled by a
    pause, skipped because Stripe was about to charge, refused) comes back: attempt n is not
    made until our_attempts says so, and its key must not stop it for good."""
    attempt = case.our_attempts + 1
    key = retry_key(case)
    for action in _pending_retries(session, case):
        if action.dedupe_key != key:
            action.status = ActionStatus.CANCELLED
            action.finished_at = now
    payload = {"case_id": case.id, "attempt": attempt, "reason": reason}
    if due_actions.schedule(
        session,
        kind=RETRY_KIND,
        subject=subject(case.id),
        dedupe_key=key,
        due_at=due_at,
        now=now,
        payload=payload,
    ):
        return
    existing = session.scalars(
        select(DueAction).where(DueAction.dedupe_key == key).with_for_update()
    ).one()
    if existing.status == ActionStatus.RUNNING:
        return  # its worker decides; the next decision follows from what it finds
    if existing.status == ActionStatus.PENDING:
        if existing.due_at != due_at:  # the policy learnt more (a late decline detail)
            existing.due_at = due_at
            existing.payload = {**existing.payload, "reason": reason}
        return
    revival = int(existing.payload.get("revival") or 0) + 1
    existing.status = ActionStatus.PENDING
    existing.due_at = due_at
    existing.finished_at = None
    existing.attempts = 0
    existing.last_error = None
    existing.lease_owner = None
    existing.lease_expires_at = None
    existing.payload = {**payload, "revival": revival}


def _schedule_retry(
    session: Session, case: RecoveryCase, decision: RetryDecision, now: datetime
) -> None:
    assert decision.at is not None
    plan_retry(session, case, decision.at, now, decision.reason)


def reevaluate(
    session: Session, case: RecoveryCase, rules: Rules, now: datetime, cause: str
) -> RetryDecision | None:
    """Ask the retry policy what comes next for an active case, and make it so."""
    if case.status in machine.TERMINAL or case.dunning_paused:
        return None
    invoice = session.get(Invoice, case.invoice_id)
    if invoice is None:
        return None
    ctx, failed = retry_context(session, case, invoice, now)
    decision = decide_next_retry(ctx, rules.retry, now)
    if failed:
        last = failed[-1]
        verdict = classify(_decline(last))
        case.decline_category = verdict.category.value
        case.decline_code = last.decline_code or last.failure_code
        case.card_brand = last.card_brand or case.card_brand
    case.stripe_next_attempt_at = invoice.next_payment_attempt or case.stripe_next_attempt_at
    step = machine.after_decision(CaseStatus(case.status), decision)
    if (
        case.status == CaseStatus.AWAITING_CUSTOMER
        and case.awaiting == "authentication"
        and (decision.at is None and not decision.stop)
    ):
        step = machine.Step(
            CaseStatus.AWAITING_CUSTOMER, machine.AwaitingReason.AUTHENTICATION, False
        )
    case.status = step.status
    case.awaiting = step.awaiting.value if step.awaiting else None
    case.next_retry_at = decision.at
    case.next_step_reason = decision.reason
    if decision.at is not None:
        _schedule_retry(session, case, decision, now)
    else:
        due_actions.cancel_pending(session, subject(case.id), now, (RETRY_KIND,))
    digest = hashlib.sha256(decision.reason.encode()).hexdigest()[:12]
    record(
        session,
        case,
        now,
        "decision",
        decision.reason,
        {
            "cause": cause,
            "next_retry_at": decision.at.isoformat() if decision.at else None,
            "stop": decision.stop,
            "wait_for_new_card": decision.wait_for_new_card,
        },
        f"case:{case.id}:decision:{case.our_attempts}:{len(failed)}:{digest}",
    )
    if step.end_dunning:
        case.closed_at = now
        due_actions.cancel_pending(session, subject(case.id), now)
        outbox.cancel(session, subject(case.id), now)
        record(
            session,
            case,
            now,
            "lost",
            f"dunning ended: {rules.retry.end_of_dunning}",
            dedupe_key=f"case:{case.id}:lost",
        )
        if rules.retry.end_of_dunning != "leave_past_due":
            due_actions.schedule(
                session,
                kind=END_OF_DUNNING_KIND,
                subject=f"case-end:{case.id}",
                dedupe_key=f"case:{case.id}:end_of_dunning",
                due_at=now,
                now=now,
                payload={"case_id": case.id, "apply": rules.retry.end_of_dunning},
            )
    return decision


def mark_recovered(
    session: Session,
    case: RecoveryCase,
    via: RecoveredVia,
    amount: int,
    now: datetime,
    *,
    override: bool = False,
) -> bool:
    """Money arrived: close the case and cancel everything pending for it, atomically.

    `override` lets the party that asked for the payment (our retry, the card-update page)
    correct a guess made by a webhook that was processed first.
    """
    if case.status == CaseStatus.RECOVERED:
        if override and case.recovered_via != via:
            record(
                session,
                case,
                now,
                "attribution",
                f"recovered via {via.value}",
                {"was": case.recovered_via},
                f"case:{case.id}:attribution:{via.value}",
            )
            case.recovered_via = via.value
            return True
        return False
    new = machine.after_payment(CaseStatus(case.status))
    if new != CaseStatus.RECOVERED:
        return False
    case.status = new
    case.awaiting = None
    case.recovered_via = via.value
    case.amount_recovered = amount
    case.closed_at = now
    case.next_retry_at = None
    case.next_step_reason = None
    cancelled = due_actions.cancel_pending(session, subject(case.id), now)
    outbox.cancel(session, subject(case.id), now)
    session.execute(
        update(DueAction)
        .where(DueAction.subject == f"case-end:{case.id}", DueAction.status == ActionStatus.PENDING)
        .values(status=ActionStatus.CANCELLED, finished_at=now)
    )
    record(
        session,
        case,
        now,
        "recovered",
        f"recovered {amount / 100:.2f} {case.currency.upper()} via {via.value}",
        {"via": via.value, "amount": amount, "cancelled_actions": cancelled},
        f"case:{case.id}:recovered",
    )
    return True


def mark_closed(session: Session, case: RecoveryCase, reason: CloseReason, now: datetime) -> bool:
    new = machine.after_close(CaseStatus(case.status))
    if new == CaseStatus(case.status):
        return False
    case.status = new
    case.awaiting = None
    case.close_reason = reason.value
    case.closed_at = now
    case.next_retry_at = None
    due_actions.cancel_pending(session, subject(case.id), now)
    outbox.cancel(session, subject(case.id), now)
    record(
        session, case, now, "closed", f"closed: {reason.value}", dedupe_key=f"case:{case.id}:closed"
    )
    return True


def await_authentication(
    session: Session, case: RecoveryCase, hosted_invoice_url: str | None, now: datetime
) -> None:
    step = machine.after_authentication_required(CaseStatus(case.status))
    if step.status == CaseStatus(case.status) and case.awaiting == "authentication":
        return
    case.status = step.status
    case.awaiting = step.awaiting.value if step.awaiting else None
    case.hosted_invoice_url = hosted_invoice_url or case.hosted_invoice_url
    case.next_retry_at = None
    case.next_step_reason = "the bank asks the customer to authenticate the payment"
    due_actions.cancel_pending(session, subject(case.id), now, (RETRY_KIND,))
    record(
        session,
        case,
        now,
        "awaiting_customer",
        case.next_step_reason,
        {"hosted_invoice_url": case.hosted_invoice_url},
        f"case:{case.id}:authentication:{case.our_attempts}",
    )


def active_cases_of_customer(session: Session, customer_id: str) -> Sequence[RecoveryCase]:
    return session.scalars(
        select(RecoveryCase)
        .where(RecoveryCase.customer_id == customer_id)
        .where(RecoveryCase.status.in_([s.value for s in machine.ACTIVE]))
        .with_for_update()
    ).all()
