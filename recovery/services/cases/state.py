"""A case's terminal moves: recovered the moment money arrives, closed when nothing is left to
collect, or waiting for the customer to authenticate. Every pending retry and reminder is
cancelled in the same transaction.

Everything in `recovery.services.cases` runs inside the caller's transaction (an event being
processed or a due action being run) and only writes to the database; calls to Stripe happen in
due actions (`recovery.services.cases.actions`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from recovery.domain import cases as machine
from recovery.domain.cases import CaseStatus, CloseReason, RecoveredVia
from recovery.models import (
    ActionStatus,
    DueAction,
    RecoveryCase,
)
from recovery.services.cases.log import RETRY_KIND, record, subject
from recovery.services.messaging import outbox
from recovery.services.work import due_actions


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
