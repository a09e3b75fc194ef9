"""The `recovery` command: run the service, the worker, migrations and maintenance."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta

import click

from recovery.cli import common
from recovery.cli.doctor import doctor
from recovery.cli.jobs import jobs
from recovery.cli.users import users
from recovery.config import ConfigError, Settings
from recovery.logs import configure_logging
from recovery.rules import Rules
from recovery.server import serve


@click.group()
def main() -> None:
    """recovery: win back failed payments and cancellations for Stripe billing."""
    # Every command checks every setting (and the rules file) first: a bad value stops it here,
    # named, rather than failing at the first email or charge.
    try:
        settings = Settings.from_env()
        settings.check()
        Rules.load(settings.rules_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    configure_logging(settings.log_level, settings.log_format)


# ---- database --------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration."""
    from recovery.migrate import upgrade

    settings = Settings.from_env()
    upgrade(settings.database_url)
    click.echo("database is up to date")


# ---- processes -------------------------------------------------------------------------------


@main.command()
@click.option(
    "--batch-size",
    default=100,
    show_default=True,
    help="Due actions claimed, decided and recorded together.",
)
def worker(batch_size: int) -> None:
    """Run a worker: due actions, event re-drives, daily jobs. Run as many as you like."""
    from recovery import heap
    from recovery.worker import Worker

    rt = common.runtime_from_env()
    process = Worker(rt, batch_size=batch_size)
    heap.settle()
    process.start(blocking=True)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--no-worker", is_flag=True, help="Web only (workers run elsewhere).")
def run(host: str, port: int, no_worker: bool) -> None:
    """Web and worker in one process on the embedded defaults: the single-machine setup."""
    from recovery.migrate import upgrade

    settings = Settings.from_env()
    if settings.database_url.startswith("sqlite"):
        upgrade(settings.database_url)  # one machine, one file: keep it migrated
    rt = common.runtime_from_env()
    serve(rt, host, port, with_worker=not no_worker)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--customers", default=300, show_default=True, help="How many to seed.")
@click.option("--exit-after-seed", is_flag=True, help="Stop once seeded (smoke tests).")
@click.option(
    "--stripe",
    type=click.Choice(["fake", "localstripe"]),
    default="fake",
    show_default=True,
    help="Stripe stand-in: the in-repo fake (Checkout, pauses, coupons) or localstripe.",
)
@click.option("--seed", default=7, show_default=True, help="Random seed of the history.")
def demo(
    host: str, port: int, customers: int, exit_after_seed: bool, stripe: str, seed: int
) -> None:
    """Everything on this machine: a local Stripe stand-in, months of history, web + worker."""
    from recovery.devtools.demo import run_demo

    run_demo(host, port, customers, exit_after_seed, stripe, seed)


# ---- events ------------------------------------------------------------------------------------


@main.group()
def events() -> None:
    """The webhook inbox."""


@events.command("list")
@click.option("--status", type=click.Choice(["pending", "processed", "failed"]), default="failed")
@click.option("--limit", default=50, show_default=True)
def events_list(status: str, limit: int) -> None:
    """List stored events (default: the parked, failed ones) with their last error."""
    from sqlalchemy import select

    from recovery.models import StripeEvent

    rt = common.runtime_from_env()
    with rt.db.transaction() as session:
        rows = session.scalars(
            select(StripeEvent)
            .where(StripeEvent.status == status)
            .order_by(StripeEvent.received_at.desc())
            .limit(limit)
        ).all()
        for e in rows:
            click.echo(f"{e.id}  {e.type:40} attempts={e.attempts}  {e.last_error or ''}")
        click.echo(f"{len(rows)} {status} event(s)")


@events.command("replay")
@click.option("--failed", is_flag=True, help="Replay the parked (failed) events.")
@click.option("--id", "event_ids", multiple=True, help="Replay these event ids (repeatable).")
def events_replay(failed: bool, event_ids: tuple[str, ...]) -> None:
    """Process events again now: the pending ones, or the parked ones with --failed."""
    from recovery.services.events import inbox

    rt = common.runtime_from_env()
    ids = inbox.reset_for_replay(rt.db, failed=failed, event_ids=event_ids, now=rt.clock.now())
    counts: dict[str, int] = {}
    for event_id in ids:
        status = inbox.process_stored_event(rt.db, event_id, rt.processing_context, rt.clock)
        counts[status] = counts.get(status, 0) + 1
    click.echo(json.dumps({"replayed": len(ids), **counts}))
    if counts.get("failed") or counts.get("pending"):
        sys.exit(1)


# ---- Stripe ------------------------------------------------------------------------------------


@main.command()
@click.option("--no-progress", is_flag=True, help="No progress bar (for logs).")
def sync(no_progress: bool) -> None:
    """Backfill the mirror from the Stripe API; resumable."""
    from recovery.services.events.sync import sync_from_stripe

    rt = common.runtime_from_env()
    state = rt.settings.instance_path / "sync-state.json"
    report = sync_from_stripe(
        rt.db, rt.gateway, rt.clock, progress=not no_progress, state_path=state
    )
    click.echo(str(report))


@main.command("shadow-replay")
@click.option("--days", default=90, show_default=True, type=click.IntRange(1, 366))
@click.option(
    "--until", type=click.DateTime(["%Y-%m-%d"]), default=None, help="Last day (default: today)."
)
@click.option("--limit", default=5000, show_default=True, help="Most invoices compared.")
def shadow_replay(days: int, until: datetime | None, limit: int) -> None:
    """The shadow report for the mirrored history (run `recovery sync` first): each invoice
    that failed in the DAYS days up to UNTIL, Stripe's retries beside what we would have done.
    Reads only; prints JSON."""
    from recovery.services.ops import shadow_report

    rt = common.runtime_from_env()
    last = until.date() if until is not None else rt.clock.now().date()
    start, end = shadow_report.period_of(last - timedelta(days=days - 1), last)
    click.echo(json.dumps(shadow_report.report(rt, start, end, limit), indent=2))


main.add_command(users)
main.add_command(doctor)
main.add_command(jobs)

if __name__ == "__main__":  # pragma: no cover
    main()
