"""Rows written together (recovery.db.insert_rows_ignoring, under the worker's schedules, the
timeline's lines and the outbox's confirmations): on PostgreSQL one JSON text, INSERT ... SELECT
FROM json_to_recordset; on SQLite a multi-row VALUES. The same rows either way - times given in
any zone, text that JSON and SQL escape - each written once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event, select, text

from recovery.db import Database, update_changed_together
from recovery.models import ActionStatus, DueAction, RecoveryCase
from recovery.services.work import due_actions

NOW = datetime(2026, 11, 2, 9, 0, 0, 123456, tzinfo=UTC)
TOKYO = ZoneInfo("Asia/Tokyo")


def _action(i: int) -> dict[str, object]:
    return {
        "kind": "case.retry",
        "subject": f"case:{i}",
        "dedupe_key": f"case:{i}:attempt:1",
        # a third given in Tokyo's time: stored as the same instant
        "due_at": (NOW + timedelta(minutes=i)).astimezone(TOKYO if i % 3 == 0 else UTC),
        "payload": {"case_id": i, "note": 'l\'échéance "ü"\\ \n{1,2}', "none": None},
        "max_attempts": 3 + i % 5,
    }


def test_actions_scheduled_together_keep_their_values_and_are_written_once(
    database_url: str,
) -> None:
    # 1,200 rows: past SQLAlchemy's 1,000 rows a multi-row VALUES on SQLite
    db = Database(database_url)
    try:
        with db.transaction() as session:
            added = due_actions.schedule_many(session, [_action(i) for i in range(1200)], NOW)
        assert added == {f"case:{i}:attempt:1" for i in range(1200)}
        with db.transaction() as session:  # again, with one new: only the new one is added
            again = due_actions.schedule_many(session, [_action(i) for i in range(1201)], NOW)
        assert again == {"case:1200:attempt:1"}
        with db.reading() as session:
            rows = session.scalars(select(DueAction).order_by(DueAction.id)).all()
            seen = [
                (r.dedupe_key, r.due_at, r.payload, r.max_attempts, r.status, r.attempts)
                for r in rows
            ]
    finally:
        db.dispose()
    expected = [
        (a["dedupe_key"], a["due_at"], a["payload"], a["max_attempts"], ActionStatus.PENDING, 0)
        for a in map(_action, range(1201))
    ]
    assert sorted(seen, key=str) == sorted(expected, key=str)
    assert all(due_at.tzinfo is not None for _, due_at, *_ in seen)


def _cases(session: Any, count: int) -> list[RecoveryCase]:
    cases = [
        RecoveryCase(
            invoice_id=f"in_{i}",
            customer_id=f"cus_{i}",
            status="retrying",
            currency="usd",
            amount_due=1000 + i,
            opened_at=NOW,
        )
        for i in range(count)
    ]
    session.add_all(cases)
    session.flush()
    return cases


def _updates(session: Any) -> list[str]:
    """The UPDATE statements the session sends from now on."""
    sent: list[str] = []

    def note(*args: Any) -> None:
        if str(args[2]).lstrip().upper().startswith("UPDATE"):
            sent.append(str(args[2]))

    event.listen(session.connection(), "before_cursor_execute", note)
    return sent


def test_cases_changed_together_are_written_with_their_values(database_url: str) -> None:
    """A round's changed cases (recovery.db.update_changed_together): on PostgreSQL one UPDATE
    a set of changed columns, the flush then writes nothing more for them; on SQLite the
    flush writes them. The same values either way, times in any zone."""
    db = Database(database_url)
    try:
        with db.transaction() as session:
            ids = [case.id for case in _cases(session, 5)]
        with db.transaction() as session:
            cases = session.scalars(select(RecoveryCase).order_by(RecoveryCase.id)).all()
            for i, case in enumerate(cases[:4]):
                case.our_attempts = i + 1
                case.next_retry_at = (NOW + timedelta(days=i)).astimezone(TOKYO)
            cases[3].next_step_reason = 'waits for "payday"\\n'
            cases[4].next_retry_at = None  # unchanged: it was None
            sent = _updates(session)
            update_changed_together(session, cases)
            together = list(sent)
            session.flush()
        with db.reading() as session:
            seen = {
                c.id: (c.our_attempts, c.next_retry_at, c.next_step_reason)
                for c in session.scalars(select(RecoveryCase))
            }
    finally:
        db.dispose()
    assert seen == {
        ids[0]: (1, NOW, None),
        ids[1]: (2, NOW + timedelta(days=1), None),
        ids[2]: (3, NOW + timedelta(days=2), None),
        ids[3]: (4, NOW + timedelta(days=3), 'waits for "payday"\\n'),
        ids[4]: (0, None, None),
    }
    if database_url.startswith("postgresql"):
        assert len(together) == 2, together  # two sets of changed columns
        assert len(sent) == 2, sent  # and nothing more from the flush
    else:
        assert not together


def test_cases_changed_together_are_read_again_after_a_rollback(database_url: str) -> None:
    """Written by a statement of ours rather than the flush, a case rolled back with its
    savepoint (a round recorded together that failed, recorded one by one next) shows what the
    database holds, not the undone change."""
    db = Database(database_url)
    try:
        with db.transaction() as session:
            (case,) = _cases(session, 1)
        with db.transaction() as session:
            case = session.scalars(select(RecoveryCase)).one()
            with pytest.raises(RuntimeError), session.begin_nested():
                case.our_attempts = 7
                update_changed_together(session, [case])
                session.flush()
                raise RuntimeError("the round failed")
            assert case.our_attempts == 0
            stored = session.execute(text("SELECT our_attempts FROM recovery_cases")).scalar()
            assert stored == 0
    finally:
        db.dispose()
