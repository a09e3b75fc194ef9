"""Logs an operator can use: JSON lines on request, and no scheduler chatter every tick."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from apscheduler.events import EVENT_JOB_REMOVED
from apscheduler.schedulers.background import BackgroundScheduler

from recovery.logs import configure_logging
from recovery.runtime import Runtime
from recovery.worker import Worker

RECOVERY = Path(sys.executable).with_name("recovery")


def _run(tmp_path: Path, log_format: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RECOVERY_", "STRIPE_", "TWILIO_"))
    }
    env.update(RECOVERY_INSTANCE_PATH=str(tmp_path), RECOVERY_LOG_FORMAT=log_format)
    return subprocess.run(
        [str(RECOVERY), "db", "upgrade"], env=env, capture_output=True, text=True, timeout=120
    )


def test_json_format_writes_one_object_per_line(tmp_path: Path) -> None:
    result = _run(tmp_path, "json")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, "the migration logs something"
    records = [json.loads(line) for line in lines]  # every line parses
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert any(r["logger"].startswith("alembic") and r["level"] == "INFO" for r in records)


def test_text_format_is_the_default(tmp_path: Path) -> None:
    result = _run(tmp_path, "text")
    assert result.returncode == 0, result.stderr
    first = result.stderr.splitlines()[0]
    assert " INFO alembic" in first and not first.startswith("{")


def _tick_lines(runtime: Runtime, caplog: pytest.LogCaptureFixture) -> list[str]:
    """Run the worker's tick once under APScheduler, as `recovery worker` does every second."""
    caplog.clear()
    ran = threading.Event()
    worker = Worker(runtime)

    def tick() -> None:
        worker.tick()
        ran.set()

    scheduler = BackgroundScheduler(timezone="UTC")
    # A one-off job is removed by the scheduler's thread after it is handed to the executor;
    # shutting down before that made the thread fail with JobLookupError (a warning in CI).
    removed = threading.Event()
    scheduler.add_listener(lambda _event: removed.set(), EVENT_JOB_REMOVED)
    scheduler.add_job(tick, id="tick")  # no trigger: once, now
    scheduler.start()
    assert ran.wait(30) and removed.wait(30)
    scheduler.shutdown(wait=True)  # the executor logs before its future completes
    return [r.getMessage() for r in caplog.records if r.name.startswith("apscheduler.executors")]


def test_the_scheduler_says_nothing_per_tick(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    executor = logging.getLogger("apscheduler.executors.default")
    try:
        executor.setLevel(logging.NOTSET)  # what APScheduler does left alone...
        chatter = _tick_lines(runtime, caplog)
        assert any("Running job" in m for m in chatter)
        assert any("executed successfully" in m for m in chatter)
        configure_logging("INFO", "text")  # ...and what every entry point sets up
        assert _tick_lines(runtime, caplog) == []
    finally:
        executor.setLevel(logging.WARNING)
