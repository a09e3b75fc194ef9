"""Retention: a daily job deletes what nothing needs any more, in small batches.

Older than `RECOVERY_RETENTION_DAYS` (default 90):
- processed Stripe events, except those about a recovery case's invoice or its payments (the
  case's timeline lists them);
- due actions that are done or cancelled without an error (failed ones stay for whoever looks
  into them), except those of a case still being worked;
- sent or cancelled messages that belong to no recovery case (a case's timeline lists each of
  its messages for as long as the case exists), except sent expiring-card notices (the
  dashboard counts the cards they saved, over any period).

Each batch is its own short transaction (`BATCH` rows), so the job never holds many locks nor
stalls the worker; it repeats until a batch comes back short. Pending, running and failed rows,
events waiting to be processed or parked, and everything newer than the cutoff are never
touched. Time conditions name the indexed columns (`received_at`, `due_at`, `send_after`) too,
so each batch is an index range scan.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, and_, cast, delete, exists, literal, not_, or_, select
from sqlalchemy.orm import Session

from recovery.db import execute_count
from recovery.domain.cases import ACTIVE
from recovery.models import (
    ActionStatus,
    DueAction,
    EventStatus,
    MessageStatus,
    OutboxMessage,
    PaymentAttempt,
    RecoveryCase,
    StripeEvent,
)
from recovery.runtime import Runtime

log = logging.getLogger(__name__)

JOB_NAME = "retention"
BATCH = 500
MAX_BATCHES = 10_000  # per table and day: 5M rows; the rest waits for tomorrow


def _old_events(cutoff: datetime) -> Any:
    about_a_case = exists().where(RecoveryCase.invoice_id == StripeEvent.object_id)
    about_a_case_payment = exists().where(
        PaymentAttempt.payment_intent_id == StripeEvent.object_id,
        exists().where(RecoveryCase.invoice_id == PaymentAttempt.invoice_id),
    )
    return (
        select(StripeEvent.id)
        .where(StripeEvent.received_at < cutoff)
        .where(StripeEvent.status == EventStatus.PROCESSED)
        .where(not_(about_a_case), not_(about_a_case_payment))
        .limit(BATCH)
    )


def _old_actions(cutoff: datetime) -> Any:
    active_case = exists().where(
        literal("case:") + cast(RecoveryCase.id, String) == DueAction.subject,
        RecoveryCase.status.in_([s.value for s in ACTIVE]),
    )
    return (
        select(DueAction.id)
        .where(DueAction.status.in_([ActionStatus.DONE, ActionStatus.CANCELLED]))
        .where(DueAction.due_at < cutoff, DueAction.finished_at < cutoff)
        .where(DueAction.last_error.is_(None))
        .where(not_(active_case))
        .limit(BATCH)
    )


def _old_messages(cutoff: datetime) -> Any:
    of_a_case = or_(
        OutboxMessage.case_id.is_not(None),
        OutboxMessage.about.like("case:%"),
        OutboxMessage.about.like("notice:case:%"),
    )
    counted = and_(OutboxMessage.about.like("expiry:%"), OutboxMessage.status == MessageStatus.SENT)
    return (
        select(OutboxMessage.id)
        .where(OutboxMessage.status.in_([MessageStatus.SENT, MessageStatus.CANCELLED]))
        .where(OutboxMessage.send_after < cutoff, OutboxMessage.finished_at < cutoff)
        .where(not_(of_a_case), not_(counted))
        .limit(BATCH)
    )


def _delete_batch(session: Session, model: Any, ids_query: Any) -> int:
    ids = list(session.scalars(ids_query))
    if not ids:
        return 0
    key = next(iter(model.__table__.primary_key.columns))
    return execute_count(session, delete(model).where(key.in_(ids)))


def purge(runtime: Runtime, now: datetime, days: int) -> dict[str, int]:
    """Delete, batch by batch, what is older than `days` and needed by nothing. Returns the
    rows deleted per table."""
    cutoff = now - timedelta(days=days)
    deleted: dict[str, int] = {}
    for table, model, query in (
        ("stripe_events", StripeEvent, _old_events(cutoff)),
        ("due_actions", DueAction, _old_actions(cutoff)),
        ("outbox_messages", OutboxMessage, _old_messages(cutoff)),
    ):
        total = 0
        for _ in range(MAX_BATCHES):
            with runtime.db.transaction() as session:
                n = _delete_batch(session, model, query)
            total += n
            if n < BATCH:
                break
        deleted[table] = total
    return deleted


def daily_job(runtime: Runtime) -> int:
    days = runtime.settings.retention_days
    if days <= 0:
        return 0  # 0 keeps everything
    deleted = purge(runtime, runtime.clock.now(), days)
    log.info("retention (%d days): deleted %s", days, deleted)
    return sum(deleted.values())
