"""Durable due actions: scheduled with a unique dedupe key, claimed under a lease, run once.

Claims use `FOR UPDATE SKIP LOCKED` on PostgreSQL, so any number of workers on any number of
hosts split the work without blocking each other; SQLite (one writer) uses a conditional UPDATE
and checks the row count. A worker that dies leaves its claims `running` until the lease
expires, then anyone reclaims them. Completing re-checks the lease in the same transaction as
the action's own writes, so a worker whose lease was taken over commits nothing.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from recovery.db import Database, execute_count, insert_or_ignore
from recovery.models import ActionStatus, DueAction
from recovery.runtime import Claimed, Runtime

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


def cancel_pending(
    session: Session, subject: str, now: datetime, kinds: tuple[str, ...] = ()
) -> int:
    """Cancel every not-yet-run action about `subject` (optionally of some kinds)."""
    stmt = (
        update(DueAction)
        .where(DueAction.subject == subject)
        .where(DueAction.status == ActionStatus.PENDING)
        .values(status=ActionStatus.CANCELLED, finished_at=now)
    )
    if kinds:
        stmt = stmt.where(DueAction.kind.in_(kinds))
    return execute_count(session, stmt)


def _claimable(now: datetime) -> Any:
    return or_(
        and_(DueAction.status == ActionStatus.PENDING, DueAction.due_at <= now),
        and_(DueAction.status == ActionStatus.RUNNING, DueAction.lease_expires_at < now),
    )


def claim(
    db: Database, owner: str, now: datetime, limit: int = 50, lease: timedelta = DEFAULT_LEASE
) -> list[Claimed]:
    with db.transaction() as session:
        query = select(DueAction.id).where(_claimable(now)).order_by(DueAction.due_at).limit(limit)
        if db.is_postgres:
            ids = list(session.scalars(query.with_for_update(skip_locked=True)))
            if ids:
                session.execute(
                    update(DueAction)
                    .where(DueAction.id.in_(ids))
                    .values(
                        status=ActionStatus.RUNNING,
                        lease_owner=owner,
                        lease_expires_at=now + lease,
                        attempts=DueAction.attempts + 1,
                    )
                )
        else:
            # SKIP LOCKED does not exist on SQLite: claim each row with a conditional UPDATE and
            # keep only those whose row count says we won.
            ids = []
            for action_id in session.scalars(query):
                won = execute_count(
                    session,
                    update(DueAction)
                    .where(DueAction.id == action_id)
                    .where(_claimable(now))
                    .values(
                        status=ActionStatus.RUNNING,
                        lease_owner=owner,
                        lease_expires_at=now + lease,
                        attempts=DueAction.attempts + 1,
                    ),
                )
                if won == 1:
                    ids.append(action_id)
        if not ids:
            return []
        rows = session.scalars(select(DueAction).where(DueAction.id.in_(ids))).all()
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


def _finish(session: Session, action: Claimed, owner: str, values: Mapping[str, Any]) -> int:
    return execute_count(
        session,
        update(DueAction)
        .where(DueAction.id == action.id)
        .where(DueAction.status == ActionStatus.RUNNING)
        .where(DueAction.lease_owner == owner)
        .values(**values),
    )


def run_claimed(runtime: Runtime, action: Claimed, owner: str) -> str:
    """Run one claimed action; its writes and its completion commit together."""
    db, clock = runtime.db, runtime.clock
    handler = runtime.handlers.actions.get(action.kind)
    try:
        with db.transaction() as session:
            if handler is None:
                raise PermanentError(f"no handler for action kind {action.kind!r}")
            handler(runtime.action_context(session, owner), action)
            done = {"status": ActionStatus.DONE, "finished_at": clock.now(), "last_error": None}
            if _finish(session, action, owner, done) != 1:
                raise LeaseLost(f"action {action.id} was taken over")
        return ActionStatus.DONE
    except LeaseLost:
        log.warning("lease lost on action %s; another worker owns it", action.id)
        return "lease_lost"
    except Exception as exc:
        permanent = isinstance(exc, PermanentError)
        log.warning("action %s (%s) failed: %s", action.id, action.kind, exc.__class__.__name__)
        with db.transaction() as session:
            row = session.get(DueAction, action.id)
            if row is None:
                return "missing"
            error = f"{exc.__class__.__name__}: {exc}"[:2000]
            if permanent or row.attempts >= row.max_attempts:
                values: dict[str, Any] = {
                    "status": ActionStatus.FAILED,
                    "finished_at": clock.now(),
                    "last_error": error,
                }
            else:
                values = {
                    "status": ActionStatus.PENDING,
                    "due_at": clock.now() + action_backoff(row.attempts),
                    "lease_owner": None,
                    "lease_expires_at": None,
                    "last_error": error,
                }
            _finish(session, action, owner, values)
            return str(values["status"])
