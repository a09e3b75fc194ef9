"""`recovery doctor`: is this installation ready for a live run? One line per check."""

from __future__ import annotations

import json
import sys

import click

from recovery.cli import common
from recovery.services.ops.doctor import Probes, run


@click.command()
@click.option("--json", "as_json", is_flag=True, help="The report as JSON.")
@click.option(
    "--timeout", default=10.0, show_default=True, help="Seconds per network check (SMTP, DNS...)."
)
def doctor(as_json: bool, timeout: float) -> None:
    """Check the database, the worker, SMTP and the sender domain's DNS, Twilio and Stripe.

    Nothing is sent, charged or changed. Exits 1 when any check fails."""
    rt = common.runtime_from_env()
    try:
        report = run(rt, Probes(timeout=timeout))
    finally:
        rt.db.dispose()
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        click.echo("\n".join(report.lines()))
    sys.exit(1 if report.failed else 0)
