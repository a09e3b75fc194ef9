"""A case's terminal moves: recovered the moment money arrives, closed when nothing is left to
collect, or waiting for the customer to authenticate. Every pending retry and reminder is
cancelled in the same transaction.

Everything in `recovery.services.cases` runs inside the caller's transaction (an event being
processed or a due action being run) and only writes to the database; calls to Stripe happen in
due actions (`recovery.services.cases.actions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from recovery.domain import cases as machine
from recovery.domain.cases import CaseStatus, CloseReason, RecoveredVia
from recovery.models import RecoveryCase
from recovery.services.cases.lines import Line, record_lines
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
    return bool(mark_recovered_many(session, [(case, via, amount)], now, override=override))


def mark_recovered_many(
    session: Session,
    recoveries: Sequence[tuple[RecoveryCase, RecoveredVia, int]],
    now: datetime,
    *,
    override: bool = False,
) -> set[int]:
    """`mark_recovered` for a round's cases (each once): what is pending for them cancelled in
    one statement per table, their timeline lines written in one. Returns the cases it moved."""
    lines: list[Line] = []
    data: dict[str, object]
    closing: list[tuple[RecoveryCase, RecoveredVia, int]] = []
    moved: set[int] = set()
    for case, via, amount in recoveries:
        if case.status == CaseStatus.RECOVERED:
            if override and case.recovered_via != via:
                data = {"was": case.recovered_via}
                key = f"case:{case.id}:attribution:{via.value}"
                lines.append(
                    Line(case.id, now, "attribution", f"recovered via {via.value}", key, data)
                )
                case.recovered_via = via.value
                moved.add(case.id)
            continue
        if machine.after_payment(CaseStatus(case.status)) != CaseStatus.RECOVERED:
            continue
        case.status = CaseStatus.RECOVERED
        case.awaiting = None
        case.recovered_via = via.value
        case.amount_recovered = amount
        case.closed_at = now
        case.next_retry_at = None
        case.next_step_reason = None
        closing.append((case, via, amount))
        moved.add(case.id)
    if closing:
        subjects = [subject(case.id) for case, _, _ in closing]
        # The end of dunning scheduled for a lost case (`case-end:`) too; counted apart.
        ends = [f"case-end:{case.id}" for case, _, _ in closing]
        cancelled = due_actions.cancel_pending_many(session, subjects + ends, now)
        outbox.cancel_many(session, subjects, now)
        for case, via, amount in closing:
            summary = f"recovered {amount / 100:.2f} {case.currency.upper()} via {via.value}"
            data = {
                "via": via.value,
                "amount": amount,
                "cancelled_actions": cancelled[subject(case.id)],
            }
            lines.append(
                Line(case.id, now, "recovered", summary, f"case:{case.id}:recovered", data)
            )
    record_lines(session, lines)
    return moved


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
