"""Durable work: due actions claimed by workers, singleton job runs, worker heartbeats."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from recovery.db import Base


class ActionStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"  # claimed under a lease; reclaimed by anyone once the lease expires
    DONE = "done"
    FAILED = "failed"  # gave up after max_attempts; shown with its last error
    CANCELLED = "cancelled"  # e.g. the case recovered before the retry came due
    # RECOVERY_MODE=shadow: came due and was decided, but not done (nothing called); finished
    # for good, never claimed again. `shadow_note` says what would have been done.
    SHADOW = "shadow"


class DueAction(Base):
    __tablename__ = "due_actions"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(50))  # handler name, e.g. "retry.invoice"
    subject: Mapped[str] = mapped_column(String(255))  # what it is about, e.g. "case:42"
    dedupe_key: Mapped[str] = mapped_column(String(255), unique=True)
    due_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(20), default=ActionStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=8)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None]
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    # Shadow mode: what this action would have done, e.g. "retry charge of in_123 19.00 EUR".
    shadow_note: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        # The claim query: pending rows by due time, and running rows by lease expiry.
        Index("ix_due_actions_claim", "status", "due_at"),
        Index("ix_due_actions_lease", "status", "lease_expires_at"),
        # Subject and status together: "this case's pending actions" is asked on every event,
        # and SQLite (no statistics) otherwise walks every pending action by the status index.
        Index("ix_due_actions_subject_status", "subject", "status"),
    )


class JobRun(Base):
    """One row per singleton job per period: the daily scan runs once a day, cluster-wide."""

    __tablename__ = "job_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    job: Mapped[str] = mapped_column(String(50))
    period: Mapped[str] = mapped_column(String(40))  # e.g. "2026-11-23"
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    owner: Mapped[str] = mapped_column(String(100))

    __table_args__ = (UniqueConstraint("job", "period", name="uq_job_runs_job_period"),)


class WorkerHeartbeat(Base):
    __tablename__ = "worker_heartbeats"

    worker_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    started_at: Mapped[datetime]
    beat_at: Mapped[datetime]
