"""`recovery users ...`: dashboard accounts from the command line (the first admin starts here).

Passwords are read from a prompt (asked twice, never echoed) or, with --password-stdin, from
the first line of standard input - never from an argument, which would land in shell history
and in the process list.
"""

from __future__ import annotations

import sys

import click

from recovery.cli import common
from recovery.models.users import ROLES
from recovery.services.accounts import users as accounts


def _password(password_stdin: bool, email: str) -> str:
    if password_stdin:
        value = sys.stdin.readline().rstrip("\r\n")
    else:
        value = click.prompt("Password", hide_input=True, confirmation_prompt="Repeat the password")
    problem = accounts.password_problem(value, email)
    if problem:
        raise click.ClickException(problem)
    return value


def _fail(exc: accounts.AccountError) -> click.ClickException:
    return click.ClickException(str(exc))


@click.group()
def users() -> None:
    """Dashboard accounts (admin: may act on cases; viewer: reads only)."""


@users.command("create")
@click.option("--email", required=True, help="The sign-in address (case does not matter).")
@click.option("--role", required=True, type=click.Choice(ROLES))
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def create(email: str, role: str, password_stdin: bool) -> None:
    """Create an account."""

    try:
        address = accounts.normalise_email(email)
    except accounts.AccountError as exc:
        raise _fail(exc) from exc
    password = _password(password_stdin, address)
    rt = common.runtime_from_env()
    try:
        with rt.db.transaction() as db:
            user = accounts.create_user(
                db, email=address, role=role, password=password, now=rt.clock.now()
            )
            click.echo(f"created {user.role} {user.email}")
    except accounts.AccountError as exc:
        raise _fail(exc) from exc


@users.command("list")
def list_() -> None:
    """List the accounts."""

    rt = common.runtime_from_env()
    with rt.db.transaction() as db:
        rows = accounts.list_users(db)
    for u in rows:
        seen = u.last_login_at.isoformat(timespec="seconds") if u.last_login_at else "never"
        state = "disabled" if u.disabled else "active"
        click.echo(f"{u.email:40} {u.role:7} {state:8} last sign-in: {seen}")
    click.echo(f"{len(rows)} account(s)")


@users.command("set-password")
@click.option("--email", required=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def set_password(email: str, password_stdin: bool) -> None:
    """Set a new password (signs the account out everywhere)."""

    password = _password(password_stdin, email.strip().lower())
    rt = common.runtime_from_env()
    try:
        with rt.db.transaction() as db:
            user = accounts.set_password(db, email=email, password=password)
            click.echo(f"password changed for {user.email}")
    except accounts.AccountError as exc:
        raise _fail(exc) from exc


@users.command("disable")
@click.option("--email", required=True)
def disable(email: str) -> None:
    """Disable an account: it can no longer sign in, and its sessions end at once."""

    rt = common.runtime_from_env()
    try:
        with rt.db.transaction() as db:
            user = accounts.disable_user(db, email=email)
            click.echo(f"disabled {user.email}")
    except accounts.AccountError as exc:
        raise _fail(exc) from exc
