"""Writing to the outbox: a message and its send action, once per dedupe key (one at a time,
or a round's confirmations together), and cancelling what is pending about a subject (one or
many). `outbox` re-exports these names; the sending is there."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from recovery.db import dialect_of, in_list, insert_ignoring, insert_rows_ignoring
from recovery.domain.reminders import local_day, next_day_at
from recovery.models import MessageStatus, OutboxMessage
from recovery.services.work import due_actions

SEND_KIND = "outbox.send"
MAX_ATTEMPTS = 16  # 1+2+...+256 min, then 6 h apart: the 16th try ~50 h after the first
CONFIRMATION = "confirmation"  # the step of messages that go out whatever the case's state
_MESSAGES = cast(Table, OutboxMessage.__table__)

# ---- writing ------------------------------------------------------------------------------


def enqueue(
    session: Session,
    *,
    about: str,
    case_id: int | None,
    customer_id: str | None,
    channel: str,
    template: str,
    step: str,
    locale: str,
    recipient: str,
    subject: str,
    body: str,
    send_after: datetime,
    dedupe_key: str,
    now: datetime,
    cap_zone: str | None = None,
    send_hour: int = 10,
    key_checked: bool = False,
) -> OutboxMessage | None:
    """Write a message and its send action, once per dedupe key. With `cap_zone` it is a
    reminder: it takes the customer's local day, moving to the next free one (the unique
    (customer, day) constraint makes this safe against concurrent planners). Returns the row,
    or None when the key was used already. `key_checked`: the caller found the key unused in
    this transaction already (the reminders planner asks before it renders), so it is not
    asked twice."""
    dialect = dialect_of(session)
    if not key_checked and session.scalar(
        select(OutboxMessage.id).where(OutboxMessage.dedupe_key == dedupe_key)
    ):
        return None
    at = send_after
    for _ in range(60):
        values: dict[str, Any] = {
            "about": about,
            "case_id": case_id,
            "customer_id": customer_id,
            "channel": channel,
            "template": template,
            "step": step,
            "locale": locale,
            "recipient": recipient,
            "subject": subject,
            "body": body,
            "send_after": at,
            "cap_day": local_day(at, cap_zone) if cap_zone and customer_id else None,
            "dedupe_key": dedupe_key,
            "status": MessageStatus.PENDING,
            "attempts": 0,
            "created_at": now,
        }
        row: OutboxMessage | None = session.scalars(_insert_message(dialect), values).one_or_none()
        if row is not None:
            break
        if cap_zone is None:
            return None
        at = next_day_at(at, cap_zone, send_hour)  # that day is taken: the next one
    else:
        return None
    due_actions.schedule(
        session,
        kind=SEND_KIND,
        subject=about,
        dedupe_key=f"outbox:{dedupe_key}",
        due_at=row.send_after,
        now=now,
        payload={"message_id": row.id},
        max_attempts=MAX_ATTEMPTS,
    )
    return row


def enqueue_many(session: Session, messages: Sequence[Mapping[str, Any]], now: datetime) -> None:
    """`enqueue` for messages that take no customer's day (a confirmation), their keys asked
    already: the messages in one multi-row statement, their send actions in another."""
    if not messages:
        return
    rows = [
        {**m, "cap_day": None, "status": MessageStatus.PENDING, "attempts": 0, "created_at": now}
        for m in messages
    ]
    returning = ("id", "about", "dedupe_key", "send_after")
    written = insert_rows_ignoring(session, _MESSAGES, rows, (), returning).all()
    sends = [
        {
            "kind": SEND_KIND,
            "subject": about,
            "dedupe_key": f"outbox:{key}",
            "due_at": send_after,
            "payload": {"message_id": message_id},
            "max_attempts": MAX_ATTEMPTS,
        }
        for message_id, about, key, send_after in written
    ]
    due_actions.schedule_many(session, sends, now)


@functools.cache
def _insert_message(dialect: str) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING the row as the ORM's object: one statement
    where an insert and then a read of the row it wrote were two (a tenth of a reminder's
    statements in the events' batches). Built once, the values go in as parameters. A Core
    insert whose row the ORM loads (`from_statement`): the ORM's bulk insert of the model cost
    about half as much again (bench/row_inserts.py)."""
    inserted = insert_ignoring(dialect, _MESSAGES).returning(*_MESSAGES.c)
    return select(OutboxMessage).from_statement(inserted)


def finish(row: OutboxMessage, status: MessageStatus, now: datetime, error: str | None) -> None:
    row.status = status
    row.finished_at = now
    row.cap_day = None  # frees the customer's day for another reminder
    if error is not None:
        row.last_error = error[:2000]


def cancel(session: Session, about: str, now: datetime, *, keep_confirmations: bool = True) -> int:
    """Cancel every pending message about `about` (and its send action). Returns how many."""
    query = select(OutboxMessage).where(
        OutboxMessage.about == about, OutboxMessage.status == MessageStatus.PENDING
    )
    if keep_confirmations:
        query = query.where(OutboxMessage.step != CONFIRMATION)
    rows = session.scalars(query.with_for_update()).all()
    for row in rows:
        finish(row, MessageStatus.CANCELLED, now, None)
    if rows:  # their send actions in one statement, not one per message
        due_actions.cancel_by_keys(session, [f"outbox:{row.dedupe_key}" for row in rows], now)
    return len(rows)


def cancel_many(session: Session, abouts: Sequence[str], now: datetime) -> None:
    """`cancel` for many subjects at once (confirmations kept): one statement per table."""
    if not abouts:
        return
    rows = session.execute(
        _cancel_many(dialect_of(session)), {"abouts": sorted(set(abouts)), "now": now}
    ).all()
    for message_id, _ in rows:  # a loaded one would keep its old status
        held = session.identity_map.get(Session.identity_key(OutboxMessage, message_id))
        if held is not None:
            session.expire(held)
    if rows:
        keys = [f"outbox:{key}" for _, key in rows]
        due_actions.cancel_by_keys(session, keys, now)


@functools.cache
def _cancel_many(dialect: str) -> Any:
    c = _MESSAGES.c
    return (
        update(_MESSAGES)
        .where(in_list(c.about, "abouts", dialect), c.step != CONFIRMATION)
        .where(c.status == MessageStatus.PENDING)
        .values(status=MessageStatus.CANCELLED, cap_day=None)
        .values(finished_at=bindparam("now", type_=c.finished_at.type))
        .returning(c.id, c.dedupe_key)
    )
