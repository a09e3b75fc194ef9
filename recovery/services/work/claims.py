"""Due actions' rows: scheduling one (a unique dedupe key), cancelling, claiming a batch under a
lease, and finishing one (done, or failed with backoff) only while the lease is still ours.

Claims use `FOR UPDATE SKIP LOCKED` on PostgreSQL, so any number of workers on any number of
hosts split the work without blocking each other; SQLite (one writer) makes the select and the
update one step under its BEGIN IMMEDIATE. A worker that dies leaves its claims `running` until
the lease expires, then anyone reclaims them.
"""

from __future__ import annotations

import functools
import logging
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    CursorResult,
    Integer,
    Table,
    and_,
    bindparam,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.exc import InterfaceError, OperationalError, PendingRollbackError
from sqlalchemy.orm import Session

from recovery.db import (
    Database,
    dialect_of,
    in_list,
    insert_or_ignore,
    insert_rows_ignoring,
    take_writers_turn,
)
from recovery.models import ActionStatus, DueAction
from recovery.runtime import Claimed

log = logging.getLogger(__name__)

DEFAULT_LEASE = timedelta(minutes=5)


class PermanentError(Exception):
    """An action that can never succeed (e.g. an invalid phone number): fail it at once."""


class LeaseLost(RuntimeError):
    """Another worker took this action over after our lease expired; our writes roll back."""


def schedule(
    session: Session,
    *,
    kind: str,
    subject: str,
    dedupe_key: str,
    due_at: datetime,
    now: datetime,
    payload: Mapping[str, Any] | None = None,
    max_attempts: int = 8,
) -> bool:
    """Add a due action unless one with the same dedupe key exists. True when added."""
    values = {
        "kind": kind,
        "subject": subject,
        "dedupe_key": dedupe_key,
        "due_at": due_at,
        "status": ActionStatus.PENDING,
        "attempts": 0,
        "max_attempts": max_attempts,
        "payload": dict(payload or {}),
        "created_at": now,
    }
    return insert_or_ignore(session, DueAction, values, ["dedupe_key"])


def schedule_many(
    session: Session, actions: Sequence[Mapping[str, Any]], now: datetime
) -> set[str]:
    """`schedule` for many actions (each a dict of `schedule`'s keyword arguments but `now`) in
    one multi-row statement; returns the dedupe keys of those added."""
    if not actions:
        return set()
    rows = [
        {
            "kind": a["kind"],
            "subject": a["subject"],
            "dedupe_key": a["dedupe_key"],
            "due_at": a["due_at"],
            "status": ActionStatus.PENDING,
            "attempts": 0,
            "max_attempts": a.get("max_attempts", 8),
            "payload": dict(a.get("payload") or {}),
            "created_at": now,
        }
        for a in actions
    ]
    added = insert_rows_ignoring(session, _ACTIONS, rows, ["dedupe_key"], ["dedupe_key"])
    return set(added.scalars())


# The worker's own statements, built once on the table (not the ORM entity): SQLAlchemy then
# reuses their compiled form, and no ORM bookkeeping runs for rows nobody loads as objects.
# Building them per call was most of the claim's and the completion's cost (demo profile).
_ACTIONS = cast(Table, DueAction.__table__)
_c = _ACTIONS.c


def _rowcount(session: Session, statement: Any, params: Mapping[str, Any]) -> int:
    result: CursorResult[Any] = session.execute(statement, params)  # type: ignore[assignment]
    return int(result.rowcount or 0)


@functools.cache
def _cancel_statement(by_kind: bool) -> Any:
    stmt = (
        update(_ACTIONS)
        .where(_c.subject == bindparam("b_subject"))
        .where(_c.status == ActionStatus.PENDING)
        .values(
            status=ActionStatus.CANCELLED, finished_at=bindparam("b_now", type_=_c.finished_at.type)
        )
    )
    return stmt.where(_c.kind.in_(bindparam("b_kinds", expanding=True))) if by_kind else stmt


def cancel_pending(
    session: Session, subject: str, now: datetime, kinds: tuple[str, ...] = ()
) -> int:
    """Cancel every not-yet-run action about `subject` (optionally of some kinds)."""
    params: dict[str, Any] = {"b_subject": subject, "b_now": now}
    if kinds:
        params["b_kinds"] = list(kinds)
    return _rowcount(session, _cancel_statement(bool(kinds)), params)


@functools.cache
def _cancel_many_statement(dialect: str) -> Any:
    return (
        update(_ACTIONS)
        .where(in_list(_c.subject, "b_subjects", dialect))
        .where(_c.status == ActionStatus.PENDING)
        .values(
            status=ActionStatus.CANCELLED, finished_at=bindparam("b_now", type_=_c.finished_at.type)
        )
        .returning(_c.subject)
    )


def cancel_pending_many(session: Session, subjects: Sequence[str], now: datetime) -> Counter[str]:
    """`cancel_pending` for many subjects in one statement; how many each had cancelled."""
    if not subjects:
        return Counter()
    params = {"b_subjects": sorted(set(subjects)), "b_now": now}
    return Counter(session.scalars(_cancel_many_statement(dialect_of(session)), params))


@functools.cache
def _cancel_by_keys_statement(dialect: str) -> Any:
    return (
        update(_ACTIONS)
        .where(in_list(_c.dedupe_key, "b_keys", dialect))
        .where(_c.status == ActionStatus.PENDING)
        .values(
            status=ActionStatus.CANCELLED, finished_at=bindparam("b_now", type_=_c.finished_at.type)
        )
    )


def cancel_by_keys(session: Session, dedupe_keys: Sequence[str], now: datetime) -> None:
    """Cancel the pending actions with these dedupe keys, in one statement."""
    if dedupe_keys:
        session.execute(
            _cancel_by_keys_statement(dialect_of(session)),
            {"b_keys": list(dedupe_keys), "b_now": now},
        )


@functools.cache
def _claim_statement(is_postgres: bool, lane: bool = False) -> Any:
    now = bindparam("b_now", type_=_c.due_at.type)
    claimable = or_(
        and_(_c.status == ActionStatus.PENDING, _c.due_at <= now),
        and_(_c.status == ActionStatus.RUNNING, _c.lease_expires_at < now),
    )
    if lane:  # PostgreSQL only: the subjects whose hash falls in this lane (see claim_in)
        lanes = bindparam("b_lanes", type_=Integer())
        claimable = and_(
            claimable,
            (func.hashtext(_c.subject).op("&")(0x7FFFFFFF)) % lanes
            == bindparam("b_lane", type_=Integer()),
        )
    due = (
        select(_c.id)
        .where(claimable)
        .order_by(_c.due_at)
        .limit(bindparam("b_limit", type_=Integer()))
    )
    if is_postgres:
        due = due.with_for_update(skip_locked=True)
    return (
        update(_ACTIONS)
        .where(_c.id.in_(due.scalar_subquery()))
        .values(
            status=ActionStatus.RUNNING,
            lease_owner=bindparam("b_owner"),
            lease_expires_at=bindparam("b_expires", type_=_c.lease_expires_at.type),
            attempts=_c.attempts + 1,
        )
        .returning(_c.id, _c.kind, _c.subject, _c.dedupe_key, _c.attempts, _c.payload, _c.due_at)
    )


def claim(
    db: Database, owner: str, now: datetime, limit: int = 50, lease: timedelta = DEFAULT_LEASE
) -> list[Claimed]:
    with db.transaction() as session:
        take_writers_turn(session, exclusive=False)
        return claim_in(session, db.is_postgres, owner, now, limit, lease)


def claim_in(
    session: Session,
    is_postgres: bool,
    owner: str,
    now: datetime,
    limit: int = 50,
    lease: timedelta = DEFAULT_LEASE,
    lane: tuple[int, int] | None = None,
) -> list[Claimed]:
    """Claim up to `limit` due actions in the caller's transaction, oldest due first: one
    UPDATE ... RETURNING. PostgreSQL skips rows another worker is claiming (SKIP LOCKED);
    SQLite has one writer, whose BEGIN IMMEDIATE makes the select and the update one step.

    `lane=(k, n)` (PostgreSQL): only actions whose subject hashes to lane k of n, so the n
    loops of one worker process never hold actions about the same subject at once."""
    params: dict[str, Any] = {
        "b_now": now,
        "b_limit": limit,
        "b_owner": owner,
        "b_expires": now + lease,
    }
    parted = lane is not None and lane[1] > 1 and is_postgres
    if parted:
        assert lane is not None
        params["b_lane"], params["b_lanes"] = lane
    rows = session.execute(_claim_statement(is_postgres, parted), params).all()
    return sorted(
        (
            Claimed(
                id=r.id,
                kind=r.kind,
                subject=r.subject,
                dedupe_key=r.dedupe_key,
                attempts=r.attempts,
                payload=dict(r.payload or {}),
                due_at=r.due_at,
            )
            for r in rows
        ),
        key=lambda c: (c.due_at, c.id),
    )


def action_backoff(attempts: int, rng: random.Random | None = None) -> timedelta:
    """1 min, 2 min, 4 min ... capped at 6 h, jittered +-20 % so retries of a burst spread out."""
    base = min(60 * 2 ** max(attempts - 1, 0), 6 * 3600)
    return timedelta(seconds=base * (rng or random).uniform(0.8, 1.2))


def _held(stmt: Any) -> Any:
    """Only while the lease is ours: the row is still running and claimed by us."""
    return (
        stmt.where(_c.id == bindparam("b_id"))
        .where(_c.status == ActionStatus.RUNNING)
        .where(_c.lease_owner == bindparam("b_owner"))
    )


_COMPLETE = _held(update(_ACTIONS)).values(
    status=ActionStatus.DONE,
    finished_at=bindparam("b_now", type_=_c.finished_at.type),
    last_error=None,
)
_HOLDS_LEASE = _held(select(_c.id))


def _finish(session: Session, action: Claimed, owner: str, values: Mapping[str, Any]) -> int:
    params = {"b_id": action.id, "b_owner": owner}
    return _rowcount(session, _held(update(_ACTIONS)).values(**values), params)


def complete(session: Session, action: Claimed, owner: str, now: datetime) -> None:
    params = {"b_id": action.id, "b_owner": owner, "b_now": now}
    if _rowcount(session, _COMPLETE, params) != 1:
        raise LeaseLost(f"action {action.id} was taken over")


def holds_lease(session: Session, action: Claimed, owner: str) -> bool:
    held = session.execute(_HOLDS_LEASE, {"b_id": action.id, "b_owner": owner}).scalar()
    return held is not None


@functools.cache
def _complete_many_statement(dialect: str) -> Any:
    return (
        update(_ACTIONS)
        .where(in_list(_c.id, "b_ids", dialect))
        .where(_c.status == ActionStatus.RUNNING)
        .where(_c.lease_owner == bindparam("b_owner"))
        .values(status=ActionStatus.DONE, finished_at=bindparam("b_now", type_=_c.finished_at.type))
        .values(last_error=None)
        .returning(_c.id)
    )


def complete_many(session: Session, ids: Sequence[int], owner: str, now: datetime) -> set[int]:
    """Finish a batch's actions as done in one statement; returns those whose lease was still
    ours (the others were taken over: their outcome must not be recorded)."""
    if not ids:
        return set()
    params = {"b_ids": list(ids), "b_owner": owner, "b_now": now}
    return set(session.scalars(_complete_many_statement(dialect_of(session)), params))


# The database went away: nothing can be recorded, the whole unit of work is lost; the actions
# stay claimed until their lease runs out and are then run again.
DATABASE_GONE = (OperationalError, InterfaceError, PendingRollbackError)


def fail(session: Session, action: Claimed, owner: str, exc: Exception, now: datetime) -> str:
    """Try again later with backoff, or give up (permanent, or out of attempts)."""
    permanent = isinstance(exc, PermanentError)
    log.warning("action %s (%s) failed: %s", action.id, action.kind, exc.__class__.__name__)
    row = session.get(DueAction, action.id)
    if row is None:
        return "missing"
    error = f"{exc.__class__.__name__}: {exc}"[:2000]
    if permanent or row.attempts >= row.max_attempts:
        values: dict[str, Any] = {
            "status": ActionStatus.FAILED,
            "finished_at": now,
            "last_error": error,
        }
    else:
        values = {
            "status": ActionStatus.PENDING,
            "due_at": now + action_backoff(row.attempts),
            "lease_owner": None,
            "lease_expires_at": None,
            "last_error": error,
        }
    if _finish(session, action, owner, values) != 1:
        return "lease_lost"
    return str(values["status"])
