"""Worker processes that can be SIGKILLed at any moment, against providers that outlive them.

The providers live in the test process, as real services live outside a worker:
- Stripe: the in-memory `FakeStripeGateway` behind a loopback HTTP endpoint (`GatewayServer`);
  the worker process calls it through `RemoteGateway`, so the fake's idempotency cache and its
  request log survive every kill, as Stripe's would.
- SMTP: an aiosmtpd sink; SMS: the Twilio fake. Both on loopback, both outside the worker.

A `Killer` decides where a worker dies: at its n-th SQL statement of a step (the worker kills
itself with SIGKILL just before executing it: mid-transaction, nothing committed), or right
after a provider accepted a write and before the worker reads the answer (the window in which
a retry could charge or send twice). Worker processes are forked from a forkserver that has
imported the service once, so a restart costs milliseconds, not an interpreter start.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import multiprocessing
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from recovery.adapters.clock import Clock
from recovery.adapters.stripe import errors as stripe_errors
from recovery.adapters.stripe_fake import FakeStripeGateway
from tests.support import twilio_fake as tf
from tests.support.smtp_sink import SmtpSink

PRELOAD = [
    "recovery.runtime",
    "recovery.worker",
    "recovery.services.registry",
    "twilio.rest",
    "psycopg",
]
LEASE = timedelta(seconds=1)  # simulated time stands still while a step runs; see the drill


# ---- where a worker dies ----------------------------------------------------------------------


@dataclass
class Killer:
    """Arms at most one kill at a time: at a statement (the worker does it) or after the n-th
    effect of a provider (`stripe`, `smtp`, `twilio`) in this step (the provider does it)."""

    pid: int = 0
    kind: str | None = None
    at: int = 0
    seen: dict[str, int] = field(default_factory=dict)  # effects of each kind this step
    total: dict[str, int] = field(default_factory=dict)  # effects of each kind, whole run
    kills: list[tuple[str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def new_step(self) -> None:
        self.seen = {}

    def effect(self, kind: str) -> None:
        """A provider accepted a write: maybe kill the worker before it hears the answer."""
        with self.lock:
            self.seen[kind] = self.seen.get(kind, 0) + 1
            self.total[kind] = self.total.get(kind, 0) + 1
            if self.kind == kind and self.seen[kind] == self.at and self.pid:
                os.kill(self.pid, signal.SIGKILL)
                self.kills.append((kind, self.at))
                self.kind = None


# ---- Stripe over loopback ---------------------------------------------------------------------


def _error_json(exc: stripe_errors.GatewayError) -> dict[str, Any]:
    return {"type": type(exc).__name__, "args": list(exc.args), "attrs": dict(vars(exc))}


def _error_from(data: dict[str, Any]) -> stripe_errors.GatewayError:
    cls = getattr(stripe_errors, data["type"])
    exc: stripe_errors.GatewayError = cls.__new__(cls)
    exc.args = tuple(data["args"])
    vars(exc).update(data["attrs"])
    return exc


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a killed worker resets its connection mid-request: expected here


class GatewayServer:
    """Serves `FakeStripeGateway` methods as POST /<method> with JSON {args, kwargs}."""

    def __init__(self, fake: FakeStripeGateway, killer: Killer) -> None:
        self.fake, self.killer = fake, killer
        self._lock = threading.Lock()
        self._server = QuietServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _call(self, method: str, args: list[Any], kwargs: dict[str, Any]) -> tuple[int, Any]:
        with self._lock:
            try:
                result = getattr(self.fake, method)(*args, **kwargs)
            except stripe_errors.GatewayError as exc:
                outcome: tuple[int, Any] = (200, {"error": _error_json(exc)})
            else:
                if isinstance(result, Iterator):
                    result = list(result)
                outcome = (200, {"result": result})
        if "idempotency_key" in kwargs:  # a write reached Stripe (and was applied or replayed)
            self.killer.effect("stripe")
            self.killer.effect(f"stripe.{method}")  # for a kill after one kind of write
        return outcome

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: one connection per worker process
            disable_nagle_algorithm = True  # headers and body go out at once: no 40 ms stalls

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                request = json.loads(self.rfile.read(length))
                status, body = server._call(
                    self.path.lstrip("/"), request["args"], request["kwargs"]
                )
                data = json.dumps(body).encode()
                with contextlib.suppress(OSError):  # the worker may be dead by now
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

        return Handler

    def __enter__(self) -> GatewayServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class RemoteGateway:
    """The worker side: every gateway method becomes one HTTP call to `GatewayServer`, on a
    keep-alive connection per thread (the worker calls providers from a pool of threads)."""

    livemode = False

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self._address = (host, int(port))
        self._local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(*self._address, timeout=30)
            self._local.conn = conn
        return conn

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_"):
            raise AttributeError(method)

        def call(*args: Any, **kwargs: Any) -> Any:
            body = json.dumps({"args": args, "kwargs": kwargs})
            conn = self._conn()
            conn.request("POST", f"/{method}", body, {"Content-Type": "application/json"})
            reply = json.loads(conn.getresponse().read())
            if "error" in reply:
                raise _error_from(reply["error"])
            return reply["result"]

        return call


# ---- SMTP and Twilio that report their effects ------------------------------------------------


@dataclass
class KillingSmtpSink(SmtpSink):
    killer: Killer | None = None
    down: bool = False

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        status = await super().handle_DATA(server, session, envelope)
        if status.startswith("250") and self.killer is not None:
            self.killer.effect("smtp")
        return status

    def message_ids(self) -> list[str]:
        return [str(m["Message-ID"]) for m in self.messages]


@contextlib.contextmanager
def killing_smtp_sink(killer: Killer) -> Iterator[KillingSmtpSink]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    sink = KillingSmtpSink(port=port, killer=killer)
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


@contextlib.contextmanager
def killing_twilio_fake(killer: Killer, clock: Clock) -> Iterator[tf.TwilioFake]:
    """The Twilio fake; a created message counts as an effect before the answer is written.
    Messages are dated by the simulated clock, as Twilio dates them by the real one: the
    worker's "did Twilio already take this text?" look-up compares those dates."""
    fake = tf.TwilioFake()
    base = tf._handler(fake)

    class Handler(base):  # type: ignore[valid-type,misc]
        def _reply(self, status: int, body: dict[str, Any]) -> None:
            if status == 201:
                body["date_created"] = format_datetime(clock.now())  # the stored message too
                killer.effect("twilio")
            with contextlib.suppress(OSError):
                super()._reply(status, body)

    server = QuietServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


# ---- the worker process -----------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerConfig:
    database_url: str
    instance_path: str
    gateway_url: str
    smtp_url: str
    twilio_url: str
    start: datetime
    threads: int = 8  # the worker's default pool: kills land among concurrent provider calls


def worker_main(conn: Connection, config: WorkerConfig, worker_id: str) -> None:
    """Run in the worker process: for each ("run", iso time, kill statement or 0) run the
    worker until idle at that simulated time and answer ("done", actions run, statements)."""
    from sqlalchemy import event

    from recovery.adapters.clock import FrozenClock
    from recovery.runtime import Runtime
    from recovery.worker import Worker
    from tests.support.messaging import messaging_runtime

    clock = FrozenClock(config.start)
    rt: Runtime = messaging_runtime(
        config.database_url,
        Path(config.instance_path),
        clock,
        RemoteGateway(config.gateway_url),
        smtp_url=config.smtp_url,
        twilio_url=config.twilio_url,
        worker_threads=config.threads,
    )
    worker = Worker(rt, worker_id=worker_id, batch_size=10, lease=LEASE)
    state = {"statements": 0, "kill_at": 0}

    def count(*_: Any) -> None:
        state["statements"] += 1
        if state["statements"] == state["kill_at"]:
            os.kill(os.getpid(), signal.SIGKILL)

    event.listen(rt.db.engine, "before_cursor_execute", count)
    while True:
        try:
            command = conn.recv()
        except EOFError:
            return
        if command[0] == "stop":
            rt.db.dispose()
            return
        _, iso, kill_at = command
        clock.set(datetime.fromisoformat(iso))
        state["statements"], state["kill_at"] = 0, kill_at
        ran = worker.run_until_idle()
        conn.send(("done", ran, state["statements"]))


class WorkerProcess:
    """The test's handle on the current worker process; a killed one is replaced on demand."""

    def __init__(self, config: WorkerConfig, killer: Killer) -> None:
        self.config, self.killer = config, killer
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(PRELOAD)
        self._proc: Any = None
        self._conn: Connection | None = None
        self.started = 0

    def _ensure(self) -> Connection:
        if self._proc is None or self._conn is None:
            parent, child = self._ctx.Pipe()
            self.started += 1
            self._proc = self._ctx.Process(
                target=worker_main, args=(child, self.config, f"crash-worker-{self.started}")
            )
            self._proc.start()
            child.close()
            self._conn = parent
            self.killer.pid = self._proc.pid
        return self._conn

    def step(self, now: datetime, kill_at_statement: int = 0) -> tuple[int, int] | None:
        """Run the worker until idle at `now`. None when the process died during the step."""
        conn = self._ensure()
        self.killer.new_step()
        conn.send(("run", now.isoformat(), kill_at_statement))
        try:
            _, ran, statements = conn.recv()
        except (EOFError, ConnectionResetError):
            self._proc.join(timeout=30)
            if kill_at_statement:
                self.killer.kills.append(("statement", kill_at_statement))
            assert self._proc.exitcode == -signal.SIGKILL, self._proc.exitcode
            self._proc, self._conn = None, None
            return None
        return int(ran), int(statements)

    def close(self) -> None:
        if self._proc is not None and self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.send(("stop",))
            self._proc.join(timeout=30)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join()


def email_ids(messages: list[EmailMessage]) -> list[str]:
    return [str(m["Message-ID"]) for m in messages]
