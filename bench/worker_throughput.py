"""Worker benchmark: due actions (charge retries and reminder emails) run by 1, 2 and 4 worker
processes against PostgreSQL, with fake providers; then a worker's memory with 1k and 100k
open cases in the database.

    .venv/bin/python bench/worker_throughput.py [--actions 100000] [--workers 1 2 4]
                                                [--memory-cases 1000 100000] [--memory-actions 1000]

What runs is the real code: `due_actions.claim` (FOR UPDATE SKIP LOCKED) and
`due_actions.run_claimed` with the handlers of `recovery.services.registry`:
- `case.retry` (recovery/services/cases/actions.py): re-read the invoice from Stripe, mirror it,
  `Invoice.pay` with the idempotency key `case:<id>:attempt:1`, then on success close the case
  as recovered (cancelling what is pending for it), on a decline record the attempt and ask the
  retry policy for the next retry (scheduled days ahead, so not run here). Stripe is the in-repo
  FakeStripeGateway; 60 % of the charges decline (insufficient_funds), 40 % succeed.
- `outbox.send` (recovery/services/messaging/outbox.py): a reminder email of another open case,
  rendered and handed over SMTP to a local aiosmtpd sink in its own process (a new SMTP
  connection per message, as SmtpMailer does).

The database is filled with plain INSERT ... SELECT generate_series (customers, cards, open
invoices with one failed charge each, open cases, outbox rows, due actions, all due now), and
refilled before each run. Each worker process claims batches of --batch until nothing is due,
and reports its actions, CPU time and peak RSS (getrusage ru_maxrss).

Afterwards, exactly once is checked from the outside: every retry's idempotency key reached the
Stripe fake once (each worker logs the keys of the pay calls it made), every email reached the
SMTP sink once (counted by Message-ID, which is derived from the outbox dedupe key), and every
due action is `done` after one attempt.

Memory: one worker runs the same --memory-actions actions with --memory-cases open cases in
the database (the extra cases have no due action); its peak RSS should not grow with them.

Not run in CI: figures depend on the machine (2 cores shared with other work here).
"""

from __future__ import annotations

import argparse
import json
import os
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
    is appended to `keylog`, so double charges across processes can be counted afterwards."""

    def __init__(self, keylog: Path) -> None:
        super().__init__()
        self._keylog = keylog.open("a", buffering=1)

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
        self._keylog.write(idempotency_key + "\n")
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
        self._keylog.close()


# ---- child processes: a worker and the SMTP sink -----------------------------------------------


def worker_main(args: argparse.Namespace) -> int:
    from recovery.adapters.clock import SystemClock
    from recovery.config import Settings
    from recovery.services.registry import build_runtime
    from recovery.services.work import due_actions

    gateway = BenchGateway(Path(args.keylog))
    settings = Settings(database_url=args.url, smtp_url=args.smtp_url)
    runtime = build_runtime(settings, clock=SystemClock(), gateway=gateway)
    db, clock = runtime.db, runtime.clock
    rss_ready = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kinds: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    first = last = 0.0
    cpu0 = time.process_time()
    print("ready", flush=True)
    sys.stdin.readline()  # the parent says go once every worker is up
    while True:
        batch = due_actions.claim(db, args.worker_id, clock.now(), args.batch)
        if not batch:
            break
        if not first:
            first = time.time()
        for action in batch:
            outcomes[due_actions.run_claimed(runtime, action, args.worker_id)] += 1
            kinds[action.kind] += 1
        last = time.time()
    gateway.close()
    db.dispose()
    result = {
        "worker": args.worker_id,
        "actions": sum(kinds.values()),
        "kinds": dict(kinds),
        "outcomes": dict(outcomes),
        "first_claim": first,
        "last_done": last,
        "cpu_seconds": round(time.process_time() - cpu0, 2),
        "rss_ready_mib": round(rss_ready / 1024, 1),
        "rss_peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    Path(args.out).write_text(json.dumps(result))
    return 0


def sink_main(args: argparse.Namespace) -> int:
    from aiosmtpd.controller import Controller

    counts: Counter[str] = Counter()
    lock = threading.Lock()

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
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


class Sink:
    def __init__(self, work: Path) -> None:
        from bench.stack import free_port

        self.port = free_port()
        self.out = work / f"sink-{self.port}.json"
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "_sink", "--port", str(self.port), "--out", str(self.out)],
            stdout=subprocess.PIPE,
            text=True,
        )
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


def run(url: str, work: Path, workers: int, batch: int, label: str) -> dict[str, Any]:
    """Start the sink and `workers` processes, let them drain everything due, check once-ness."""
    sink = Sink(work)
    procs, outs, keylogs = [], [], []
    for i in range(workers):
        out, keylog = work / f"{label}-w{i}.json", work / f"{label}-w{i}.keys"
        keylog.unlink(missing_ok=True)
        command = [sys.executable, __file__, "_worker", "--url", url, "--worker-id"]
        command += [f"{label}-w{i}", "--smtp-url", sink.url, "--keylog", str(keylog)]
        command += ["--batch", str(batch), "--out", str(out)]
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
    started = time.time()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        if proc.wait(timeout=7200) != 0:
            raise RuntimeError(f"worker exited with {proc.returncode}")
    wall = time.time() - started
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
        "actions": actions,
        "active_seconds": round(last - first, 2),
        "wall_seconds": round(wall, 2),
        "actions_per_s": round(actions / (last - first), 1),
        "worker_cpu_ms_per_action": round(
            sum(r["cpu_seconds"] for r in results) / max(actions, 1) * 1000, 2
        ),
        "per_worker": results,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "kinds_run": dict(sum((Counter(r["kinds"]) for r in results), Counter())),
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="role")
    w = sub.add_parser("_worker")
    for name in ("--url", "--worker-id", "--smtp-url", "--keylog", "--out"):
        w.add_argument(name, required=True)
    w.add_argument("--batch", type=int, default=50)
    s = sub.add_parser("_sink")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--out", required=True)
    parser.add_argument("--actions", type=int, default=100_000)
    parser.add_argument("--email-share", type=float, default=0.5)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--batch", type=int, default=50, help="claim batch (the worker's default)")
    parser.add_argument("--memory-cases", type=int, nargs="*", default=[1_000, 100_000])
    parser.add_argument("--memory-actions", type=int, default=1_000)
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
    results: dict[str, Any] = {"throughput": [], "memory": []}
    try:
        upgrade(server.url)
        retries, emails = split(args.actions, args.email_share)
        for n in args.workers:
            took = fill(server.url, retries + emails, retries, emails)
            print(
                f"\n== {n} worker process(es): {retries} retries + {emails} emails "
                f"(filled in {took:.1f} s)",
                flush=True,
            )
            r = run(server.url, work, n, args.batch, f"t{n}")
            results["throughput"].append(r)
            rss = ", ".join(f"{w['rss_peak_mib']}" for w in r["per_worker"])
            print(
                f"  {r['actions_per_s']:>7.1f} actions/s ({r['actions']} in "
                f"{r['active_seconds']} s); worker CPU {r['worker_cpu_ms_per_action']} ms/action;"
                f" peak RSS per process (MiB): {rss}; {r['loadavg_before']} -> "
                f"{r['loadavg_after']}",
                flush=True,
            )
            print(f"  exactly once: {exactly_once(r)} {json.dumps(r['check'])}", flush=True)
        mr, me = split(args.memory_actions, args.email_share)
        for cases in args.memory_cases:
            took = fill(server.url, cases, mr, me)
            print(
                f"\n== memory: 1 worker, {mr} retries + {me} emails, {cases} open cases "
                f"(filled in {took:.1f} s)",
                flush=True,
            )
            r = run(server.url, work, 1, args.batch, f"m{cases}")
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
    base = results["throughput"][0]["actions_per_s"] if results["throughput"] else 0.0
    for r in results["throughput"]:
        peak = max(w["rss_peak_mib"] for w in r["per_worker"])
        print(
            f"  {r['workers']} worker(s): {r['actions_per_s']:.0f} actions/s "
            f"(x{r['actions_per_s'] / base:.2f} of 1 worker), max peak RSS {peak} MiB/process, "
            f"exactly once: {exactly_once(r)}; {r['loadavg_after']}"
        )
    if len(results["memory"]) >= 2:
        low, high = results["memory"][0], results["memory"][-1]
        a, b = low["per_worker"][0]["rss_peak_mib"], high["per_worker"][0]["rss_peak_mib"]
        print(
            f"  memory: peak RSS {a} MiB at {low['open_cases']} open cases, {b} MiB at "
            f"{high['open_cases']} ({(b - a) / a:+.1%})"
        )
    versions = package_versions(["sqlalchemy", "psycopg", "aiosmtpd", "apscheduler"])
    print("\n== how these figures were made")
    print(f"  started {started}; command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"  machine: {json.dumps(machine)}; {loadavg()} at end")
    print(f"  versions: {json.dumps(versions)}; {pg}")
    print(
        "  PostgreSQL: throwaway (tests/support/postgres.py: fsync=off, synchronous_commit=off);"
        f" worker claim batch {args.batch}, lease 5 min; SMTP sink: aiosmtpd in its own process"
    )
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1))
    ok = all(exactly_once(r) for r in results["throughput"] + results["memory"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
