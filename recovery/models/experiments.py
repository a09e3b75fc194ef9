"""Experiments: who is in which arm, which case or cancel session each arm covers, and every
reassignment of shares that Thompson routing made (issue 11)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from recovery.db import Base


class ExperimentAssignment(Base):
    """A customer's arm in one experiment, recorded with the case or cancel session that first
    placed them: unique per (experiment, customer), so a customer keeps that arm forever."""

    __tablename__ = "experiment_assignments"

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_key: Mapped[str] = mapped_column(String(255))
    arm: Mapped[str] = mapped_column(String(40))  # an arm's name, or "holdout"
    customer_id: Mapped[str] = mapped_column(String(255))
    subject: Mapped[str] = mapped_column(String(80))  # "case:42" or "cancel_session:cxs_..."
    assigned_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint(
            "experiment_key", "customer_id", name="uq_experiment_assignments_customer"
        ),
        Index("ix_experiment_assignments_key_arm", "experiment_key", "arm"),
    )


class ExperimentSubject(Base):
    """One recovery case or cancel session in an experiment, under its customer's arm: what the
    results count and what the case's reminders and retries read."""

    __tablename__ = "experiment_subjects"

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_key: Mapped[str] = mapped_column(String(255))
    arm: Mapped[str] = mapped_column(String(40))
    customer_id: Mapped[str] = mapped_column(String(255))
    case_id: Mapped[int | None] = mapped_column(unique=True)
    cancel_session_id: Mapped[str | None] = mapped_column(String(40), unique=True)
    assigned_at: Mapped[datetime]

    __table_args__ = (Index("ix_experiment_subjects_key_arm", "experiment_key", "arm"),)


class ExperimentRouting(Base):
    """A reassignment of an experiment's shares and the Beta posteriors that caused it
    (`domain.experiments.Reassignment.as_log`); new customers are assigned under the latest."""

    __tablename__ = "experiment_routing"

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_key: Mapped[str] = mapped_column(String(255))
    at: Mapped[datetime]
    shares: Mapped[dict[str, Any]] = mapped_column()  # arm (and "holdout") -> share
    posteriors: Mapped[dict[str, Any]] = mapped_column()  # Reassignment.as_log()

    __table_args__ = (Index("ix_experiment_routing_key_at", "experiment_key", "at"),)
