"""What `GET /metrics` reports, read from the database at scrape time.

Nothing is counted in a process: with several gunicorn workers (and worker processes on other
hosts) each process would hold its own share. A custom collector asks the database instead, so
every process answers the same: eight grouped queries. At bench/dashboard_scale.py's size
(400k due actions, 194k messages, 200k cases) a scrape took ~0.5 s, mostly the due actions'
GROUP BY; scrape every 30-60 s.

Gauges count the rows kept now (the daily retention job deletes old processed events, finished
actions and sent messages, so those counts may fall; they are not counters). The recoveries are
counters: recovery cases are never deleted, so they only grow.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from recovery.domain.cases import CaseStatus
from recovery.i18n import major_units
from recovery.models import (
    ActionStatus,
    DueAction,
    EventStatus,
    OutboxMessage,
    RecoveryCase,
    StripeEvent,
    WorkerHeartbeat,
)
from recovery.runtime import Runtime

# A due action still pending this long after its time is overdue: a worker ticks every second,
# so minutes late means no worker is running it (or it keeps failing).
OVERDUE_AFTER = timedelta(minutes=5)
PREFIX = "recovery"
PARKED = "parked"  # an event's `failed` state: set aside after too many errors


def _age(now: datetime, then: datetime | None) -> float:
    return max((now - then).total_seconds(), 0.0) if then is not None else 0.0


def _events(session: Session, now: datetime) -> Iterator[Metric]:
    # The inbox keeps RECOVERY_RETENTION_DAYS of processed events (millions on a busy account):
    # the waiting ones are counted whole (few, on the status index), the rest over the last
    # day only (on the received_at index).
    waiting = GaugeMetricFamily(
        f"{PREFIX}_stripe_events_waiting",
        "Stripe events not processed, by type and state (pending: not yet processed; parked: "
        "failed repeatedly, see `recovery events replay --failed`)",
        labels=["type", "state"],
    )
    rows = session.execute(
        select(StripeEvent.type, StripeEvent.status, func.count())
        .where(StripeEvent.status.in_([EventStatus.PENDING, EventStatus.FAILED]))
        .group_by(StripeEvent.type, StripeEvent.status)
    )
    for event_type, status, count in rows:
        waiting.add_metric([event_type, PARKED if status == EventStatus.FAILED else status], count)
    yield waiting
    recent = GaugeMetricFamily(
        f"{PREFIX}_stripe_events_last_day",
        "Stripe events received in the last 24 hours, by type and state now (processed, "
        "pending, parked)",
        labels=["type", "state"],
    )
    rows = session.execute(
        select(StripeEvent.type, StripeEvent.status, func.count())
        .where(StripeEvent.received_at >= now - timedelta(days=1))
        .group_by(StripeEvent.type, StripeEvent.status)
    )
    for event_type, status, count in rows:
        recent.add_metric([event_type, PARKED if status == EventStatus.FAILED else status], count)
    yield recent
    oldest = session.scalar(
        select(func.min(StripeEvent.received_at)).where(StripeEvent.status == EventStatus.PENDING)
    )
    lag = GaugeMetricFamily(
        f"{PREFIX}_event_processing_lag_seconds",
        "Age of the oldest Stripe event not yet processed (0 when none waits)",
    )
    lag.add_metric([], _age(now, oldest))
    yield lag


def _actions(session: Session, now: datetime) -> Iterator[Metric]:
    states = GaugeMetricFamily(
        f"{PREFIX}_due_actions",
        "Due actions kept, by kind and state (shadow: decided in shadow mode, not done)",
        labels=["kind", "state"],
    )
    rows = session.execute(
        select(DueAction.kind, DueAction.status, func.count()).group_by(
            DueAction.kind, DueAction.status
        )
    )
    for kind, status, count in rows:
        states.add_metric([kind, status], count)
    yield states
    late = now - OVERDUE_AFTER
    overdue = GaugeMetricFamily(
        f"{PREFIX}_due_actions_overdue",
        "Due actions pending more than 5 minutes after their time, or running on an expired "
        "lease: no worker is getting them done",
        labels=["kind"],
    )
    stuck = or_(
        and_(DueAction.status == ActionStatus.PENDING, DueAction.due_at < late),
        and_(DueAction.status == ActionStatus.RUNNING, DueAction.lease_expires_at < now),
    )
    for kind, count in session.execute(
        select(DueAction.kind, func.count()).where(stuck).group_by(DueAction.kind)
    ):
        overdue.add_metric([kind], count)
    yield overdue


def _messages(session: Session) -> Iterator[Metric]:
    family = GaugeMetricFamily(
        f"{PREFIX}_messages",
        "Messages to subscribers kept, by channel and state (sent, failed, pending, "
        "cancelled, shadow)",
        labels=["channel", "state"],
    )
    rows = session.execute(
        select(OutboxMessage.channel, OutboxMessage.status, func.count()).group_by(
            OutboxMessage.channel, OutboxMessage.status
        )
    )
    for channel, status, count in rows:
        family.add_metric([channel, status], count)
    yield family


def _recoveries(session: Session) -> Iterator[Metric]:
    count = CounterMetricFamily(
        f"{PREFIX}_recoveries",
        "Failed payments recovered, by currency and how",
        labels=["currency", "via"],
    )
    amount = CounterMetricFamily(
        f"{PREFIX}_recovered_amount",
        "Amounts recovered, in the currency's major unit (e.g. 19.5 for 19.50 EUR)",
        labels=["currency"],
    )
    totals: dict[str, float] = {}
    rows = session.execute(
        select(
            RecoveryCase.currency,
            RecoveryCase.recovered_via,
            func.count(),
            func.coalesce(func.sum(RecoveryCase.amount_recovered), 0),
        )
        .where(RecoveryCase.status == CaseStatus.RECOVERED)
        .group_by(RecoveryCase.currency, RecoveryCase.recovered_via)
    )
    for currency, via, cases, minor in rows:
        code = str(currency).upper()
        count.add_metric([code, via or "unknown"], cases)
        totals[code] = totals.get(code, 0.0) + float(major_units(int(minor), code))
    for code, value in sorted(totals.items()):
        amount.add_metric([code], value)
    yield count
    yield amount


def _workers(session: Session, now: datetime) -> Iterator[Metric]:
    family = GaugeMetricFamily(
        f"{PREFIX}_worker_heartbeat_age_seconds",
        "Seconds since each worker last said it was alive",
        labels=["worker"],
    )
    for worker_id, beat_at in session.execute(
        select(WorkerHeartbeat.worker_id, WorkerHeartbeat.beat_at)
    ):
        family.add_metric([worker_id], _age(now, beat_at))
    yield family


class DatabaseCollector(Collector):
    """Every metric, from one read-only transaction per scrape."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def describe(self) -> list[Any]:
        return []  # nothing to check at registration: the families exist only per scrape

    def collect(self) -> Iterator[Metric]:
        rt = self.runtime
        now = rt.clock.now()
        shadow = GaugeMetricFamily(
            f"{PREFIX}_shadow_mode", "1 in shadow mode (nothing is charged or sent), 0 when live"
        )
        shadow.add_metric([], 1.0 if rt.settings.is_shadow else 0.0)
        families: list[Metric] = [shadow]
        with rt.db.transaction() as session:
            families += _events(session, now)
            families += _actions(session, now)
            families += _messages(session)
            families += _recoveries(session)
            families += _workers(session, now)
        yield from families
