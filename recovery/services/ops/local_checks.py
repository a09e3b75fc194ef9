"""Checks of this installation itself: the database and its migrations, a live worker, and the
address customers reach the service at."""

from __future__ import annotations

import ipaddress
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from recovery.config import Settings
from recovery.db import Database
from recovery.migrate import alembic_config
from recovery.models import WorkerHeartbeat
from recovery.services.ops.checks import Check, fail, ok, warn

# Same threshold as GET /healthz: a worker beats every tick (1 s by default).
WORKER_STALE_AFTER_SECONDS = 120


def _first_line(exc: BaseException) -> str:
    text_ = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text_[0][:160]}" if text_ else exc.__class__.__name__


def database(db: Database) -> list[Check]:
    """Reachable, and at the newest migration this code ships."""
    url = make_url(db.url)
    if db.dialect == "sqlite" and url.database and not Path(url.database).exists():
        # Connecting would create an empty file: say what is missing instead.
        return [
            fail(
                "database",
                f"no SQLite file at {url.database}",
                "run `recovery db upgrade` (or `recovery run`, which migrates SQLite itself), "
                "or point RECOVERY_DATABASE_URL at the database",
            )
        ]
    try:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            current = set(MigrationContext.configure(conn).get_current_heads())
    except SQLAlchemyError as exc:
        return [
            fail(
                "database",
                f"unreachable ({_first_line(exc)})",
                "check RECOVERY_DATABASE_URL (host, port, user, password, database name) and "
                "that the server is running and accepts connections from this host",
            )
        ]
    reached = ok("database", f"reachable ({db.dialect})")
    script = ScriptDirectory.from_config(alembic_config(db.url))
    heads = set(script.get_heads())
    if current == heads:
        return [reached, ok("migrations", f"at the latest migration ({', '.join(sorted(heads))})")]
    if not current:
        detail = "the database has no schema yet"
    else:
        known = {rev.revision for rev in script.walk_revisions()}
        unknown = current - known
        if unknown:
            return [
                reached,
                fail(
                    "migrations",
                    f"at {', '.join(sorted(unknown))}, which this version does not know",
                    "the database was migrated by a newer version of recovery: deploy that "
                    "version here too",
                ),
            ]
        detail = f"at {', '.join(sorted(current))}, the latest is {', '.join(sorted(heads))}"
    return [reached, fail("migrations", detail, "run `recovery db upgrade`")]


def worker(db: Database, now: datetime) -> Check:
    try:
        with db.reading() as session:
            last = session.scalar(select(func.max(WorkerHeartbeat.beat_at)))
    except SQLAlchemyError as exc:
        return fail("worker", f"cannot read heartbeats ({_first_line(exc)})", "fix the database")
    start = (
        "start one: `recovery worker` (PostgreSQL, any number of hosts) or `recovery run` "
        "(web and worker in one process)"
    )
    if last is None:
        return fail("worker", "no worker has ever run against this database", start)
    age = (now - last).total_seconds()
    if age > WORKER_STALE_AFTER_SECONDS:
        return fail(
            "worker",
            f"last heartbeat {_ago(age)} ago: no retries, reminders or event re-drives run",
            f"{start}; if one runs, read its log for why it stopped beating",
        )
    return ok("worker", f"last heartbeat {_ago(age)} ago")


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{max(seconds, 0):.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _is_local(host: str) -> bool:
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal", ".test")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


def public_url(settings: Settings) -> Check:
    """Links in emails and texts, the card-update page and Twilio's callbacks use this address."""
    url = settings.public_url
    host = urlsplit(url).hostname or ""
    if settings.is_production:
        if not url.startswith("https://"):
            return fail(
                "public URL",
                f"{url} is not https: card-update links would travel in clear text",
                "serve the app behind TLS and set RECOVERY_PUBLIC_URL=https://<your host>",
            )
        if _is_local(host):
            return fail(
                "public URL",
                f"{url} is not reachable from customers' devices",
                "set RECOVERY_PUBLIC_URL to the public https address of this service",
            )
        return ok("public URL", f"{url} (https)")
    if not url.startswith("https://"):
        return ok("public URL", f"{url} (http is fine outside production)")
    return ok("public URL", url)


def mode(settings: Settings) -> Check:
    """Shadow mode is a warning, not a failure: everything runs, nothing acts (README: Shadow
    mode), which is what the operator wants until the shadow report looks right."""
    return warn(
        "mode",
        "shadow: cases, retries and reminders are planned, nothing is charged, sent or changed "
        "at Stripe",
        "compare Stripe with our plan at /dashboard/shadow, then set RECOVERY_MODE=live",
    )
