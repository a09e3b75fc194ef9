"""The README's first command: `recovery demo` starts everything and fills the mirror."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from recovery.devtools.localstripe import free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_demo_seeds_through_real_webhooks(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECOVERY_", "STRIPE_"))}
    env["RECOVERY_INSTANCE_PATH"] = str(tmp_path)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "recovery.cli",
            "demo",
            "--port",
            str(free_port()),
            "--customers",
            "4",
            "--exit-after-seed",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "seeded 4 customers, 4 subscriptions, 1 failed renewals" in result.stdout, (
        result.stdout + result.stderr
    )
    assert "recovery is running at http://127.0.0.1:" in result.stdout
    db = sqlite3.connect(tmp_path / "demo.db")
    assert db.execute("SELECT count(*) FROM customers").fetchone() == (4,)
    assert db.execute(
        "SELECT count(*) FROM invoices WHERE status = 'open' AND attempt_count >= 1"
    ).fetchone() == (1,)
    statuses = dict(db.execute("SELECT status, count(*) FROM stripe_events GROUP BY 1").fetchall())
    assert set(statuses) == {"processed"}
