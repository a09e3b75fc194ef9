"""What an admin should know about on every dashboard page: Stripe events parked after repeated
errors, due actions no worker is getting done, messages that could not be sent. Three small
counts, each on an index (the inbox's and the due actions' status indexes, the outbox's
status-and-time index), cheap enough to read on every page an admin opens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from recovery.models import (
    ActionStatus,
    DueAction,
    EventStatus,
    MessageStatus,
    OutboxMessage,
    StripeEvent,
)
from recovery.runtime import Runtime
from recovery.services.ops.prometheus import OVERDUE_AFTER

FAILING_SENDS_WINDOW = timedelta(hours=24)
SEND_KIND = "outbox.send"
# A send that failed and will be tried again is due within the due actions' longest backoff
# (6 h, jittered up to 7.2 h): the bound lets the count use the claim index.
RETRY_BACKOFF_CAP = timedelta(hours=8)


@dataclass(frozen=True)
class Attention:
    parked_events: int = 0
    overdue_actions: int = 0
    failing_sends: int = 0  # failed in the last day, or being retried after an error

    @property
    def needed(self) -> bool:
        return bool(self.parked_events or self.overdue_actions or self.failing_sends)


def read(session: Session, now: datetime) -> Attention:
    parked = session.scalar(
        select(func.count())
        .select_from(StripeEvent)
        .where(StripeEvent.status == EventStatus.FAILED)
    )
    overdue = session.scalar(
        select(func.count())
        .select_from(DueAction)
        .where(
            or_(
                and_(
                    DueAction.status == ActionStatus.PENDING,
                    DueAction.due_at < now - OVERDUE_AFTER,
                ),
                and_(DueAction.status == ActionStatus.RUNNING, DueAction.lease_expires_at < now),
            )
        )
    )
    failed = session.scalar(
        select(func.count())
        .select_from(OutboxMessage)
        .where(OutboxMessage.status == MessageStatus.FAILED)
        .where(OutboxMessage.send_after >= now - FAILING_SENDS_WINDOW - timedelta(days=3))
        .where(OutboxMessage.finished_at >= now - FAILING_SENDS_WINDOW)
    )
    retrying = session.scalar(
        select(func.count())
        .select_from(DueAction)
        .where(DueAction.status == ActionStatus.PENDING)
        .where(DueAction.due_at <= now + RETRY_BACKOFF_CAP)  # a retried send is due soon
        .where(DueAction.kind == SEND_KIND)
        .where(DueAction.last_error.is_not(None))
    )
    return Attention(int(parked or 0), int(overdue or 0), int(failed or 0) + int(retrying or 0))


def attention(rt: Runtime) -> Attention:
    with rt.db.reading() as session:
        return read(session, rt.clock.now())
