"""A decision's line in a case's timeline gives the reason of the decline that decision read.

Stripe's charge times are whole seconds: a charge mirrored just after a decision, in the same
second (a card saved on the card-update page and declined while the webhook of its attaching
was being processed), looked older than the decision, and the line lent the decision that
charge's reason: "retry the card. Why: the card has expired; ... not charged again"."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from recovery.models import CaseEvent, PaymentAttempt, RecoveryCase
from recovery.services.cases import timeline
from tests.support.scenario import Story

AT = datetime(2026, 12, 6, 1, 30, 19, 647155, tzinfo=UTC)


def _decision(data: dict[str, Any]) -> CaseEvent:
    return CaseEvent(
        case_id=1,
        at=AT,
        kind="decision",
        summary="generic_decline: a generic decline: next try Mon 7 Dec 02:30 Europe/Vienna - "
        "our retry 1, about a day after the failure",
        data={
            "cause": "payment_method.attached",
            "next_retry_at": "2026-12-07T01:30:19+00:00",
            "stop": False,
            "wait_for_new_card": False,
            **data,
        },
    )


def _why(data: dict[str, Any]) -> str:
    # Declined in the same second, mirrored after the decision was written.
    expired = PaymentAttempt(
        id="py_1",
        status="failed",
        created=int(AT.timestamp()),
        failure_code="card_declined",
        decline_code="expired_card",
    )
    case = RecoveryCase(id=1, decline_category="needs_new_card", decline_code="expired_card")
    line = timeline._decision(_decision(data), [expired], case, "Europe/Vienna")
    assert line.summary == "Decided after a card was added: retry the card."
    return line.note


def test_the_why_is_the_decline_the_decision_read() -> None:
    why = _why({"decline_category": "soft", "decline_code": "generic_decline"})
    assert "generic_decline" in why and "expired" not in why


def test_lines_written_before_the_decline_was_kept_still_read_the_charges() -> None:
    assert "expired_card" in _why({})


def test_a_decision_writes_the_decline_it_read(runtime: Any, fake_gateway: Any, clock: Any) -> None:
    story = Story(runtime, fake_gateway, clock)
    billing = story.customer(brand="visa", amount=2000)
    assert story.stripe_charges(billing.invoice, decline_code="insufficient_funds") == "declined"
    case_id = story.case(billing.invoice).id
    with runtime.db.transaction() as s:
        lines = s.scalars(
            select(CaseEvent).where(CaseEvent.case_id == case_id, CaseEvent.kind == "decision")
        ).all()
        assert [(e.data["decline_category"], e.data["decline_code"]) for e in lines] == [
            ("soft", "insufficient_funds")
        ]
