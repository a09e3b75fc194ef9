"""Worker benchmark: due actions (charge retries and reminder emails) against PostgreSQL with
fake providers - first the providers alone (the same Stripe fake calls and SMTP sends in a
plain loop, no database: the ceiling), then the worker with 1 and 2 processes; optionally with a
simulated provider latency; then a worker's memory with 1k and 100k open cases.

    .venv/bin/python bench/worker_throughput.py [--actions 20000] [--workers 1 2]
                                                [--latency-ms 0] [--threads 8] [--loops 2]
                                                [--batch 100]
                                                [--memory-cases 1000 100000] [--memory-actions 1000]

Prints, per worker count, `worker: N actions/s (P% of providers alone M/s)`.

What runs is the real code: `due_actions.ActionRunner` (claim FOR UPDATE SKIP LOCKED and decide
in one transaction, provider calls on `--threads` threads with no transaction open, outcomes
recorded in a second transaction under the lease; `--loops` such loops per process, sharing the
threads) with the handlers of
`recovery.services.registry`:
- `case.retry` (recovery/services/cases/actions.py): re-read the invoice from Stripe, mirror it,
  `Invoice.pay` with the idempotency key `case:<id>:attempt:1`, then on success close the case
  as recovered (cancelling what is pending for it), on a decline record the attempt and ask the
  retry policy for the next retry (scheduled days ahead, so not run here). Stripe is the in-repo
  FakeStripeGateway; 60 % of the charges decline (insufficient_funds), 40 % succeed.
- `outbox.send` (recovery/services/messaging/outbox.py): a reminder email of another open case,
  rendered and handed over SMTP to a local aiosmtpd sink in its own process (one reused SMTP
  connection per worker thread, as SmtpMailer does).
With `--latency-ms L`, every Stripe fake call sleeps L ms and the sink answers each message L ms
late, as a distant provider would.

The database is filled with plain INSERT ... SELECT generate_series (customers, cards, open
invoices with one failed charge each, open cases, outbox rows, due actions, all due now), and
refilled before each run. Each worker process drains everything due,
and reports its actions, CPU time and peak RSS (getrusage ru_maxrss). The CPU PostgreSQL (the
postmaster and its backends) and the SMTP sink used meanwhile is read from /proc, per action:
the three share the machine's cores.

Afterwards, exactly once is checked from the outside: every retry's idempotency key reached the
Stripe fake once (each worker logs the keys of the pay calls it made), every email reached the
SMTP sink once (counted by Message-ID, which is derived from the outbox dedupe key), and every
due action is `done` after one attempt.

Memory: one worker runs the same --memory-actions actions with --memory-cases open cases in
the database (the extra cases have no due action); its peak RSS should not grow with them.

Not run in CI: figures depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from recovery.adapters.stripe.protocol import StripeDict  # noqa: E402
from recovery.adapters.stripe_fake import FakeStripeGateway  # noqa: E402
from recovery.db import Base  # noqa: E402

DECLINE_SHARE = 0.6  # of our retries; the rest succeed (recovered)
EPOCH = 1_790_000_000  # 2026-09-22: Stripe `created` of the seeded objects
LOADAVG = "loadavg {:.2f} {:.2f} {:.2f}"


def loadavg() -> str:
    return LOADAVG.format(*os.getloadavg())


# ---- the Stripe fake, seeded per charge ---------------------------------------------------------


class BenchGateway(FakeStripeGateway):
    """The in-repo fake, seeded lazily with the invoice a retry asks for and emptied after each
    charge: every worker process has its own fake, and the fake's own memory (request log,
    events, idempotency cache) must not pass for the worker's. Every pay call's idempotency key
    is appended to `keylog`, so double charges across processes can be counted afterwards.
    The worker calls it from several threads: each call holds a lock (the fake is not
    thread-safe), after sleeping the simulated latency outside it. `tag` goes into the ids it
    makes (charges, PaymentIntents): each worker process has its own fake, and two counting
    from 1 made the same charge ids for different charges - which Stripe never does - so the
    workers' rounds waited on each other's uncommitted rows of one id (PostgreSQL's lock log:
    up to half a second) and merged two cases' charges into one row."""

    def __init__(self, keylog: Path | None, latency: float = 0.0, tag: str = "") -> None:
        super().__init__()
        self._keylog = keylog.open("a", buffering=1) if keylog else None
        self._latency = latency
        self._tag = tag
        self._lock = threading.Lock()

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{self._tag}{super().new_id(prefix).removeprefix(prefix + '_')}"

    def _seed(self, invoice_id: str) -> None:
        n = invoice_id.removeprefix("in_b")
        customer, pm = f"cus_b{n}", f"pm_b{n}"
        self.add_customer(customer, email=f"c{n}@example.com", default_payment_method=pm)
        self.add_payment_method(customer, id=pm, funding="debit", fingerprint=f"fp{n}")
        self.add_invoice(
            customer,
            id=invoice_id,
            amount_due=2000,
            currency="usd",
            attempt_count=1,
            created=EPOCH,
        )
        if zlib.crc32(invoice_id.encode()) % 1000 < DECLINE_SHARE * 1000:
            self.fail_next_payment(
                invoice_id, "insufficient_funds", network_decline_code="51", brand="visa"
            )

    def retrieve_invoice(self, id: str) -> StripeDict:
        if self._latency:
            time.sleep(self._latency)
        with self._lock:
            if id not in self.store["invoice"]:
                self._seed(id)
            return super().retrieve_invoice(id)

    def pay_invoice(
        self,
        id: str,
        *,
        idempotency_key: str,
        payment_method: str | None = None,
        off_session: bool = True,
    ) -> StripeDict:
        if self._latency:
            time.sleep(self._latency)
        with self._lock:
            if self._keylog is not None:
                self._keylog.write(idempotency_key + "\n")
            if id not in self.store["invoice"]:
                self._seed(id)  # another thread's charge emptied the fake meanwhile
            try:
                return super().pay_invoice(
                    id,
                    idempotency_key=idempotency_key,
                    payment_method=payment_method,
                    off_session=off_session,
                )
            finally:
                self._forget()

    def _forget(self) -> None:
        self.store.clear()
        self.events.clear()
        self.requests.clear()
        self._idempotent.clear()
        self._seq.clear()
        self._scripted.clear()
        self._cards.clear()

    def close(self) -> None:
        if self._keylog is not None:
            self._keylog.close()


# ---- child processes: a worker and the SMTP sink -----------------------------------------------


def worker_main(args: argparse.Namespace) -> int:
    from recovery import heap
    from recovery.adapters.clock import SystemClock
    from recovery.config import Settings
    from recovery.services.registry import build_runtime
    from recovery.services.work.due_actions import ActionRunner

    gateway = BenchGateway(Path(args.keylog), args.latency_ms / 1000, tag=args.worker_id)
    settings = Settings(
        database_url=args.url,
        smtp_url=args.smtp_url,
        worker_threads=args.threads,
        worker_loops=args.loops,
    )
    runtime = build_runtime(settings, clock=SystemClock(), gateway=gateway)
    runner = ActionRunner(runtime, args.worker_id, batch_size=args.batch)
    heap.settle()  # as `recovery worker` does once started
    statements = Counter[str]()

    def count(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        # savepoints by what they are, not by their numbered names
        statements[
            re.sub(r"sa_savepoint_\d+", "sa_savepoint_N", " ".join(statement.split()[:4]))
        ] += 1

    if args.profile:
        from sqlalchemy import event

        event.listen(runtime.db.engine, "before_cursor_execute", count)
    rss_ready = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("ready", flush=True)
    sys.stdin.readline()  # the parent says go once every worker is up
    cpu0 = time.process_time()
    first = time.time()
    profile = None
    if args.profile:
        import cProfile

        profile = cProfile.Profile()
        profile.enable()
    claimed = runner.drain()
    if profile is not None:
        profile.disable()
        profile.dump_stats(args.profile)
    last = time.time()
    cpu = time.process_time() - cpu0
    runner.close()
    gateway.close()
    runtime.db.dispose()
    result = {
        "worker": args.worker_id,
        "actions": claimed,
        "outcomes": runner.statuses,
        "first_claim": first,
        "last_done": last,
        "cpu_seconds": round(cpu, 2),
        "statements": dict(statements.most_common(60)),
        "rss_ready_mib": round(rss_ready / 1024, 1),
        "rss_peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    Path(args.out).write_text(json.dumps(result))
    return 0


def sink_main(args: argparse.Namespace) -> int:
    from aiosmtpd.controller import Controller

    counts: Counter[str] = Counter()
    lock = threading.Lock()

    latency = args.latency_ms / 1000

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            if latency:
                await asyncio.sleep(latency)  # a distant mail server
            head = envelope.content.split(b"\r\n\r\n", 1)[0]
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"message-id:"):
                    with lock:
                        counts[line.split(b":", 1)[1].strip().decode()] += 1
            return "250 OK"

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    controller = Controller(Handler(), hostname="127.0.0.1", port=args.port)
    controller.start()
    print("ready", flush=True)
    done.wait()
    controller.stop()
    with lock:
        Path(args.out).write_text(json.dumps(counts))
    return 0


# ---- filling the database -----------------------------------------------------------------------

FILL = [
    # customers, each with one debit card (the one that failed)
    """INSERT INTO customers (id, email, name, preferred_locales, address_country,
         default_payment_method_id, metadata, deleted, created, version_ts, version_tiebreak)
       SELECT 'cus_b' || g, 'c' || g || '@example.com', 'Customer ' || g, '[]', 'DE',
              'pm_b' || g, '{}', false, :epoch, 0, ''
       FROM generate_series(1, :cases) g""",
    """INSERT INTO payment_methods (id, customer_id, type, brand, last4, exp_month, exp_year,
         funding, fingerprint, country, created, version_ts, version_tiebreak)
       SELECT 'pm_b' || g, 'cus_b' || g, 'card', 'visa', lpad((g % 10000)::text, 4, '0'), 12,
              2030, 'debit', 'fp' || g, 'DE', :epoch, 0, ''
       FROM generate_series(1, :cases) g""",
    # one open invoice per customer, whose first charge failed (insufficient funds)
    """INSERT INTO invoices (id, customer_id, status, currency, amount_due, amount_paid,
         amount_remaining, attempt_count, attempted, billing_reason, collection_method,
         auto_advance, created, version_ts, version_tiebreak)
       SELECT 'in_b' || g, 'cus_b' || g, 'open', 'usd', 2000, 0, 2000, 1, true,
              'subscription_cycle', 'charge_automatically', false, :epoch, 0, ''
       FROM generate_series(1, :cases) g""",
    """INSERT INTO payment_attempts (id, invoice_id, customer_id, payment_method_id, status,
         amount, currency, failure_code, decline_code, network_decline_code, card_brand,
         card_funding, card_fingerprint, created, version_ts, version_tiebreak)
       SELECT 'ch_b' || g, 'in_b' || g, 'cus_b' || g, 'pm_b' || g, 'failed', 2000, 'usd',
              'card_declined', 'insufficient_funds', '51', 'visa', 'debit', 'fp' || g,
              :epoch, 0, ''
       FROM generate_series(1, :cases) g""",
    """INSERT INTO recovery_cases (id, invoice_id, customer_id, status, decline_category,
         decline_code, card_brand, currency, amount_due, amount_recovered, opened_at,
         our_attempts, next_retry_at, dunning_paused)
       SELECT g, 'in_b' || g, 'cus_b' || g, 'retrying', 'insufficient_funds',
              'insufficient_funds', 'visa', 'usd', 2000, 0, :now - interval '2 days', 0,
              :now - interval '1 hour', false
       FROM generate_series(1, :cases) g""",
    "SELECT setval(pg_get_serial_sequence('recovery_cases', 'id'), :cases)",
    # each case's reminders were planned when it opened (the soft sequence), as in production
    """INSERT INTO case_events (case_id, at, kind, summary, data, dedupe_key)
       SELECT g, :now - interval '2 days', 'reminders', 'reminders: the soft sequence',
              json_build_object('sequence', 'soft', 'replaces', null),
              'case:' || g || ':reminders:1'
       FROM generate_series(1, :cases) g""",
    # our first retry of cases 1..retries, due over the last hour
    """INSERT INTO due_actions (kind, subject, dedupe_key, due_at, status, attempts, max_attempts,
         payload, created_at)
       SELECT 'case.retry', 'case:' || g, 'case:' || g || ':attempt:1',
              :now - interval '1 hour' + (g * interval '1 millisecond'), 'pending', 0, 8,
              json_build_object('case_id', g, 'attempt', 1, 'reason', 'bench'),
              :now - interval '2 days'
       FROM generate_series(1, :retries) g""",
    # a reminder email to each of the next `emails` cases, and its send action
    """INSERT INTO outbox_messages (id, about, case_id, customer_id, channel, template, step,
         locale, recipient, subject, body, send_after, dedupe_key, status, attempts, created_at)
       SELECT g, 'case:' || g, g, 'cus_b' || g, 'email', 'reminder', 'reminder_1', 'en',
              'c' || g || '@example.com', 'Your payment did not go through',
              'Hello,' || chr(10) || chr(10) || 'your payment of 20.00 USD did not go through. '
              || 'Please update your card.' || chr(10) || chr(10) || 'Thank you',
              :now - interval '1 hour', 'bench:r1:' || g, 'pending', 0,
              :now - interval '2 days'
       FROM generate_series(:retries + 1, :retries + :emails) g""",
    "SELECT setval(pg_get_serial_sequence('outbox_messages', 'id'), :retries + :emails + 1)",
    """INSERT INTO due_actions (kind, subject, dedupe_key, due_at, status, attempts, max_attempts,
         payload, created_at)
       SELECT 'outbox.send', 'case:' || g, 'outbox:bench:r1:' || g,
              :now - interval '1 hour' + ((g - :retries) * interval '1 millisecond'),
              'pending', 0, 8, json_build_object('message_id', g), :now - interval '2 days'
       FROM generate_series(:retries + 1, :retries + :emails) g""",
]


def fill(url: str, cases: int, retries: int, emails: int) -> float:
    started = time.perf_counter()
    engine = create_engine(url)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    params = {
        "cases": max(cases, retries + emails),
        "retries": retries,
        "emails": emails,
        "epoch": EPOCH,
    }
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        for statement in FILL:
            stmt = text(statement.replace(":now", f"timestamp '{now}'"))
            used = {k: v for k, v in params.items() if f":{k}" in statement}
            conn.execute(stmt, used)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()
    return time.perf_counter() - started


# ---- one run -----------------------------------------------------------------------------------


def cpu_seconds(pid: int, children: bool = False) -> float:
    """CPU seconds (user + system) a process used, with its children that ended (reaped), and
    with `children` its live children too: PostgreSQL's postmaster and its backends, so the
    two cores can be accounted for (/proc/<pid>/stat, proc(5))."""

    def fields(p: int | str) -> list[str]:
        # after the command's closing parenthesis: state, ppid, ... utime is the 14th field
        return Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()

    own = fields(pid)
    ticks = sum(int(x) for x in own[11:15])  # utime, stime, cutime, cstime
    if children:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError):
                    child = fields(entry.name)
                    if int(child[1]) == pid:
                        ticks += int(child[11]) + int(child[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def postmaster_pid(data_dir: Path | None) -> int | None:
    pid_file = data_dir / "postmaster.pid" if data_dir else None
    return int(pid_file.read_text().split()[0]) if pid_file and pid_file.exists() else None


class Sink:
    def __init__(self, work: Path, latency_ms: float = 0.0) -> None:
        from bench.stack import free_port

        self.port = free_port()
        self.out = work / f"sink-{self.port}.json"
        command = [sys.executable, __file__, "_sink", "--port", str(self.port)]
        command += ["--out", str(self.out), "--latency-ms", str(latency_ms)]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the SMTP sink did not start")

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?tls=none"

    def stop(self) -> Counter[str]:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        return Counter(json.loads(self.out.read_text()))


def providers_alone(work: Path, retries: int, emails: int, latency_ms: float) -> dict[str, Any]:
    """The ceiling: the Stripe fake calls of the retries and the SMTP sends of the emails, in a
    plain loop in this process - no database, no worker."""
    from recovery.adapters.email import Email, SmtpMailer, parse_smtp_url
    from recovery.adapters.stripe.errors import CardDeclined

    sink = Sink(work, latency_ms)
    gateway = BenchGateway(None, latency_ms / 1000)
    mailer = SmtpMailer(parse_smtp_url(sink.url))
    sender = ("Dana at Acme", "billing@acme.example")
    now = datetime.now(UTC)
    body = "Hello,\n\nyour payment of 20.00 USD did not go through. Please update your card."
    # what the outbox hands the mailer (the bytes are made in the send, as the worker does)
    messages = [
        Email(
            sender=sender,
            reply_to=sender,
            to=f"c{g}@example.com",
            subject="Your payment did not go through",
            body=body,
            dedupe_key=f"alone:{g}",
            date=now,
        )
        for g in range(retries + 1, retries + emails + 1)
    ]
    cpu, started = time.process_time(), time.perf_counter()
    for g in range(1, retries + 1):
        gateway.retrieve_invoice(f"in_b{g}")
        with contextlib.suppress(CardDeclined):
            gateway.pay_invoice(f"in_b{g}", idempotency_key=f"alone:{g}")
    for message in messages:
        mailer.send(message)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    mailer.close()
    received = sink.stop()
    actions = retries + emails
    assert sum(received.values()) == emails, "the sink lost a message"
    return {
        "actions": actions,
        "seconds": round(wall, 2),
        "actions_per_s": round(actions / wall, 1),
        "cpu_ms_per_action": round(cpu / actions * 1000, 3),
        "loadavg": loadavg(),
    }


def run(
    url: str,
    work: Path,
    workers: int,
    label: str,
    args: argparse.Namespace,
    *,
    threads: int,
    latency_ms: float = 0.0,
    profile: bool = False,
    pg_pid: int | None = None,
) -> dict[str, Any]:
    """Start the sink and `workers` processes, let them drain everything due, check once-ness."""
    sink = Sink(work, latency_ms)
    procs, outs, keylogs = [], [], []
    for i in range(workers):
        out, keylog = work / f"{label}-w{i}.json", work / f"{label}-w{i}.keys"
        keylog.unlink(missing_ok=True)
        command = [sys.executable, __file__, "_worker", "--url", url, "--worker-id"]
        command += [f"{label}-w{i}", "--smtp-url", sink.url, "--keylog", str(keylog)]
        command += ["--batch", str(args.batch), "--out", str(out), "--threads", str(threads)]
        command += ["--loops", str(args.loops)]
        command += ["--latency-ms", str(latency_ms)]
        if profile and i == 0:
            command += ["--profile", str(work / f"{label}-w0.pstats")]
        proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        procs.append(proc)
        outs.append(out)
        keylogs.append(keylog)
    for proc in procs:  # wait until every worker has imported and built its runtime
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("a worker did not start")
    load_before = loadavg()
    pg_cpu = cpu_seconds(pg_pid, children=True) if pg_pid else 0.0
    sink_cpu = cpu_seconds(sink.proc.pid)
    started = time.time()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        if proc.wait(timeout=7200) != 0:
            raise RuntimeError(f"worker exited with {proc.returncode}")
    wall = time.time() - started
    pg_cpu = cpu_seconds(pg_pid, children=True) - pg_cpu if pg_pid else 0.0
    sink_cpu = cpu_seconds(sink.proc.pid) - sink_cpu
    load_after = loadavg()
    emails = sink.stop()
    results = [json.loads(o.read_text()) for o in outs]
    keys: Counter[str] = Counter()
    for keylog in keylogs:
        keys.update(keylog.read_text().split())

    engine = create_engine(url)
    with engine.connect() as conn:
        seeded = conn.execute(
            text(
                "SELECT kind, status, attempts, count(*) FROM due_actions "
                "WHERE dedupe_key LIKE 'case:%:attempt:1' OR dedupe_key LIKE 'outbox:bench:%' "
                "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
            )
        ).all()
        cases: dict[str, int] = {
            r[0]: r[1]
            for r in conn.execute(text("SELECT status, count(*) FROM recovery_cases GROUP BY 1"))
        }
        expected_retries = conn.execute(
            text("SELECT count(*) FROM due_actions WHERE dedupe_key LIKE 'case:%:attempt:1'")
        ).scalar_one()
        expected_emails = conn.execute(
            text("SELECT count(*) FROM due_actions WHERE dedupe_key LIKE 'outbox:bench:%'")
        ).scalar_one()
        sent_rows = conn.execute(
            text("SELECT count(*) FROM outbox_messages WHERE status = 'sent'")
        ).scalar_one()
        later = conn.execute(
            text("SELECT count(*) FROM due_actions WHERE status = 'pending'")
        ).scalar_one()
    engine.dispose()

    first = min(r["first_claim"] for r in results if r["first_claim"])
    last = max(r["last_done"] for r in results)
    actions = sum(r["actions"] for r in results)
    return {
        "workers": workers,
        "threads": threads,
        "loops": args.loops,
        "latency_ms": latency_ms,
        "actions": actions,
        "active_seconds": round(last - first, 2),
        "wall_seconds": round(wall, 2),
        "actions_per_s": round(actions / (last - first), 1),
        "worker_cpu_ms_per_action": round(
            sum(r["cpu_seconds"] for r in results) / max(actions, 1) * 1000, 2
        ),
        "per_worker": results,
        # the other two users of the machine's cores, for the same actions
        "postgres_cpu_ms_per_action": round(pg_cpu / max(actions, 1) * 1000, 2),
        "sink_cpu_ms_per_action": round(sink_cpu / max(actions, 1) * 1000, 2),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "check": {
            "seeded_actions_by_kind_status_attempts": [list(r) for r in seeded],
            "retries_expected": expected_retries,
            "stripe_pay_calls": sum(keys.values()),
            "seeded_retry_keys_missing": sum(
                1 for g in range(1, expected_retries + 1) if keys[f"case:{g}:attempt:1"] == 0
            ),
            "stripe_keys_more_than_once": sum(1 for n in keys.values() if n > 1),
            "emails_expected": expected_emails,
            "emails_received": sum(emails.values()),
            "message_ids_more_than_once": sum(1 for n in emails.values() if n > 1),
            "outbox_rows_sent": sent_rows,
            "cases_by_status": cases,
            "follow_up_actions_pending": later,
        },
    }


def exactly_once(result: dict[str, Any]) -> bool:
    check = result["check"]
    seeded = check["seeded_actions_by_kind_status_attempts"]
    return (
        all(status == "done" and attempts == 1 for _, status, attempts, _ in seeded)
        and check["seeded_retry_keys_missing"] == 0
        and check["stripe_keys_more_than_once"] == 0
        and check["emails_received"] == check["outbox_rows_sent"] >= check["emails_expected"]
        and check["message_ids_more_than_once"] == 0
    )


def split(actions: int, email_share: float) -> tuple[int, int]:
    emails = round(actions * email_share)
    return actions - emails, emails


def worker_line(r: dict[str, Any], alone: dict[str, Any]) -> str:
    """The issue's summary line: `worker: N actions/s (P% of providers alone M/s)`."""
    ceiling = alone["actions_per_s"]
    return (
        f"  worker: {r['actions_per_s']:.0f} actions/s "
        f"({r['actions_per_s'] / ceiling:.0%} of providers alone {ceiling:.0f}/s)"
    )


def detail(r: dict[str, Any]) -> str:
    rss = ", ".join(f"{w['rss_peak_mib']}" for w in r["per_worker"])
    return (
        f"    {r['workers']} process(es) x {r['loops']} loops x {r['threads']} threads, "
        f"latency {r['latency_ms']:g} ms: "
        f"{r['actions']} actions in {r['active_seconds']} s; worker CPU "
        f"{r['worker_cpu_ms_per_action']} ms/action (PostgreSQL "
        f"{r['postgres_cpu_ms_per_action']} ms, SMTP sink {r['sink_cpu_ms_per_action']} ms); "
        f"peak RSS (MiB) {rss}; exactly once: "
        f"{exactly_once(r)}; {r['loadavg_before']} -> {r['loadavg_after']}"
    )


TARGET_RATE = 1000.0
TARGET_SHARE = 0.5
TARGET_LATENCY_RATE = 200.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="role")
    w = sub.add_parser("_worker")
    for name in ("--url", "--worker-id", "--smtp-url", "--keylog", "--out"):
        w.add_argument(name, required=True)
    w.add_argument("--batch", type=int, default=100)
    w.add_argument("--threads", type=int, default=8)
    w.add_argument("--loops", type=int, default=2)
    w.add_argument("--latency-ms", type=float, default=0.0)
    w.add_argument("--profile", default="")
    s = sub.add_parser("_sink")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--actions", type=int, default=20_000)
    parser.add_argument("--email-share", type=float, default=0.5)
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2], help="none: skip")
    parser.add_argument("--threads", type=int, default=8, help="RECOVERY_WORKER_THREADS")
    parser.add_argument("--loops", type=int, default=2, help="RECOVERY_WORKER_LOOPS")
    parser.add_argument("--batch", type=int, default=100, help="actions claimed at a time")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="then a run with this")
    parser.add_argument("--latency-actions", type=int, default=4_000)
    parser.add_argument("--latency-threads", type=int, default=64)
    parser.add_argument("--memory-cases", type=int, nargs="*", default=[1_000, 100_000])
    parser.add_argument("--memory-actions", type=int, default=1_000)
    parser.add_argument("--profile", action="store_true", help="cProfile the first worker")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    if args.role == "_worker":
        return worker_main(args)
    if args.role == "_sink":
        return sink_main(args)

    from bench.stack import machine_description, package_versions, postgres_version
    from recovery.migrate import upgrade
    from tests.support.postgres import start_postgres

    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    machine = machine_description()
    work = Path(tempfile.mkdtemp(prefix="bench-worker-"))
    server = start_postgres(work / "pg", "bench")
    results: dict[str, Any] = {"throughput": [], "latency": [], "memory": []}
    lines: list[str] = []
    try:
        upgrade(server.url)
        retries, emails = split(args.actions, args.email_share)
        fill(server.url, retries + emails, retries, emails)
        alone = providers_alone(work, retries, emails, 0.0)
        results["alone"] = alone
        print(
            f"\n== providers alone: {alone['actions']} actions in {alone['seconds']} s, "
            f"{alone['actions_per_s']}/s, {alone['cpu_ms_per_action']} ms CPU/action "
            f"(this process); {alone['loadavg']}",
            flush=True,
        )
        for n in args.workers:
            took = fill(server.url, retries + emails, retries, emails)
            print(
                f"\n== {n} worker process(es), {args.threads} threads: {retries} retries + "
                f"{emails} emails (filled in {took:.1f} s)",
                flush=True,
            )
            r = run(
                server.url,
                work,
                n,
                f"t{n}",
                args,
                threads=args.threads,
                profile=args.profile,
                pg_pid=postmaster_pid(server.data_dir),
            )
            results["throughput"].append(r)
            lines += [worker_line(r, alone), detail(r)]
            print(lines[-2] + "\n" + lines[-1], flush=True)
            print(f"    {json.dumps(r['check'])}", flush=True)
            if args.profile:
                print_profile(work / f"t{n}-w0.pstats")
                counted = r["per_worker"][0]["statements"]
                print(f"    {sum(counted.values()) / r['actions']:6.2f}/action  in all")
                for statement, times in counted.items():
                    print(f"    {times / r['actions']:6.2f}/action  {statement}")
        if args.latency_ms:
            lr, le = split(args.latency_actions, args.email_share)
            sample_r, sample_e = split(min(200, args.latency_actions), args.email_share)
            fill(server.url, lr + le, lr, le)
            slow_alone = providers_alone(work, sample_r, sample_e, args.latency_ms)
            took = fill(server.url, lr + le, lr, le)
            print(
                f"\n== latency {args.latency_ms:g} ms per call: 1 worker process, "
                f"{args.latency_threads} threads: {lr} retries + {le} emails "
                f"(providers alone, plain loop: {slow_alone['actions_per_s']}/s)",
                flush=True,
            )
            r = run(
                server.url,
                work,
                1,
                "latency",
                args,
                threads=args.latency_threads,
                latency_ms=args.latency_ms,
                pg_pid=postmaster_pid(server.data_dir),
            )
            results["latency"].append({**r, "alone": slow_alone})
            lines += [worker_line(r, slow_alone), detail(r)]
            print(lines[-2] + "\n" + lines[-1], flush=True)
        mr, me = split(args.memory_actions, args.email_share)
        for cases in args.memory_cases:
            took = fill(server.url, cases, mr, me)
            print(
                f"\n== memory: 1 worker, {mr} retries + {me} emails, {cases} open cases "
                f"(filled in {took:.1f} s)",
                flush=True,
            )
            r = run(server.url, work, 1, f"m{cases}", args, threads=args.threads)
            r["open_cases"] = cases
            results["memory"].append(r)
            w0 = r["per_worker"][0]
            print(
                f"  peak RSS {w0['rss_peak_mib']} MiB (after start-up {w0['rss_ready_mib']} MiB);"
                f" {r['actions_per_s']} actions/s; exactly once: {exactly_once(r)}; "
                f"{r['loadavg_after']}",
                flush=True,
            )
        pg = postgres_version(server.bin_dir)
    finally:
        server.stop()

    print("\n== summary")
    print(
        f"  providers alone: {alone['actions_per_s']:.0f} actions/s "
        f"({alone['cpu_ms_per_action']} ms CPU per action in the loop)"
    )
    for line in lines:
        print(line)
    if len(results["memory"]) >= 2:
        low, high = results["memory"][0], results["memory"][-1]
        a, b = low["per_worker"][0]["rss_peak_mib"], high["per_worker"][0]["rss_peak_mib"]
        print(
            f"  memory: peak RSS {a} MiB at {low['open_cases']} open cases, {b} MiB at "
            f"{high['open_cases']} ({(b - a) / a:+.1%})"
        )
    print("\n== targets")
    best = max((r["actions_per_s"] for r in results["throughput"]), default=0.0)
    share = best / alone["actions_per_s"] if alone["actions_per_s"] else 0.0
    print(f"  [{'met' if best >= TARGET_RATE else 'MISSED'}] >= 1,000 actions/s: {best:.0f}/s")
    verdict = "met" if share >= TARGET_SHARE else "MISSED"
    print(f"  [{verdict}] >= 50 % of providers alone: {share:.0%}")
    for r in results["latency"]:
        ok = r["actions_per_s"] >= TARGET_LATENCY_RATE
        print(
            f"  [{'met' if ok else 'MISSED'}] >= 200 actions/s from one process at "
            f"{r['latency_ms']:g} ms per call: {r['actions_per_s']:.0f}/s"
        )
    versions = package_versions(["sqlalchemy", "psycopg", "aiosmtpd", "apscheduler"])
    print("\n== how these figures were made")
    print(f"  started {started}; command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"  machine: {json.dumps(machine)}; {loadavg()} at end")
    print(f"  versions: {json.dumps(versions)}; {pg}")
    print(
        "  PostgreSQL: throwaway (tests/support/postgres.py: fsync=off, synchronous_commit=off,"
        " autovacuum_naptime=1s);"
        f" claim batch {args.batch}, lease 5 min; SMTP sink: aiosmtpd in its own process; "
        "the providers-alone loop runs in this process"
    )
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1))
    ok = all(
        exactly_once(r) for r in results["throughput"] + results["latency"] + results["memory"]
    )
    return 0 if ok else 1


def print_profile(path: Path, top: int = 30) -> None:
    import pstats

    if path.exists():
        pstats.Stats(str(path)).sort_stats("cumulative").print_stats(top)


if __name__ == "__main__":
    sys.exit(main())
