"""Who is signed in: the session cookie names a user; decorators guard the pages.

The cookie is Flask's signed session (HttpOnly, SameSite=Lax, Secure behind https - set in
create_app). It holds the user id, the account's session version (a password change or a
disabled account ends every old session) and when it was last used (idle timeout).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

from flask import abort, g, redirect, request, session, url_for
from werkzeug.wrappers import Response

from recovery.services.accounts import signin
from recovery.web import runtime

IDLE_TIMEOUT = timedelta(hours=12)
# Refresh the "last seen" stamp at most this often: a cookie rewritten on every request would
# make each page response a Set-Cookie for no gain.
TOUCH_EVERY = timedelta(minutes=5)

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class CurrentUser:
    id: int
    email: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def sign_in(account: signin.Account) -> None:
    """Start a fresh session for `account`: whatever the old cookie held is dropped (no
    fixation)."""
    session.clear()
    session["uid"] = account.id
    session["sv"] = account.session_version
    session["seen"] = int(runtime().clock.now().timestamp())
    session.permanent = False


def sign_out() -> None:
    session.clear()


def current_user() -> CurrentUser | None:
    """The signed-in user for this request, or None (loaded once per request)."""
    if "dashboard_user" in g:
        cached: CurrentUser | None = g.dashboard_user
        return cached
    g.dashboard_user = _load()
    return g.dashboard_user  # type: ignore[no-any-return]


def _load() -> CurrentUser | None:
    uid, version, seen = session.get("uid"), session.get("sv"), session.get("seen")
    if not isinstance(uid, int) or not isinstance(version, int) or not isinstance(seen, int):
        return None
    now = runtime().clock.now()
    if now.timestamp() - seen > IDLE_TIMEOUT.total_seconds():
        _forget_sign_in()
        return None
    account = signin.signed_in(runtime(), uid, version)
    if account is None:
        _forget_sign_in()
        return None
    if now.timestamp() - seen > TOUCH_EVERY.total_seconds():
        session["seen"] = int(now.timestamp())
    return CurrentUser(id=account.id, email=account.email, role=account.role)


def _forget_sign_in() -> None:
    # Only the sign-in: this can run while a page renders (the templates ask who is signed in),
    # after its form put a CSRF token in the session - clearing that made the next sign-in 400.
    for key in ("uid", "sv", "seen"):
        session.pop(key, None)


def safe_next(target: str | None) -> str | None:
    """Only a path on this site: `//evil.example`, `https://...` or `\\evil` would be an open
    redirect straight after sign-in."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return None
    if "\\" in target or any(ord(ch) < 32 for ch in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target


def _to_login() -> Response:
    here = request.full_path if request.query_string else request.path
    return redirect(url_for("dashboard.login", next=here))


def login_required(view: Callable[P, R]) -> Callable[P, R | Response]:
    @functools.wraps(view)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R | Response:
        if current_user() is None:
            return _to_login()
        return view(*args, **kwargs)

    return wrapped


def admin_required(view: Callable[P, R]) -> Callable[P, R | Response]:
    """Signed in as an admin; a viewer gets 403 and nothing runs."""

    @functools.wraps(view)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R | Response:
        user = current_user()
        if user is None:
            return _to_login()
        if not user.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return wrapped


def template_user() -> dict[str, Any]:
    return {"user": current_user()}
