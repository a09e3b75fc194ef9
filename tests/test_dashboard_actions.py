"""Admin actions on a case from its dashboard page: retry now (once, however often clicked, and
never against the network's rules), pause and resume, close, resend the card-update link - each
audited and shown on the timeline."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from recovery.adapters.clock import FrozenClock
from recovery.models import ActionStatus, Customer, DueAction, OutboxMessage, RecoveryCase
from recovery.models.users import AuditEntry
from recovery.runtime import Runtime
from recovery.services.cases import log as case_log
from recovery.services.cases import scheduling as case_scheduling
from recovery.services.messaging import reminders
from tests.conftest import START
from tests.support.dashboard import (
    ADMIN,
    add_case,
    add_customer,
    add_failed_invoice,
    add_user,
    login,
    token_for,
)


@pytest.fixture
def admin(runtime: Runtime, client: Any) -> Any:
    add_user(runtime, ADMIN, "admin")
    login(client, ADMIN)
    return client


def failed_case(runtime: Runtime, decline_code: str, failed_hours_ago: int = 48) -> int:
    with runtime.db.transaction() as db:
        add_customer(db, "cus_000001", "ada@example.com", "Ada")
        case = add_case(db, n=1, opened_at=START - timedelta(days=2), customer_id="cus_000001")
        add_failed_invoice(
            db, case, failed_at=START - timedelta(hours=failed_hours_ago), decline_code=decline_code
        )
        return case.id


def post(client: Any, case_id: int, action: str, **data: str) -> Any:
    token = token_for(client, f"/dashboard/cases/{case_id}")
    return client.post(f"/dashboard/cases/{case_id}/{action}", data={"csrf_token": token, **data})


def retries(runtime: Runtime, case_id: int) -> list[DueAction]:
    with runtime.db.transaction() as db:
        return list(
            db.scalars(
                select(DueAction).where(
                    DueAction.subject == case_log.subject(case_id),
                    DueAction.kind == case_log.RETRY_KIND,
                )
            )
        )


def audit(runtime: Runtime) -> list[tuple[str, str, int | None]]:
    with runtime.db.transaction() as db:
        return [(a.action, a.actor, a.case_id) for a in db.scalars(select(AuditEntry))]


def test_retry_now_queues_exactly_one_due_action(runtime: Runtime, admin: Any) -> None:
    case_id = failed_case(runtime, "do_not_honor")
    first = post(admin, case_id, "retry")
    second = post(admin, case_id, "retry")  # a double click
    assert first.status_code == second.status_code == 302
    queued = retries(runtime, case_id)
    assert len(queued) == 1
    assert queued[0].dedupe_key == f"case:{case_id}:attempt:1"
    assert queued[0].due_at == START and queued[0].status == ActionStatus.PENDING
    assert audit(runtime) == [("retry_now", ADMIN, case_id)]
    page = admin.get(f"/dashboard/cases/{case_id}").get_data(as_text=True)
    assert "already queued" in page  # the second click was told, not obeyed
    assert "retry now" in page  # on the timeline


def test_retry_now_moves_a_planned_retry_forward(runtime: Runtime, admin: Any) -> None:
    case_id = failed_case(runtime, "do_not_honor")
    with runtime.db.transaction() as db:
        case = db.get(RecoveryCase, case_id)
        assert case is not None
        case_scheduling.reevaluate(db, case, runtime.rules, START, "test")
        for action in db.scalars(select(DueAction)):
            action.due_at = START + timedelta(days=2)  # planned for later
    planned = retries(runtime, case_id)
    assert len(planned) == 1 and planned[0].due_at > START
    post(admin, case_id, "retry")
    after = retries(runtime, case_id)
    assert [(a.dedupe_key, a.due_at) for a in after] == [(planned[0].dedupe_key, START)]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("stolen_card", "never charged again"),
        ("expired_card", "waiting for the customer to add a different card"),
    ],
)
def test_retry_now_refuses_what_must_not_be_retried(
    runtime: Runtime, admin: Any, code: str, expected: str
) -> None:
    case_id = failed_case(runtime, code)
    response = post(admin, case_id, "retry")
    assert response.status_code == 302
    page = admin.get(f"/dashboard/cases/{case_id}").get_data(as_text=True)
    assert expected in page
    assert retries(runtime, case_id) == []
    assert audit(runtime) == []


def test_retry_now_respects_the_minimum_gap(runtime: Runtime, admin: Any) -> None:
    case_id = failed_case(runtime, "do_not_honor", failed_hours_ago=3)
    post(admin, case_id, "retry")
    page = admin.get(f"/dashboard/cases/{case_id}").get_data(as_text=True)
    assert "Too soon to charge again" in page
    assert retries(runtime, case_id) == []


def test_pause_and_resume_are_audited(runtime: Runtime, admin: Any) -> None:
    case_id = failed_case(runtime, "do_not_honor")
    with runtime.db.transaction() as db:
        case = db.get(RecoveryCase, case_id)
        assert case is not None
        case_scheduling.reevaluate(db, case, runtime.rules, START, "test")
    post(admin, case_id, "pause")
    post(admin, case_id, "pause")  # already paused: no second entry
    with runtime.db.transaction() as db:
        case = db.get(RecoveryCase, case_id)
        assert case is not None and case.dunning_paused
    assert all(a.status == ActionStatus.CANCELLED for a in retries(runtime, case_id))
    page = admin.get(f"/dashboard/cases/{case_id}").get_data(as_text=True)
    assert "Resume dunning" in page and "pause" in page
    post(admin, case_id, "resume")
    assert [a for a, _, _ in audit(runtime)] == ["pause", "resume"]
    assert any(a.status == ActionStatus.PENDING for a in retries(runtime, case_id))


def pending_messages(runtime: Runtime, case_id: int) -> list[OutboxMessage]:
    with runtime.db.transaction() as db:
        return list(
            db.scalars(
                select(OutboxMessage).where(
                    OutboxMessage.case_id == case_id, OutboxMessage.status == "pending"
                )
            )
        )


def test_a_paused_case_gets_no_reminders_until_resumed(runtime: Runtime, admin: Any) -> None:
    """Stripe keeps sending events about a paused case's invoice; none may re-plan reminders."""
    case_id = failed_case(runtime, "do_not_honor")

    def webhook_touches_the_case(awaiting: str | None = None) -> None:
        """What reminders.on_event does for each event; `awaiting` as a new failure sets it."""
        with runtime.db.transaction() as db:
            case = db.get(RecoveryCase, case_id)
            assert case is not None
            case.awaiting = awaiting or case.awaiting
            reminders.sync_case(db, case, runtime.rules, runtime.settings, runtime.clock.now())

    webhook_touches_the_case()
    planned = pending_messages(runtime, case_id)
    assert planned
    post(admin, case_id, "pause")
    assert pending_messages(runtime, case_id) == []
    webhook_touches_the_case(awaiting="authentication")  # a sequence the case did not have
    assert pending_messages(runtime, case_id) == []
    with runtime.db.transaction() as db:
        message = db.get(OutboxMessage, planned[0].id)
        assert message is not None
        assert reminders.still_wanted(db, message) == "dunning is paused"
    post(admin, case_id, "resume")
    assert pending_messages(runtime, case_id)


def test_close_is_audited_and_stops_everything(runtime: Runtime, admin: Any) -> None:
    case_id = failed_case(runtime, "do_not_honor")
    with runtime.db.transaction() as db:
        case = db.get(RecoveryCase, case_id)
        assert case is not None
        case_scheduling.reevaluate(db, case, runtime.rules, START, "test")
    assert post(admin, case_id, "close", reason="bogus").status_code == 400
    response = post(admin, case_id, "close", reason="written_off", note="agreed with finance")
    assert response.status_code == 302
    post(admin, case_id, "close", reason="written_off")
    with runtime.db.transaction() as db:
        case = db.get(RecoveryCase, case_id)
        assert case is not None
        assert case.status == "closed" and case.close_reason == "admin_written_off"
        entry = db.scalars(select(AuditEntry)).one()
        assert entry.action == "close" and entry.details["note"] == "agreed with finance"
    assert all(a.status == ActionStatus.CANCELLED for a in retries(runtime, case_id))
    page = admin.get(f"/dashboard/cases/{case_id}").get_data(as_text=True)
    assert f"{ADMIN} closed the case: written off." in page


def test_resend_link_sends_one_email(runtime: Runtime, admin: Any, clock: FrozenClock) -> None:
    case_id = failed_case(runtime, "expired_card")
    post(admin, case_id, "resend-link")
    post(admin, case_id, "resend-link")
    with runtime.db.transaction() as db:
        sent = list(
            db.scalars(select(OutboxMessage).where(OutboxMessage.step == "admin.resend_link"))
        )
    assert len(sent) == 1 and sent[0].recipient == "ada@example.com"
    assert [a for a, _, _ in audit(runtime)] == ["resend_link"]
    page = admin.get(f"/dashboard/cases/{case_id}").get_data(as_text=True)
    assert "ada@example.com" in page  # the message on the timeline: an admin sees the address
    with runtime.db.transaction() as db:
        customer = db.get(Customer, "cus_000001")
        assert customer is not None
        customer.email = None
    clock.advance(timedelta(hours=2))
    post(admin, case_id, "resend-link")
    page = admin.get(f"/dashboard/cases/{case_id}").get_data(as_text=True)
    assert "no email address we may write to" in page
    assert audit(runtime) == [("resend_link", ADMIN, case_id)]
