"""`recovery jobs list` and `recovery jobs run <job>`: the daily jobs (expiry_scan,
term_offers, win_back, ...) with their last run, and one run now - for operators and tests."""

from __future__ import annotations

import click

from recovery.cli import common
from recovery.services.operations import jobs as daily


@click.group()
def jobs() -> None:
    """The daily jobs the workers run once a day, cluster-wide."""


@jobs.command("list")
def jobs_list() -> None:
    """Each daily job and its last run."""
    rt = common.runtime_from_env()
    for status in daily.listing(rt):
        if status.started_at is None:
            click.echo(f"{status.name:16} never run")
            continue
        finished = status.finished_at.isoformat() if status.finished_at else "(not finished)"
        click.echo(
            f"{status.name:16} last run {status.started_at.isoformat()} -> {finished}"
            f"  [{status.period}, {status.owner}]"
        )


@jobs.command("run")
@click.argument("name")
def jobs_run(name: str) -> None:
    """Run the daily job NAME now (term_offers, win_back, expiry_scan, ...)."""
    rt = common.runtime_from_env()
    try:
        status = daily.run_now(rt, name)
    except daily.UnknownJob as exc:
        known = ", ".join(sorted(rt.handlers.daily_jobs))
        raise click.ClickException(f"no daily job {name!r}; the jobs are: {known}") from exc
    assert status.finished_at is not None
    click.echo(f"{name} ran at {status.started_at} and finished at {status.finished_at}")
