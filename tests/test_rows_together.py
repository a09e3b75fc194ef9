"""Rows written together (recovery.db.insert_rows_ignoring, under the worker's schedules, the
timeline's lines and the outbox's confirmations): on PostgreSQL one JSON text, INSERT ... SELECT
FROM json_to_recordset; on SQLite a multi-row VALUES. The same rows either way - times given in
any zone, text that JSON and SQL escape - each written once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from recovery.db import Database
from recovery.models import ActionStatus, DueAction
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
