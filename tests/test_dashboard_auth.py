"""Signing in to the dashboard: one message for every failure, rate limits, redirects for
signed-out visitors, CSRF on every form, viewers who cannot act, sign-out, idle timeout, and
the `recovery users` command."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from click.testing import CliRunner
from sqlalchemy import func, select

from recovery.adapters.clock import FrozenClock
from recovery.models import DueAction, RecoveryCase
from recovery.models.users import AuditEntry, User
from recovery.runtime import Runtime
from tests.conftest import START
from tests.support.dashboard import (
    ADMIN,
    PASSWORD,
    VIEWER,
    add_case,
    add_user,
    login,
    token_for,
)

FAILED = "Email or password is incorrect."


def test_sign_in_and_the_same_message_for_every_failure(runtime: Runtime, client: Any) -> None:
    add_user(runtime, ADMIN, "admin")
    wrong = login(client, ADMIN, "not the password at all")
    unknown = login(client, "nobody@example.com", PASSWORD)
    empty = login(client, "", "")
    for response in (wrong, unknown, empty):
        assert response.status_code == 401
        assert FAILED in response.get_data(as_text=True)
    # The pages differ in nothing but the CSRF token and the echoed email.
    assert client.get("/dashboard").status_code == 302

    ok = login(client, ADMIN.upper(), PASSWORD)  # the address's case does not matter
    assert ok.status_code == 302 and ok.headers["Location"] == "/dashboard"
    assert client.get("/dashboard").status_code == 200
    with runtime.db.transaction() as db:
        user = db.scalars(select(User)).one()
        assert user.last_login_at == START
        assert user.password_hash.startswith("$argon2id$")


def test_signed_out_visitor_is_sent_to_sign_in_and_back(runtime: Runtime, client: Any) -> None:
    add_user(runtime, VIEWER, "viewer")
    for path in ("/dashboard", "/dashboard/cases?status=lost", "/dashboard/cases.csv"):
        response = client.get(path)
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/login?next=")
    back = login(client, VIEWER, next_url="/dashboard/cases?status=lost")
    assert back.headers["Location"] == "/dashboard/cases?status=lost"


def test_next_never_leads_off_the_site(runtime: Runtime, app: Any) -> None:
    add_user(runtime, VIEWER, "viewer")
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:x"):
        response = login(app.test_client(), VIEWER, next_url=target)
        assert response.headers["Location"] == "/dashboard", target


def test_rate_limit_trips_after_ten_attempts(runtime: Runtime, client: Any) -> None:
    add_user(runtime, ADMIN, "admin")
    statuses = [login(client, ADMIN, f"wrong password {i}").status_code for i in range(10)]
    assert statuses == [401] * 10
    blocked = login(client, ADMIN, PASSWORD)  # even the right password waits now
    assert blocked.status_code == 429
    assert blocked.headers["Retry-After"] == "60"
    assert client.get("/dashboard").status_code == 302


def test_session_cookie_flags_and_rotation(runtime: Runtime, client: Any) -> None:
    add_user(runtime, ADMIN, "admin")
    client.get("/login")
    before = client.get_cookie("session")
    response = login(client, ADMIN)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    after = client.get_cookie("session")
    assert before is None or before.value != after.value


def test_idle_session_expires(runtime: Runtime, client: Any, clock: FrozenClock) -> None:
    add_user(runtime, ADMIN, "admin")
    login(client, ADMIN)
    clock.advance(timedelta(hours=11))
    assert client.get("/dashboard").status_code == 200  # in use: still signed in
    clock.advance(timedelta(hours=12, minutes=1))
    assert client.get("/dashboard").status_code == 302


def test_signing_in_again_after_the_idle_timeout_works_at_once(
    runtime: Runtime, client: Any, clock: FrozenClock
) -> None:
    """The same browser comes back the next morning: the sign-in form it is shown must work
    (the expired sign-in used to be dropped with the form's CSRF token, so the post was a 400)."""
    add_user(runtime, ADMIN, "admin")
    login(client, ADMIN)
    clock.advance(timedelta(hours=13))
    response = login(client, ADMIN)  # straight to the sign-in page, as a bookmark does
    assert response.status_code == 302
    assert client.get("/dashboard").status_code == 200


def test_logout_is_a_post_with_csrf(runtime: Runtime, client: Any) -> None:
    add_user(runtime, ADMIN, "admin")
    login(client, ADMIN)
    assert client.get("/logout").status_code == 405
    assert client.post("/logout").status_code == 400  # no token: still signed in
    assert client.get("/dashboard").status_code == 200
    response = client.post("/logout", data={"csrf_token": token_for(client, "/dashboard")})
    assert response.status_code == 302
    assert client.get("/dashboard").status_code == 302


def _one_case(runtime: Runtime) -> int:
    with runtime.db.transaction() as db:
        return add_case(db, n=1, opened_at=START - timedelta(days=2)).id


def _writes(runtime: Runtime) -> tuple[int, int, str]:
    with runtime.db.transaction() as db:
        actions = db.scalar(select(func.count()).select_from(DueAction)) or 0
        audits = db.scalar(select(func.count()).select_from(AuditEntry)) or 0
        status = db.scalars(select(RecoveryCase.status)).one()
        return actions, audits, status


def test_viewer_sees_no_buttons_and_cannot_act(runtime: Runtime, client: Any) -> None:
    add_user(runtime, VIEWER, "viewer")
    case_id = _one_case(runtime)
    login(client, VIEWER)
    page = client.get(f"/dashboard/cases/{case_id}").get_data(as_text=True)
    assert "Retry now" not in page and "Close case" not in page
    token = token_for(client, "/dashboard")
    before = _writes(runtime)
    for action in ("retry", "pause", "close", "resend-link"):
        response = client.post(
            f"/dashboard/cases/{case_id}/{action}",
            data={"csrf_token": token, "reason": "written_off"},
        )
        assert response.status_code == 403, action
    assert _writes(runtime) == before


def test_a_form_without_csrf_token_is_refused_and_writes_nothing(
    runtime: Runtime, client: Any
) -> None:
    add_user(runtime, ADMIN, "admin")
    case_id = _one_case(runtime)
    login(client, ADMIN)
    before = _writes(runtime)
    for action in ("retry", "pause", "close", "resend-link"):
        response = client.post(f"/dashboard/cases/{case_id}/{action}", data={"reason": "other"})
        assert response.status_code == 400, action
        assert "try again" in response.get_data(as_text=True)
        bad = client.post(
            f"/dashboard/cases/{case_id}/{action}",
            data={"reason": "other", "csrf_token": "forged"},
        )
        assert bad.status_code == 400
    assert _writes(runtime) == before
    # Sign-in itself needs the token too.
    assert client.post("/login", data={"email": ADMIN, "password": PASSWORD}).status_code == 400


def test_disabled_account_and_new_password_end_sessions(runtime: Runtime, client: Any) -> None:
    from recovery.services.accounts import users as accounts

    add_user(runtime, ADMIN, "admin")
    login(client, ADMIN)
    with runtime.db.transaction() as db:
        accounts.set_password(db, email=ADMIN, password="a brand new passphrase")
    assert client.get("/dashboard").status_code == 302
    login(client, ADMIN, "a brand new passphrase")
    with runtime.db.transaction() as db:
        accounts.disable_user(db, email=ADMIN)
    assert client.get("/dashboard").status_code == 302
    assert login(client, ADMIN, "a brand new passphrase").status_code == 401


def test_users_command(runtime: Runtime, monkeypatch: Any) -> None:
    from recovery import cli

    monkeypatch.setattr("recovery.cli.common.runtime_from_env", lambda: runtime)
    runner = CliRunner()
    weak = runner.invoke(
        cli.main, ["users", "create", "--email", ADMIN, "--role", "admin", "--password-stdin"],
        input="short\n",
    )  # fmt: skip
    assert weak.exit_code == 1 and "at least 12 characters" in weak.output
    common = runner.invoke(
        cli.main, ["users", "create", "--email", ADMIN, "--role", "admin", "--password-stdin"],
        input="password1234\n",
    )  # fmt: skip
    assert common.exit_code == 1 and "common passwords" in common.output
    made = runner.invoke(
        cli.main, ["users", "create", "--email", "Admin@Example.com", "--role", "admin"],
        input=f"{PASSWORD}\n{PASSWORD}\n",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    assert "created admin admin@example.com" in made.output
    twice = runner.invoke(
        cli.main, ["users", "create", "--email", ADMIN, "--role", "viewer", "--password-stdin"],
        input=f"{PASSWORD}\n",
    )  # fmt: skip
    assert twice.exit_code == 1 and "already exists" in twice.output
    listed = runner.invoke(cli.main, ["users", "list"])
    assert "admin@example.com" in listed.output and "1 account(s)" in listed.output
    gone = runner.invoke(cli.main, ["users", "disable", "--email", ADMIN])
    assert gone.exit_code == 0 and "disabled admin@example.com" in gone.output
