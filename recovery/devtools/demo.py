"""`recovery demo` (the README's first command): the whole service on one machine, with months of
history to look at. Nothing leaves the machine.

1. A fresh database (instance/demo.db), migrated; the demo's business rules (its prices and
   coupon for the cancel flow's offers).
2. The history: `recovery.devtools.history` plays about six months of a few hundred customers'
   billing through the real service, on a frozen clock, against the in-repo Stripe fake.
3. A demo admin account (demo@example.com) for the dashboard.
4. Live: web + worker on the real clock (as `recovery run`), the fake's new events delivered to
   the service's own `POST /webhooks/stripe` over loopback, signed; the demo-only pages
   (RECOVERY_DEMO=1: /demo/outbox, the stand-in Checkout and hosted invoice page) switched on.

`--stripe localstripe` runs the older demo against localstripe instead
(recovery/devtools/demo_localstripe.py).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import click
from sqlalchemy import func, select

from recovery.adapters.clock import FrozenClock, SystemClock
from recovery.config import ConfigError, Settings
from recovery.devtools import population
from recovery.devtools.demo_gateway import DemoStripeGateway, WebhookPump
from recovery.devtools.demo_localstripe import DEMO_API_KEY, DEMO_WEBHOOK_SECRET
from recovery.devtools.history import History, HistoryReport
from recovery.migrate import upgrade
from recovery.models import Customer, RecoveryCase, Subscription
from recovery.runtime import Runtime
from recovery.services.accounts import users as accounts
from recovery.services.registry import build_runtime
from recovery.web.demo import DEMO_ENV

log = logging.getLogger(__name__)

DEMO_EMAIL = "demo@example.com"
# Printed in the banner and the README: the demo listens on loopback only.
DEMO_PASSWORD = "open-the-dashboard"


@contextmanager
def _quiet(level: int = logging.WARNING) -> Iterator[None]:
    """Hundreds of "kept in the outbox" lines would bury the banner while the history runs."""
    root = logging.getLogger("recovery")
    before = root.level
    root.setLevel(level)
    try:
        yield
    finally:
        root.setLevel(before)


def _fresh_sqlite(instance: Path) -> str:
    """The demo's own database file, recreated on every run: the fake Stripe lives in memory,
    so a database from an earlier run would describe objects that no longer exist."""
    path = instance / "demo.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{path}"


def _check_empty(runtime: Runtime) -> None:
    with runtime.db.transaction() as session:
        if session.scalar(select(func.count()).select_from(Customer)):
            raise click.ClickException(
                "RECOVERY_DATABASE_URL points at a database with customers in it; the demo "
                "needs an empty one (or unset it to use instance/demo.db)"
            )


def prepare_environment(host: str, port: int) -> Settings:
    instance = Path(os.environ.get("RECOVERY_INSTANCE_PATH") or "instance").resolve()
    instance.mkdir(parents=True, exist_ok=True)
    rules = instance / "demo-rules.toml"
    rules.write_text(population.RULES_TOML, encoding="utf-8")
    if not os.environ.get("RECOVERY_DATABASE_URL"):
        os.environ["RECOVERY_DATABASE_URL"] = _fresh_sqlite(instance)
    os.environ.pop("STRIPE_API_KEY", None)  # the fake, never a real account
    os.environ.update(
        RECOVERY_INSTANCE_PATH=str(instance),
        RECOVERY_RULES=str(rules),
        STRIPE_WEBHOOK_SECRETS=DEMO_WEBHOOK_SECRET,
        RECOVERY_API_KEYS=os.environ.get("RECOVERY_API_KEYS") or DEMO_API_KEY,
        RECOVERY_PUBLIC_URL=f"http://{host}:{port}",
        **{DEMO_ENV: "1"},
    )
    settings = Settings.from_env()
    if settings.is_production:
        raise click.ClickException("the demo does not run with RECOVERY_ENV=production")
    return settings


def seed_history(
    settings: Settings, gateway: DemoStripeGateway, clock: FrozenClock, customers: int, seed: int
) -> HistoryReport:
    runtime = build_runtime(settings, clock=clock, gateway=gateway)
    try:
        _check_empty(runtime)
        with _quiet():
            history = History(
                runtime, gateway, clock, customers=customers, seed=seed, end=clock.now()
            )
            return history.run()
    finally:
        runtime.db.dispose()


def create_demo_user(runtime: Runtime) -> None:
    with runtime.db.transaction() as session:
        accounts.create_user(
            session,
            email=DEMO_EMAIL,
            role="admin",
            password=DEMO_PASSWORD,
            now=runtime.clock.now(),
        )


def cancel_flow_subscription(runtime: Runtime) -> str | None:
    """An active subscription without a case, to walk the cancel flow with."""
    with runtime.db.transaction() as session:
        in_case = select(RecoveryCase.subscription_id).where(
            RecoveryCase.subscription_id.is_not(None)
        )
        return session.scalar(
            select(Subscription.id)
            .where(Subscription.status == "active")
            .where(Subscription.cancel_at_period_end.is_(False))
            .where(Subscription.pause_behavior.is_(None))
            .where(Subscription.id.not_in(in_case))
            .order_by(Subscription.id)
            .limit(1)
        )


def _wait_until_up(url: str, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return True
        except urllib.error.HTTPError:
            return True  # it answered
        except OSError:
            time.sleep(0.1)
    return False


def banner(base: str, subscription_id: str | None, seconds: float) -> str:
    cancel = f"{base}/demo/cancel/{subscription_id}" if subscription_id else "(none)"
    return "\n".join(
        [
            "",
            f"  recovery demo is running at {base}  (up in {seconds:.0f} s)",
            f"  dashboard:    {base}/dashboard",
            f"  sign in:      {DEMO_EMAIL} / {DEMO_PASSWORD}",
            f"  outbox:       {base}/demo/outbox   (every email and SMS, with working links)",
            f"  cancel flow:  {cancel}",
            f"  API:          curl -H 'Authorization: Bearer {DEMO_API_KEY}' "
            f"{base}/api/v1/cases?status=open",
            "  stop with Ctrl-C (the next run starts a new history)",
            "",
        ]
    )


def run_fake_demo(
    host: str, port: int, customers: int, exit_after_seed: bool, seed: int = 7
) -> None:
    started = time.monotonic()
    settings = prepare_environment(host, port)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # a fresh database: every migration
    try:
        upgrade(settings.database_url)
    except Exception as exc:
        raise click.ClickException(f"could not migrate {settings.database_url}: {exc}") from exc
    clock = FrozenClock(datetime.now(UTC))
    gateway = DemoStripeGateway(clock=clock, pages_url=settings.public_url)
    click.echo(f"playing {customers} customers' last six months through the service...")
    report = seed_history(settings, gateway, clock, customers, seed)
    click.echo(f"history: {report.summary()}")
    if exit_after_seed:
        return

    gateway.clock = SystemClock()  # from now on, Stripe and the service live in real time
    try:
        runtime = build_runtime(settings, gateway=gateway)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    create_demo_user(runtime)
    pump = WebhookPump(
        gateway,
        f"{settings.public_url}/webhooks/stripe",
        DEMO_WEBHOOK_SECRET,
        start_at=len(gateway.events),
    )
    pump.start()
    from recovery.server import serve

    # The worker ticks every second; its scheduler's INFO lines would bury the banner.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    subscription = cancel_flow_subscription(runtime)

    def announce() -> None:  # once the server answers, not before: the banner is a promise
        if _wait_until_up(f"{settings.public_url}/healthz"):
            click.echo(banner(settings.public_url, subscription, time.monotonic() - started))

    threading.Thread(target=announce, name="demo-banner", daemon=True).start()
    try:
        serve(runtime, host, port, with_worker=True)
    finally:
        pump.stop()


def run_demo(
    host: str, port: int, customers: int, exit_after_seed: bool, stripe: str = "fake", seed: int = 7
) -> None:
    if stripe == "localstripe":
        from recovery.devtools.demo_localstripe import run_localstripe_demo

        run_localstripe_demo(host, port, customers, exit_after_seed)
    else:
        run_fake_demo(host, port, customers, exit_after_seed, seed)
