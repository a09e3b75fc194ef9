"""Is the service healthy (GET /healthz): can the database be reached, and has a worker
reported in lately?"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from recovery.models import WorkerHeartbeat
from recovery.runtime import Runtime

WORKER_STALE_AFTER_SECONDS = 120


@dataclass(frozen=True)
class Health:
    database_error: str | None  # the error's class name when the database is unreachable
    heartbeat_age_seconds: float | None  # since the last heartbeat of any worker; None: never

    @property
    def worker_ok(self) -> bool:
        age = self.heartbeat_age_seconds
        return self.database_error is None and age is not None and age <= WORKER_STALE_AFTER_SECONDS


def check(rt: Runtime) -> Health:
    try:
        with rt.db.reading() as session:
            session.execute(text("SELECT 1"))
            last_beat = session.scalar(select(func.max(WorkerHeartbeat.beat_at)))
    except SQLAlchemyError as exc:
        return Health(database_error=exc.__class__.__name__, heartbeat_age_seconds=None)
    age = None if last_beat is None else (rt.clock.now() - last_beat).total_seconds()
    return Health(database_error=None, heartbeat_age_seconds=age)
