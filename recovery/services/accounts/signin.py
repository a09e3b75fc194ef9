"""Signing in to the dashboard: check a password, and find who a session cookie names.

The cookie carries the account id and its session version; a password change or a disabled
account bumps or refuses it, so every older session ends (web/dashboard/auth.py)."""

from __future__ import annotations

from dataclasses import dataclass

from recovery.models.users import User
from recovery.runtime import Runtime
from recovery.services.accounts import users as accounts


@dataclass(frozen=True)
class Account:
    """A signed-in person, as the dashboard needs them: no password hash."""

    id: int
    email: str
    role: str
    session_version: int


def _account(user: User) -> Account:
    return Account(user.id, user.email, user.role, user.session_version)


def sign_in(rt: Runtime, email: str, password: str) -> Account | None:
    """The account when the password is right and the account enabled; else None (the same
    answer, and about the same time, whichever was wrong)."""
    with rt.db.transaction() as session:
        user = accounts.authenticate(session, email=email, password=password, now=rt.clock.now())
        return None if user is None else _account(user)


def signed_in(rt: Runtime, user_id: int, session_version: int) -> Account | None:
    """The account a session cookie names, while it is enabled and the cookie's version is
    its current one; else None."""
    with rt.db.reading() as session:
        user = session.get(User, user_id)
        if user is None or user.disabled or user.session_version != session_version:
            return None
        return _account(user)
