"""Recovery cases as records for the JSON API: a page of case summaries (GET /api/v1/cases),
or one case with its whole timeline, attempts, messages and plan (GET /api/v1/cases/<id>)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from recovery.models import ActionStatus, CaseEvent, DueAction, Invoice, RecoveryCase
from recovery.runtime import Runtime
from recovery.services.cases import evidence as case_evidence
from recovery.services.cases import log as case_log
from recovery.services.experiments.assignment import experiment_of
from recovery.services.messaging import outbox
from recovery.services.reporting import case_list, paging

MAX_ID = 2**31 - 1  # the ids' column type: a larger number is no case, not a database error
KEYS = (RecoveryCase.opened_at, RecoveryCase.id)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def case_summary(case: RecoveryCase) -> dict[str, Any]:
    return {
        "id": case.id,
        "status": case.status,
        "awaiting": case.awaiting,
        "invoice": case.invoice_id,
        "customer": case.customer_id,
        "subscription": case.subscription_id,
        "currency": case.currency,
        "amount_due": case.amount_due,
        "amount_recovered": case.amount_recovered,
        "recovered_via": case.recovered_via,
        "close_reason": case.close_reason,
        "decline": {
            "category": case.decline_category,
            "code": case.decline_code,
            "card_brand": case.card_brand,
        },
        "opened_at": _iso(case.opened_at),
        "closed_at": _iso(case.closed_at),
        "our_attempts": case.our_attempts,
        "next_step": {"at": _iso(case.next_retry_at), "reason": case.next_step_reason},
    }


def _row(found: paging.AnyRow) -> dict[str, Any]:
    return case_summary(found[0])


def _case_id(raw: str) -> int:
    if not raw.isdigit() or int(raw) > MAX_ID:
        raise paging.UnknownAnchor(raw)
    return int(raw)


def list_cases(
    rt: Runtime,
    *,
    status: str | None,
    since: datetime | None,
    customer: str | None,
    limit: int,
    starting_after: str | None,
) -> paging.Slice[dict[str, Any]]:
    """A page of cases, newest opened first, after the case `starting_after` (an id;
    paging.UnknownAnchor when there is none such). `status` is a key of
    `case_list.STATUS_FILTERS`: `open` is every case still in progress."""
    query = select(RecoveryCase)
    if status:
        query = query.where(RecoveryCase.status.in_(case_list.STATUS_FILTERS[status]))
    if since:
        query = query.where(RecoveryCase.opened_at >= since)
    if customer:
        query = query.where(RecoveryCase.customer_id == customer)
    with rt.db.reading() as session:
        after = None
        if starting_after:
            after = paging.anchor_of(session, KEYS, _case_id(starting_after))
        return paging.newest_first(session, query, KEYS, after=after, limit=limit, row=_row)


def case_detail(rt: Runtime, case_id: int) -> dict[str, Any] | None:
    """The case with its timeline, the invoice's attempts, its messages and what is scheduled;
    None when there is no such case."""
    if case_id > MAX_ID:  # beyond the id column's range: no such case, not a database error
        return None
    with rt.db.reading() as session:
        case = session.get(RecoveryCase, case_id)
        if case is None:
            return None
        events = session.scalars(
            select(CaseEvent)
            .where(CaseEvent.case_id == case.id)
            .order_by(CaseEvent.at, CaseEvent.id)
        ).all()
        invoice = session.get(Invoice, case.invoice_id)
        attempts = sorted(
            case_evidence.attempts_for(session, case, invoice) if invoice else [],
            key=lambda a: (a.created or 0, a.id),
        )
        scheduled = session.scalars(
            select(DueAction)
            .where(DueAction.subject == case_log.subject(case.id))
            .where(DueAction.status.in_([ActionStatus.PENDING, ActionStatus.RUNNING]))
            .order_by(DueAction.due_at)
        ).all()
        return {
            **case_summary(case),
            "hosted_invoice_url": case.hosted_invoice_url,
            "invoice_status": invoice.status if invoice else None,
            "experiment": experiment_of(session, case_id=case.id),
            "timeline": [
                {"at": _iso(e.at), "kind": e.kind, "summary": e.summary, "data": e.data}
                for e in events
            ],
            "attempts": [
                {
                    "id": a.id,
                    "at": a.created,
                    "status": a.status,
                    "amount": a.amount,
                    "failure_code": a.failure_code,
                    "decline_code": a.decline_code,
                    "advice_code": a.advice_code,
                    "network_advice_code": a.network_advice_code,
                    "network_decline_code": a.network_decline_code,
                    "card_brand": a.card_brand,
                    "card_last4": a.card_last4,
                }
                for a in attempts
            ],
            "messages": outbox.messages_about(session, case_log.subject(case.id)),
            "scheduled": [
                {
                    "kind": a.kind,
                    "due_at": _iso(a.due_at),
                    "status": a.status,
                    "reason": (a.payload or {}).get("reason"),
                }
                for a in scheduled
            ],
        }
