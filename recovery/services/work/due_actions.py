"""Durable due actions: scheduled with a unique dedupe key, claimed under a lease, run once.

Claims use `FOR UPDATE SKIP LOCKED` on PostgreSQL, so any number of workers on any number of
hosts split the work without blocking each other; SQLite (one writer) uses a conditional UPDATE
and checks the row count. A worker that dies leaves its claims `running` until the lease
expires, then anyone reclaims them. Completing re-checks the lease in the same transaction as
the action's own writes, so a worker whose lease was taken over commits nothing.

No transaction is ever open while a provider is called (`ActionRunner`): a batch is claimed and
decided in one transaction (a savepoint per action), the provider calls of the batch run on a
pool of threads with no transaction open, each under a deadline well inside the lease, and
their outcomes are recorded in a second transaction, again a savepoint per action, each
committing only while its lease is still held. Actions about one subject (a case, a message's
case, a cancel session) run one after the other, in due order; different subjects at once.

In shadow mode (RECOVERY_MODE=shadow) a three-step action that decided to call a provider is
finished as `shadow` with a note of what it would have done (`services.work.shadow`), and
nothing is called; a shadow action is finished for good and never claimed again.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import random
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Integer, Table, and_, bindparam, or_, select, update
from sqlalchemy.exc import InterfaceError, OperationalError, PendingRollbackError
from sqlalchemy.orm import Session

from recovery.adapters.deadline import Deadline
from recovery.db import Database, insert_or_ignore
from recovery.models import ActionStatus, DueAction
from recovery.runtime import Claimed, Runtime, ThreePhase
from recovery.services.work import shadow

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
def _claim_statement(is_postgres: bool) -> Any:
    now = bindparam("b_now", type_=_c.due_at.type)
    claimable = or_(
        and_(_c.status == ActionStatus.PENDING, _c.due_at <= now),
        and_(_c.status == ActionStatus.RUNNING, _c.lease_expires_at < now),
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
        return claim_in(session, db.is_postgres, owner, now, limit, lease)


def claim_in(
    session: Session,
    is_postgres: bool,
    owner: str,
    now: datetime,
    limit: int = 50,
    lease: timedelta = DEFAULT_LEASE,
) -> list[Claimed]:
    """Claim up to `limit` due actions in the caller's transaction, oldest due first: one
    UPDATE ... RETURNING. PostgreSQL skips rows another worker is claiming (SKIP LOCKED);
    SQLite has one writer, whose BEGIN IMMEDIATE makes the select and the update one step."""
    params = {"b_now": now, "b_limit": limit, "b_owner": owner, "b_expires": now + lease}
    rows = session.execute(_claim_statement(is_postgres), params).all()
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


def _complete(session: Session, action: Claimed, owner: str, now: datetime) -> None:
    params = {"b_id": action.id, "b_owner": owner, "b_now": now}
    if _rowcount(session, _COMPLETE, params) != 1:
        raise LeaseLost(f"action {action.id} was taken over")


def _holds_lease(session: Session, action: Claimed, owner: str) -> bool:
    held = session.execute(_HOLDS_LEASE, {"b_id": action.id, "b_owner": owner}).scalar()
    return held is not None


# The database went away: nothing can be recorded, the whole unit of work is lost; the actions
# stay claimed until their lease runs out and are then run again.
_DATABASE_GONE = (OperationalError, InterfaceError, PendingRollbackError)


def _fail(session: Session, action: Claimed, owner: str, exc: Exception, now: datetime) -> str:
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


@dataclass(frozen=True)
class Decided:
    """A three-phase action between its decision and its record: what to call."""

    action: Claimed
    handler: ThreePhase[Any, Any]
    plan: Any


@dataclass(frozen=True)
class Called:
    decided: Decided
    outcome: Any = None
    error: Exception | None = None


def _in_shadow(runtime: Runtime, action: Claimed) -> bool:
    """Shadow mode, and an action that would change something outside (not a mere read)."""
    return runtime.settings.is_shadow and action.kind not in shadow.READS_ONLY


def decide(runtime: Runtime, session: Session, action: Claimed, owner: str) -> str | Decided:
    """Step 1, in the caller's transaction and a savepoint of its own: a one-phase handler
    runs whole and completes; a three-phase one decides what to call (or completes when there
    is nothing to call). Returns the action's status, or what to call."""
    handler = runtime.handlers.actions.get(action.kind)
    now = runtime.clock.now()
    try:
        with session.begin_nested():
            if handler is None:
                raise PermanentError(f"no handler for action kind {action.kind!r}")
            ctx = runtime.action_context(session, owner)
            if isinstance(handler, ThreePhase):
                plan = handler.decide(ctx, action)
                if plan is not None and _in_shadow(runtime, action):
                    shadow.hold(session, action, owner, plan, now)
                    return ActionStatus.SHADOW
                if plan is not None:
                    return Decided(action, handler, plan)
            else:
                handler(ctx, action)
            _complete(session, action, owner, now)
        return ActionStatus.DONE
    except (LeaseLost, shadow.ShadowLeaseLost):
        log.warning("lease lost on action %s; another worker owns it", action.id)
        return "lease_lost"
    except _DATABASE_GONE:
        raise
    except Exception as exc:
        return _fail(session, action, owner, exc, now)


def call(runtime: Runtime, decided: Decided) -> Called:
    """Step 2, with no transaction open: the provider call, under the deadline."""
    try:
        with Deadline(runtime.settings.provider_deadline_seconds) as deadline:
            outcome = decided.handler.call(runtime.providers, decided.plan, deadline)
        return Called(decided, outcome)
    except Exception as exc:  # recorded as the action's failure in step 3
        return Called(decided, error=exc)


def record(runtime: Runtime, session: Session, called: Called, owner: str) -> str:
    """Step 3, in the caller's transaction and a savepoint: the outcome, committed only while
    the lease is still ours."""
    action = called.decided.action
    now = runtime.clock.now()
    if called.error is not None:
        return _fail(session, action, owner, called.error, now)
    try:
        with session.begin_nested():
            ctx = runtime.action_context(session, owner)
            called.decided.handler.record(ctx, action, called.decided.plan, called.outcome)
            _complete(session, action, owner, now)
        return ActionStatus.DONE
    except LeaseLost:
        log.warning("lease lost on action %s; another worker owns it", action.id)
        return "lease_lost"
    except _DATABASE_GONE:
        raise
    except Exception as exc:
        return _fail(session, action, owner, exc, now)


def _fresh_for_the_next(session: Session) -> None:
    """Several actions share a transaction: the next starts from what the database holds (the
    mirror is written with plain statements, which loaded objects would not see)."""
    session.flush()
    session.expunge_all()


def run_claimed(runtime: Runtime, action: Claimed, owner: str) -> str:
    """Run one claimed action through its steps, each transaction on its own (tests, drills)."""
    with runtime.db.transaction() as session:
        decided = decide(runtime, session, action, owner)
    if not isinstance(decided, Decided):
        return decided
    called = call(runtime, decided)
    with runtime.db.transaction() as session:
        return record(runtime, session, called, owner)


class ActionRunner:
    """Runs due actions for one worker: claims and decides in batches, calls providers on a
    pool of `threads` threads (none open a transaction), records outcomes in batches.

    Actions about one subject run one at a time in due order (a case's retry and its reminder
    never race); the next waits, claimed, until the one before it is recorded. With one thread
    the calls run in the caller's thread, in order.
    """

    def __init__(
        self,
        runtime: Runtime,
        owner: str,
        *,
        threads: int | None = None,
        batch_size: int = 50,
        lease: timedelta = DEFAULT_LEASE,
    ) -> None:
        self.runtime, self.owner = runtime, owner
        self.threads = max(1, threads if threads is not None else runtime.settings.worker_threads)
        self.batch_size = batch_size
        self.lease = lease
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._statuses: dict[str, int] = {}

    @property
    def statuses(self) -> dict[str, int]:
        """How the actions run so far ended (done, pending again, failed, lease_lost)."""
        return dict(self._statuses)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _count(self, status: str) -> None:
        self._statuses[status] = self._statuses.get(status, 0) + 1

    def _decide_all(
        self, session: Session, actions: Iterable[Claimed], first: bool
    ) -> list[Decided]:
        decided = []
        for action in actions:
            if not first and not _holds_lease(session, action, self.owner):
                self._count("lease_lost")  # waited behind its subject past the lease
                continue
            result = decide(self.runtime, session, action, self.owner)
            _fresh_for_the_next(session)
            if isinstance(result, Decided):
                decided.append(result)
            else:
                self._count(result)
        return decided

    def _record_in(self, session: Session, calls: Sequence[Called]) -> list[str]:
        statuses = []
        for c in calls:
            statuses.append(record(self.runtime, session, c, self.owner))
            _fresh_for_the_next(session)
        return statuses

    def drain(self) -> int:
        """Run everything due now, including what comes due while running (a reminder that a
        recorded outcome scheduled for now). Returns how many actions were claimed.

        One transaction a round records the outcomes of the calls made since the last, then
        claims and decides, and claims again while what it decided may have made more due now;
        the calls follow, no transaction open. Done when a round's last claim found nothing."""
        db, clock = self.runtime.db, self.runtime.clock
        claimed_total = 0
        waiting: dict[str, deque[Claimed]] = {}  # subject -> claimed, not yet decided
        busy: set[str] = set()  # subjects with an action decided and not yet recorded
        in_flight: dict[concurrent.futures.Future[Called], str] = {}
        outcomes: list[Called] = []  # called, not yet recorded
        exhausted = False  # the last claim found fewer due actions than it asked for

        def room_for_more(decided: int) -> int:
            room = self.batch_size - len(in_flight) - decided - sum(map(len, waiting.values()))
            return room if room >= max(1, self.batch_size // 2) else 0

        while True:
            decided: list[Decided] = []
            statuses: list[str] = []
            settled = False  # this round's last claim came after all else and found nothing
            room = 0 if exhausted else room_for_more(0)
            if room or outcomes or any(s not in busy for s in waiting):
                with db.transaction() as session:
                    statuses = self._record_in(session, outcomes)
                    busy -= {c.decided.action.subject for c in outcomes}
                    outcomes = []
                    while True:
                        fresh: set[int] = set()
                        if room:
                            now = clock.now()
                            batch = claim_in(
                                session, db.is_postgres, self.owner, now, room, self.lease
                            )
                            claimed_total += len(batch)
                            exhausted = len(batch) < room
                            for action in batch:
                                waiting.setdefault(action.subject, deque()).append(action)
                                fresh.add(action.id)
                        ready = [s for s in waiting if s not in busy]
                        if not ready:
                            settled = bool(room) and not fresh
                            break
                        for subject in ready:
                            action = waiting[subject].popleft()
                            if not waiting[subject]:
                                del waiting[subject]
                            new = self._decide_all(session, [action], first=action.id in fresh)
                            busy |= {d.action.subject for d in new}
                            decided += new
                        # A one-step action may have scheduled more for now: look again.
                        room = room_for_more(len(decided))
                        if not room:
                            break
            for status in statuses:  # counted once committed
                self._count(status)
            if self.threads == 1:
                outcomes = [call(self.runtime, d) for d in decided]
            else:
                if decided:
                    pool = self._pool or concurrent.futures.ThreadPoolExecutor(
                        self.threads, thread_name_prefix="recovery-call"
                    )
                    self._pool = pool
                    for d in decided:
                        in_flight[pool.submit(call, self.runtime, d)] = d.action.subject
                if in_flight:
                    concurrent.futures.wait(
                        list(in_flight), return_when=concurrent.futures.FIRST_COMPLETED
                    )
                    finished = [f for f in in_flight if f.done()]
                    outcomes = [f.result() for f in finished]
                    for f in finished:
                        del in_flight[f]
            if not (outcomes or in_flight or waiting):
                if settled:
                    return claimed_total
                exhausted = False  # what just ran may have scheduled more for now: look again
            elif outcomes:
                exhausted = False  # what they record may be due now: look in the same round
