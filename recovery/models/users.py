"""Dashboard accounts and the audit log of what they did."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from recovery.db import Base

ROLES = ("admin", "viewer")


class User(Base):
    """A billing-team member who signs in to /dashboard. Only an argon2 hash of the password is
    kept; the email is stored lower-cased so sign-in and uniqueness ignore case."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    last_login_at: Mapped[datetime | None]
    # Bumped when the password changes or the account is disabled: a session cookie carries
    # the value it was issued with, so old cookies stop working at once.
    session_version: Mapped[int] = mapped_column(default=1)
    disabled: Mapped[bool] = mapped_column(default=False)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin" and not self.disabled


class AuditEntry(Base):
    """Who did what, when, to which case (or other target) - one row per admin action."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime]
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # The email as it was then: the row stays readable if the account is later renamed.
    actor: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(40))
    case_id: Mapped[int | None] = mapped_column(
        ForeignKey("recovery_cases.id", ondelete="SET NULL")
    )
    target: Mapped[str | None] = mapped_column(String(255))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (
        Index("ix_audit_log_case_at", "case_id", "at"),
        Index("ix_audit_log_at", "at"),
    )
