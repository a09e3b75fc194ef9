"""What an admin should know about on every dashboard page: Stripe events parked after repeated
errors, due actions no worker is getting done, messages that could not be sent. Four small
counts, each on an index (the inbox's and the due actions' status indexes, the outbox's
status-and-time index) and each stopping at CAP rows, cheap enough for every page an admin
opens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, func, or_, select
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
CAP = 100  # counted up to this, shown as "100+"
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


def _capped(query: Select[Any]) -> Select[Any]:
    """The number of rows `query` finds, counting no further than CAP: the banner says "100+"
    past it, so a backlog of a million overdue actions costs no more to notice than a few."""
    return select(func.count()).select_from(query.limit(CAP).subquery())


def read(session: Session, now: datetime) -> Attention:
    parked = select(StripeEvent.id).where(StripeEvent.status == EventStatus.FAILED)
    overdue = select(DueAction.id).where(
        or_(
            and_(DueAction.status == ActionStatus.PENDING, DueAction.due_at < now - OVERDUE_AFTER),
            and_(DueAction.status == ActionStatus.RUNNING, DueAction.lease_expires_at < now),
        )
    )
    failed = (
        select(OutboxMessage.id)
        .where(OutboxMessage.status == MessageStatus.FAILED)
        # on the (status, send_after) index: a message fails at most ~2 days after its time
        .where(OutboxMessage.send_after >= now - FAILING_SENDS_WINDOW - timedelta(days=3))
        .where(OutboxMessage.finished_at >= now - FAILING_SENDS_WINDOW)
    )
    retrying = (
        select(DueAction.id)
        .where(DueAction.status == ActionStatus.PENDING)
        # a retried send is due soon (one past due is counted as overdue already)
        .where(DueAction.due_at >= now - OVERDUE_AFTER)
        .where(DueAction.due_at <= now + RETRY_BACKOFF_CAP)
        .where(DueAction.kind == SEND_KIND)
        .where(DueAction.last_error.is_not(None))
    )
    # one statement for all four: a dashboard page costs one query more, not four
    counts = session.execute(
        select(*(_capped(q).scalar_subquery() for q in (parked, overdue, failed, retrying)))
    ).one()
    parked_n, overdue_n, failed_n, retrying_n = (int(n or 0) for n in counts)
    return Attention(parked_n, overdue_n, min(failed_n + retrying_n, CAP))


def attention(rt: Runtime) -> Attention:
    with rt.db.reading() as session:
        return read(session, rt.clock.now())
