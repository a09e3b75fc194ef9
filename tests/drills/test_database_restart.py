"""Drill: PostgreSQL goes away under webhook load and comes back.

A throwaway PostgreSQL of this test's own (the session's shared server is never stopped) backs
the real app served by werkzeug in a thread. An asyncio client in a background thread sends
signed, unique events at a modest fixed rate while the test:

1. waits for the app to acknowledge events (2xx),
2. stops PostgreSQL (`pg_ctl stop -m fast`, as the harness runs pg_ctl), keeps sending,
3. starts it again on the same port and data directory,

and then checks: while the database was down every answer was 503 (never 2xx - Stripe must
retry), every event answered 2xx is in the inbox, and the same app process answers 2xx again
without a restart (no ping per checkout: the first statement on a dead connection fails, and
the pool then discards every connection older than that failure).

Every wait is bounded; no assertion depends on a sleep.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select
from werkzeug.serving import make_server

from recovery.adapters.stripe_fake import FakeStripeGateway
from recovery.app import create_app
from recovery.migrate import upgrade
from recovery.models import StripeEvent
from recovery.runtime import Runtime
from recovery.services.registry import build_runtime
from tests.conftest import WEBHOOK_SECRET, make_settings
from tests.support import stripe_payloads as sp
from tests.support.postgres import (
    URL_ENV,
    PostgresServer,
    _run_pg,
    postgres_or_skip,
    skip_or_fail,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

RATE = 25.0  # events per second: modest (well under what one werkzeug process sustains)
MAX_REQUESTS = 6000  # hard cap on what the client sends, whatever happens
MAX_SECONDS = 50.0  # hard cap on how long it sends
DOWN_RESPONSES = 40  # answers to collect while the database is down
UP_RESPONSES = 40  # 2xx answers to collect before the outage and after the restart


@dataclass
class Outcome:
    event_id: str
    started: float
    finished: float
    status: int  # 0: no HTTP answer (connection error, timeout)
    error: str = ""


@dataclass
class LoadClient:
    """Fixed-rate asyncio sender in its own thread; outcomes are appended as they finish."""

    url: str
    outcomes: list[Outcome] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    thread: threading.Thread | None = None

    def body(self, n: int) -> tuple[str, bytes]:
        now = int(time.time())
        cid = f"cus_drill{n % 50:03d}"
        if n % 3 == 0:
            obj = sp.customer(cid, email=f"c{n % 50}@example.com", phone="+14155550123")
            evt = sp.event("customer.updated", obj, now)
        elif n % 3 == 1:
            inv, sub = f"in_drill{n % 50:03d}", f"sub_drill{n % 50:03d}"
            obj = sp.invoice(inv, cid, sub, attempt_count=1)
            evt = sp.event("invoice.payment_failed", obj, now)
        else:
            obj = sp.failed_charge(f"ch_drill{n:05d}", cid, f"pi_drill{n % 50:03d}", created=now)
            evt = sp.event("charge.failed", obj, now)
        return str(evt["id"]), sp.body_of(evt)

    async def _one(self, session: aiohttp.ClientSession, n: int) -> None:
        event_id, body = self.body(n)
        header = sp.signature_header(body, WEBHOOK_SECRET, int(time.time()))
        started = time.monotonic()
        error = ""
        try:
            async with session.post(
                self.url,
                data=body,
                headers={"Content-Type": "application/json", "Stripe-Signature": header},
            ) as resp:
                await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            status, error = 0, f"{exc.__class__.__name__}: {exc}"
        with self.lock:
            self.outcomes.append(Outcome(event_id, started, time.monotonic(), status, error))

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=30)
        connector = aiohttp.TCPConnector(limit=8)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            tasks: set[asyncio.Task[None]] = set()
            start = time.monotonic()
            for n in range(MAX_REQUESTS):
                if self.stop.is_set() or time.monotonic() - start > MAX_SECONDS:
                    break
                delay = start + n / RATE - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(self._one(session, n))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)

    def start(self) -> None:
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=30)
            assert not self.thread.is_alive(), "the load client did not stop"

    def snapshot(self) -> list[Outcome]:
        with self.lock:
            return list(self.outcomes)

    def wait_for(self, what: str, predicate: Any, timeout: float) -> None:
        """Until predicate(outcomes) holds; fails after `timeout` seconds (a bounded wait)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.snapshot()):
                return
            assert self.thread is not None and self.thread.is_alive(), f"client ended: {what}"
            time.sleep(0.05)
        pytest.fail(f"timed out after {timeout} s waiting for {what}")


# ---- a PostgreSQL this test may stop ----------------------------------------------------------


def _pg_options(server: PostgresServer) -> str:
    """The options tests/support/postgres.py starts its servers with (same port, same socket)."""
    assert server.data_dir is not None
    return " ".join(
        [
            "-c listen_addresses=127.0.0.1",
            f"-p {server.port}",
            f"-k {shlex.quote(str(server.data_dir))}",
            "-c fsync=off",
            "-c synchronous_commit=off",
            "-c full_page_writes=off",
            "-c max_connections=200",
        ]
    )


def pg_stop_fast(server: PostgresServer) -> None:
    assert server.bin_dir is not None and server.data_dir is not None
    done = _run_pg(server.bin_dir / "pg_ctl", "-D", server.data_dir, "-m", "fast", "-w", "stop")
    assert done.returncode == 0, done.stdout + done.stderr


def pg_start(server: PostgresServer) -> None:
    assert server.bin_dir is not None and server.data_dir is not None
    log = server.data_dir / "server.log"
    done = _run_pg(
        server.bin_dir / "pg_ctl",
        "-D",
        server.data_dir,
        "-l",
        log,
        "-o",
        _pg_options(server),
        "-w",
        "-t",
        "60",
        "start",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # .ci/run stops leftover servers by the PID recorded at start: record the new one.
    record = server._registry_file
    if record is not None and record.exists():
        pid = (server.data_dir / "postmaster.pid").read_text().splitlines()[0].strip()
        record.write_text(f"{server.data_dir}\n{pid}\n")


@pytest.fixture
def own_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    if os.environ.get(URL_ENV):
        skip_or_fail(f"{URL_ENV} names an external server: this drill must stop its own")
    server = postgres_or_skip(tmp_path_factory, "drill_restart")
    try:
        yield server
    finally:
        server.stop()  # immediate stop + delete; fine whether it is running or not


@pytest.fixture
def served_app(own_postgres: PostgresServer, tmp_path: Path) -> Iterator[tuple[str, Runtime]]:
    upgrade(own_postgres.url)
    runtime = build_runtime(make_settings(own_postgres.url, tmp_path), gateway=FakeStripeGateway())
    app = create_app(runtime=runtime)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/webhooks/stripe", runtime
    finally:
        server.shutdown()
        thread.join(timeout=10)
        runtime.db.dispose()


def test_database_restart_under_load(
    own_postgres: PostgresServer, served_app: tuple[str, Runtime]
) -> None:
    url, runtime = served_app
    client = LoadClient(url)
    client.start()
    try:
        client.wait_for(
            f"{UP_RESPONSES} acknowledged events before the outage",
            lambda out: sum(o.status == 200 for o in out) >= UP_RESPONSES,
            timeout=20,
        )
        stop_began = time.monotonic()
        pg_stop_fast(own_postgres)
        stopped = time.monotonic()
        client.wait_for(
            f"{DOWN_RESPONSES} answers to requests sent while the database is down",
            lambda out: sum(o.started >= stopped for o in out) >= DOWN_RESPONSES,
            timeout=15,
        )
        start_began = time.monotonic()
        pg_start(own_postgres)
        restarted = time.monotonic()
        client.wait_for(
            f"{UP_RESPONSES} acknowledged events after the restart",
            lambda out: (
                sum(o.started >= restarted and o.status == 200 for o in out) >= UP_RESPONSES
            ),
            timeout=20,
        )
    finally:
        client.finish()

    outcomes = client.snapshot()
    statuses = {o.status for o in outcomes}
    unanswered = [
        (round(o.started - stop_began, 2), round(o.finished - o.started, 2), o.error)
        for o in outcomes
        if o.status == 0
    ]
    assert statuses <= {200, 503}, f"only 200 and 503 expected, got {sorted(statuses)}: " + (
        f"no answer (seconds after the stop began, duration, error): {unanswered[:5]}"
    )

    # Sent and answered entirely while PostgreSQL was down: 503, never 2xx.
    down = [o for o in outcomes if o.started >= stopped and o.finished <= start_began]
    assert len(down) >= DOWN_RESPONSES
    assert [o.status for o in down if o.status != 503] == [], "2xx while the database was down"

    # Around the transitions answers may be either; afterwards the same process recovers.
    before = [o for o in outcomes if o.finished <= stop_began]
    after = [o for o in outcomes if o.started >= restarted]
    assert sum(o.status == 200 for o in before) >= UP_RESPONSES
    assert sum(o.status == 200 for o in after) >= UP_RESPONSES
    # Once one post-restart request has succeeded, the pool is healthy: no 503 after it.
    first_ok = min(o.finished for o in after if o.status == 200)
    late_failures = [o for o in after if o.started > first_ok and o.status != 200]
    assert late_failures == [], f"{len(late_failures)} failures after recovery"

    # Every acknowledged event is in the inbox.
    acked = {o.event_id for o in outcomes if o.status == 200}
    with runtime.db.transaction() as session:
        stored = set(session.scalars(select(StripeEvent.id)))
    missing = acked - stored
    assert not missing, f"{len(missing)} acknowledged events are not in the inbox"
    print(  # visible with -s: what the drill saw
        f"\n{len(outcomes)} requests: {sum(o.status == 200 for o in outcomes)} acknowledged, "
        f"{sum(o.status == 503 for o in outcomes)} answered 503; down for "
        f"{restarted - stop_began:.1f} s ({len(down)} answers, all 503); "
        f"recovered {first_ok - restarted:.2f} s after the restart"
    )
