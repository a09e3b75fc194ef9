"""Four worker processes against one PostgreSQL run 10,000 due actions, each exactly once,
even when one of them is killed with SIGKILL in the middle of a batch."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from recovery.db import Database
from recovery.migrate import upgrade

ROOT = Path(__file__).resolve().parent.parent
N_ACTIONS = 10_000
N_WORKERS = 4


def spawn(url: str, worker_id: str, lease: float, batch: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.worker_proc", url, worker_id, str(lease), str(batch)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.slow
def test_four_workers_run_each_action_once_and_survive_a_kill(postgres_server: Any) -> None:
    url = postgres_server.create_database("worker_drill")
    upgrade(url)
    db = Database(url)
    now = datetime.now(UTC)
    with db.engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS drill_runs"))
        conn.execute(text("CREATE TABLE drill_runs (action_id integer, worker text)"))
        conn.execute(
            text(
                "INSERT INTO due_actions (kind, subject, dedupe_key, due_at, status, attempts, "
                "max_attempts, payload, created_at) VALUES "
                "('drill.record', 'drill', :k, :d, 'pending', 0, 5, '{}', :d)"
            ),
            [{"k": f"drill:{i}", "d": now.replace(tzinfo=None)} for i in range(N_ACTIONS)],
        )

    started = time.perf_counter()
    lease = 3.0
    workers = [spawn(url, f"w{i}", lease, 25) for i in range(N_WORKERS)]
    victim = workers[0]
    assert victim.stdout is not None
    batches_seen = 0
    for line in victim.stdout:  # kill it after some work, right after it claimed a batch
        if line.startswith("claimed 25"):
            batches_seen += 1
            if batches_seen == 20:
                victim.kill()
                break
    victim.wait(timeout=30)
    for proc in workers[1:]:
        proc.wait(timeout=240)
        assert proc.returncode == 0
    elapsed = time.perf_counter() - started

    with db.engine.connect() as conn:
        statuses = {
            r[0]: r[1]
            for r in conn.execute(text("SELECT status, count(*) FROM due_actions GROUP BY 1"))
        }
        runs = conn.execute(text("SELECT count(*) FROM drill_runs")).scalar_one()
        doubles = conn.execute(
            text(
                "SELECT count(*) FROM (SELECT action_id FROM drill_runs GROUP BY action_id "
                "HAVING count(*) > 1) d"
            )
        ).scalar_one()
        reclaimed = conn.execute(
            text("SELECT count(*) FROM due_actions WHERE attempts > 1")
        ).scalar_one()
        per_worker = {
            r[0]: r[1]
            for r in conn.execute(text("SELECT worker, count(*) FROM drill_runs GROUP BY 1"))
        }
    db.dispose()

    report = (
        f"worker drill: {N_ACTIONS} actions, {N_WORKERS} processes on PostgreSQL, one SIGKILLed "
        f"after {batches_seen} batches\n"
        f"  wall time {elapsed:.2f} s = {N_ACTIONS / elapsed:,.0f} actions/s (incl. {lease:.0f} s "
        f"lease expiry)\n"
        f"  statuses {statuses}; committed runs {runs}; double runs {doubles}; "
        f"reclaimed after the kill {reclaimed}\n  per worker {per_worker}\n"
    )
    print(report)
    (ROOT / "artifacts").mkdir(exist_ok=True)
    (ROOT / "artifacts" / "worker_concurrency.txt").write_text(report)

    assert victim.returncode == -9
    assert statuses == {"done": N_ACTIONS}
    assert runs == N_ACTIONS and doubles == 0
    assert reclaimed >= 1  # the victim's claimed batch was taken over after its lease expired
