"""Dashboard accounts: create, check a password, change it, disable - and the audit log.

Passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106's second recommended
set). Sign-in answers the same way, and takes about the same time, whether the account is
unknown, disabled or the password wrong: it never tells which accounts exist.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from recovery.models.users import ROLES, AuditEntry, User

MIN_LENGTH = 12
MAX_LENGTH = 1024  # argon2 takes any length; a megabyte "password" is only a way to burn CPU
# The most used passwords that pass the length rule (from public breach top lists).
COMMON = frozenset(
    {
        "password1234", "passwordpassword", "123456789012", "qwertyuiopas", "111111111111",
        "iloveyou1234", "administrator", "letmein12345", "welcome12345", "changeme1234",
        "qwerty123456", "1q2w3e4r5t6y", "abcdefghijkl", "password123!", "Password1234",
    }
)  # fmt: skip

_hasher = PasswordHasher()


class AccountError(Exception):
    """A request the account rules refuse; the message is fit to show to the person."""


@dataclass(frozen=True)
class AccountView:
    id: int
    email: str
    role: str
    created_at: datetime
    last_login_at: datetime | None
    disabled: bool


def normalise_email(email: str) -> str:
    value = email.strip().lower()
    local, at, domain = value.partition("@")
    if (
        not at
        or not local
        or "." not in domain
        or len(value) > 320
        or any(c.isspace() for c in value)
    ):
        raise AccountError("Enter a valid email address, like name@example.com.")
    return value


def password_problem(password: str, email: str = "") -> str | None:
    """Why `password` is too weak, or None when it is acceptable."""
    if len(password) < MIN_LENGTH:
        return f"The password must be at least {MIN_LENGTH} characters long."
    if len(password) > MAX_LENGTH:
        return f"The password must be at most {MAX_LENGTH} characters long."
    if len(set(password)) < 5:
        return "The password repeats too few characters; choose a longer, varied one."
    lowered = password.lower()
    if password in COMMON or lowered in COMMON:
        return "That password is on lists of common passwords; choose another."
    local = email.partition("@")[0].lower()
    if email and (lowered == email.lower() or (len(local) >= 4 and local in lowered)):
        return "The password must not contain the email address."
    return None


def hash_password(password: str) -> str:
    return _hasher.hash(password)


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash("not-a-real-password-only-for-timing")


def _verify(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def create_user(db: Session, *, email: str, role: str, password: str, now: datetime) -> User:
    address = normalise_email(email)
    if role not in ROLES:
        raise AccountError(f"The role must be one of: {', '.join(ROLES)}.")
    problem = password_problem(password, address)
    if problem:
        raise AccountError(problem)
    if db.scalar(select(User.id).where(User.email == address)) is not None:
        raise AccountError(f"An account for {address} already exists.")
    user = User(email=address, role=role, password_hash=hash_password(password), created_at=now)
    db.add(user)
    db.flush()
    return user


def _find(db: Session, email: str) -> User:
    user = db.scalar(select(User).where(User.email == normalise_email(email)))
    if user is None:
        raise AccountError("No account has that email address.")
    return user


def set_password(db: Session, *, email: str, password: str) -> User:
    user = _find(db, email)
    problem = password_problem(password, user.email)
    if problem:
        raise AccountError(problem)
    user.password_hash = hash_password(password)
    user.session_version += 1  # signs out every session started with the old password
    return user


def disable_user(db: Session, *, email: str) -> User:
    user = _find(db, email)
    user.disabled = True
    user.session_version += 1
    return user


def list_users(db: Session) -> list[AccountView]:
    rows = db.scalars(select(User).order_by(User.email))
    return [
        AccountView(u.id, u.email, u.role, u.created_at, u.last_login_at, u.disabled) for u in rows
    ]


def authenticate(db: Session, *, email: str, password: str, now: datetime) -> User | None:
    """The account if `password` is right for it and it is enabled; otherwise None."""
    try:
        address = normalise_email(email)
    except AccountError:
        address = ""
    user = db.scalar(select(User).where(User.email == address)) if address else None
    if user is None:
        _verify(_dummy_hash(), password)  # the same work as a real check
        return None
    if len(password) > MAX_LENGTH or not _verify(user.password_hash, password) or user.disabled:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)  # parameters raised since it was set
    user.last_login_at = now
    return user


def audit(
    db: Session,
    *,
    at: datetime,
    user_id: int | None,
    actor: str,
    action: str,
    case_id: int | None = None,
    target: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    entry = AuditEntry(
        at=at,
        user_id=user_id,
        actor=actor,
        action=action,
        case_id=case_id,
        target=target,
        details=details or {},
    )
    db.add(entry)
    db.flush()
    return entry
