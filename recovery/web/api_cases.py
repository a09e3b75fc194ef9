"""GET /api/v1/cases and /api/v1/cases/<id>: recovery cases with their whole timeline."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import request
from sqlalchemy import and_, or_, select

from recovery.domain.cases import CaseStatus
from recovery.models import (
    ActionStatus,
    CaseEvent,
    DueAction,
    Invoice,
    RecoveryCase,
)
from recovery.services.cases import evidence as case_evidence
from recovery.services.cases import log as case_log
from recovery.services.messaging import outbox
from recovery.web import runtime
from recovery.web.api import _int_arg, _iso, bp, with_json
from recovery.web.errors import ApiError

MAX_ID = 2**31 - 1  # the ids' column type (as in dashboard/guards.py)


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


def _since() -> datetime | None:
    raw = request.args.get("since")
    if raw is None:
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise ApiError(400, "invalid_parameter", "since must be an ISO 8601 date or time") from exc
    if parsed.tzinfo is None:
        raise ApiError(400, "invalid_parameter", "since needs a time zone, e.g. ...Z or +00:00")
    return parsed


@bp.get("/cases")
@with_json
def list_cases() -> dict[str, Any]:
    status = request.args.get("status")
    if status is not None and status not in {s.value for s in CaseStatus}:
        allowed = ", ".join(s.value for s in CaseStatus)
        raise ApiError(400, "invalid_parameter", f"status must be one of {allowed}")
    since = _since()
    limit = _int_arg("limit", 100, 1, 500)
    before = request.args.get("starting_after")
    query = select(RecoveryCase).order_by(RecoveryCase.opened_at.desc(), RecoveryCase.id.desc())
    if status:
        query = query.where(RecoveryCase.status == status)
    if since:
        query = query.where(RecoveryCase.opened_at >= since)
    if customer := request.args.get("customer"):
        query = query.where(RecoveryCase.customer_id == customer)
    with runtime().db.reading() as session:
        if before:
            anchor = session.get(RecoveryCase, int(before)) if before.isdigit() else None
            if anchor is None:
                raise ApiError(400, "invalid_parameter", "starting_after is not a known case id")
            query = query.where(
                or_(
                    RecoveryCase.opened_at < anchor.opened_at,
                    and_(RecoveryCase.opened_at == anchor.opened_at, RecoveryCase.id < anchor.id),
                )
            )
        rows = session.scalars(query.limit(limit + 1)).all()
        return {"data": [case_summary(c) for c in rows[:limit]], "has_more": len(rows) > limit}


def _messages(session: Any, case: RecoveryCase) -> list[dict[str, Any]]:
    """The case's emails and texts: pending, sent, failed (with the reason) or cancelled."""
    return outbox.messages_about(session, case_log.subject(case.id))


@bp.get("/cases/<int:case_id>")
@with_json
def get_case(case_id: int) -> dict[str, Any]:
    if case_id > MAX_ID:  # beyond the id column's range: no such case, not a database error
        raise ApiError(404, "not_found", f"no case {case_id}")
    with runtime().db.reading() as session:
        case = session.get(RecoveryCase, case_id)
        if case is None:
            raise ApiError(404, "not_found", f"no case {case_id}")
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
            .where(DueAction.subject == f"case:{case.id}")
            .where(DueAction.status.in_([ActionStatus.PENDING, ActionStatus.RUNNING]))
            .order_by(DueAction.due_at)
        ).all()
        return {
            **case_summary(case),
            "hosted_invoice_url": case.hosted_invoice_url,
            "invoice_status": invoice.status if invoice else None,
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
            "messages": _messages(session, case),
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
