"""The daily jobs (registry.DAILY_JOBS) for operators: each with its last run, and one run now.

A run now is recorded like the worker's daily runs (`job_runs`), under the period
`manual:<time>`, so it does not take the day's slot: the worker still runs the job today.
Every daily job is idempotent (one offer per subscription, one message per dedupe key), so a
run now next to the worker's changes nothing twice.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from recovery.models import JobRun
from recovery.runtime import Runtime


class UnknownJob(LookupError):
    pass


@dataclass(frozen=True)
class JobStatus:
    name: str
    period: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    owner: str | None = None


def listing(rt: Runtime) -> list[JobStatus]:
    """Every daily job, with its newest run (if any)."""
    statuses = []
    with rt.db.reading() as session:
        for name in sorted(rt.handlers.daily_jobs):
            run = session.scalars(
                select(JobRun)
                .where(JobRun.job == name)
                .order_by(JobRun.started_at.desc(), JobRun.id.desc())
                .limit(1)
            ).first()
            if run is None:
                statuses.append(JobStatus(name))
            else:
                statuses.append(
                    JobStatus(name, run.period, run.started_at, run.finished_at, run.owner)
                )
    return statuses


def run_now(rt: Runtime, name: str) -> JobStatus:
    """Run the named daily job now, in one transaction, and record the run."""
    job = rt.handlers.daily_jobs.get(name)
    if job is None:
        raise UnknownJob(name)
    now = rt.clock.now()
    owner = f"cli:{socket.gethostname()}:{os.getpid()}"[:100]
    with rt.db.transaction() as session:
        run = JobRun(
            job=name,
            # unique per run (two runs in one second are two rows): `manual:<time>:<random>`
            period=f"manual:{now:%Y-%m-%dT%H:%M:%S}:{secrets.token_hex(3)}",
            started_at=now,
            owner=owner,
        )
        session.add(run)
        session.flush()
        job(rt, session)
        run.finished_at = rt.clock.now()
        return JobStatus(name, run.period, run.started_at, run.finished_at, owner)
