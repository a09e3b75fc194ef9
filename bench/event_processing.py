"""Event processing: a generated billing lifecycle stored in the inbox, then processed by the
worker's batches, no HTTP.

    .venv/bin/python bench/event_processing.py [--customers 300] [--engine sqlite|postgres|both]
                                               [--batch 200] [--profile]
                                               [--webhook-mix 10000] [--mix-parts 1]

What the worker does with stored events (`inbox.process_pending`: claim a batch FOR UPDATE SKIP
LOCKED, apply the mirror and every feature's reactions - cases, retries, reminders, expiry - in
one transaction with a savepoint per event), timed on the lifecycle the chaos replay uses
(tests/support/lifecycle.py), on SQLite and on a throwaway PostgreSQL
(tests/support/postgres.py):

1. storing: every event through `inbox.ingest`, as the webhook does (one statement each);
2. in order: each event once, in Stripe's order (the most work: every reaction acts);
3. shuffled: the same lifecycle shuffled with 35 % duplicates (the chaos replay's order; the
   duplicates are dropped when stored), processed in arrival order;
4. (--webhook-mix N) the webhook bench's events (bench/event_mix.py: a third of them payment
   failures over 2,000 customers; each body sent with a fresh id and `created` as 500 a second
   would), N of them: what the worker of `bench/webhook_ingest.py` processes, without HTTP.
   With `--mix-parts K` they are stored and processed in K consecutive parts, each timed: the
   mix's 4,000 templates repeat, so its first pass meets every customer and invoice new (cases
   opened, first decisions, first reminders planned: a renewal run, where every failure is a
   new one) and the later passes mostly states seen before (cases re-decided, or nothing).

Prints events/s, CPU ms and SQL statements per event of this process (PostgreSQL's own CPU is
not included), and the machine's load average. Target (issue 16): >= 1,000 events/s processed
on PostgreSQL, in order and shuffled (the webhook mix is for information: its target is the
receipt-to-processed time of bench/webhook_ingest.py).
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, event, text  # noqa: E402

from recovery import heap  # noqa: E402
from recovery.adapters.clock import FrozenClock  # noqa: E402
from recovery.adapters.stripe_fake import FakeStripeGateway  # noqa: E402
from recovery.db import Base  # noqa: E402
from recovery.migrate import upgrade  # noqa: E402
from recovery.runtime import Runtime  # noqa: E402
from recovery.services.events import inbox  # noqa: E402
from recovery.services.registry import build_runtime  # noqa: E402
from tests.conftest import START, make_settings  # noqa: E402
from tests.support import stripe_payloads as sp  # noqa: E402
from tests.support.lifecycle import deliveries, generate_lifecycle  # noqa: E402

TARGET = 1000.0


def _empty(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        if url.startswith("postgresql"):
            names = ", ".join(t.name for t in Base.metadata.sorted_tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())
    engine.dispose()


class Run:
    def __init__(self, url: str, tmp: Path) -> None:
        _empty(url)
        self.clock = FrozenClock(START)
        gateway = FakeStripeGateway(clock=self.clock)
        self.rt: Runtime = build_runtime(make_settings(url, tmp), clock=self.clock, gateway=gateway)
        heap.settle()  # as `recovery worker` does once started
        self.statements = 0

        @event.listens_for(self.rt.db.engine, "before_cursor_execute")
        def count(*_: Any) -> None:
            self.statements += 1

    def store(self, bodies: Sequence[bytes]) -> int:
        """Deliver every body, as the webhook does; arrival order is kept (1 ms apart)."""
        new = 0
        for body in bodies:
            parsed, _ = inbox.parse_event(body)
            new += inbox.ingest(self.rt.db, parsed, body, self.clock.now())
            self.clock.advance(timedelta(milliseconds=1))
        return new

    def process(self, batch: int) -> int:
        total = 0
        while n := inbox.process_pending(self.rt.db, self.rt.processing_context, self.clock, batch):
            total += n
        return total

    def timed(self, what: Callable[[], int]) -> tuple[int, float, float, int]:
        """(events, wall s, CPU s, statements)"""
        self.statements = 0
        wall, cpu = time.perf_counter(), time.process_time()
        n = what()
        return n, time.perf_counter() - wall, time.process_time() - cpu, self.statements


def _line(label: str, result: tuple[int, float, float, int]) -> str:
    n, wall, cpu, stmts = result
    return (
        f"  {label:<28}{n:>8} events {n / wall:8.0f}/s  {cpu / n * 1000:6.2f} ms CPU/event  "
        f"{stmts / n:5.1f} statements/event  (load average {os.getloadavg()[0]:.1f})"
    )


def _webhook_mix(count: int, rate: int = 500) -> list[bytes]:
    """`count` bodies of bench/webhook_ingest.py's mix, in the load generator's order, ids and
    `created` as a run at `rate` events a second gives them."""
    from bench.event_mix import build_templates

    templates = build_templates()
    start = int(START.timestamp())
    return [
        templates[n % len(templates)].body(f"evt_mix{n:010d}", start + n // rate)
        for n in range(count)
    ]


def bench(
    engine: str,
    url: str,
    tmp: Path,
    customers: int,
    seed: int,
    batch: int,
    profile: bool,
    webhook_mix: int = 0,
    mix_parts: int = 1,
) -> dict[str, float]:
    events = generate_lifecycle(customers, seed)
    in_order = [sp.body_of(e) for e in events]
    shuffled = list(deliveries(events, seed, 0.35, bodies_of_events=in_order))
    upgrade(url)
    print(f"{engine}: {customers} customers, seed {seed}, batches of {batch}")
    rates = {}
    runs = [("in order", in_order), ("shuffled, 35% duplicates", shuffled)]
    if webhook_mix:
        runs.append(("webhook mix", _webhook_mix(webhook_mix)))
    for label, bodies in runs:
        run = Run(url, tmp)
        parts = mix_parts if label == "webhook mix" else 1
        size = -(-len(bodies) // parts)
        for part in range(parts):
            name = label if parts == 1 else f"{label} {part + 1}/{parts}"
            chunk = bodies[part * size : (part + 1) * size]
            stored = run.timed(functools.partial(run.store, chunk))
            print(_line(f"{name}: storing", stored))
            prof = cProfile.Profile() if profile else None
            if prof is not None:
                prof.enable()
            processed = run.timed(functools.partial(run.process, batch))
            if prof is not None:
                prof.disable()
                pstats.Stats(prof).sort_stats("cumulative").print_stats(35)
            print(_line(f"{name}: processed", processed))
            rates[name] = processed[0] / processed[1]
        run.rt.db.dispose()
    return rates


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--engine", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--batch", type=int, default=inbox.BATCH)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--webhook-mix", type=int, default=0, metavar="N", help="also N events of that mix"
    )
    parser.add_argument(
        "--mix-parts", type=int, default=1, metavar="K", help="the mix in K parts, each timed"
    )
    args = parser.parse_args(argv)
    from bench.stack import python_speed_ms

    print(
        f"bench/event_processing.py {' '.join(sys.argv[1:])}  (python {sys.version.split()[0]}, "
        f"plain-Python speed {python_speed_ms()} ms: bench/stack.py)"
    )
    tmp = Path(tempfile.mkdtemp(prefix="event_processing_"))
    runs: list[tuple[str, Callable[[], str], Callable[[], None]]] = []
    if args.engine in ("sqlite", "both"):
        runs.append(("sqlite", lambda: f"sqlite:///{tmp / 'bench.db'}", lambda: None))
    if args.engine in ("postgres", "both"):
        from tests.support.postgres import start_postgres

        holder: dict[str, Any] = {}

        def start() -> str:
            holder["server"] = start_postgres(tmp / "pg")
            url: str = holder["server"].create_database("event_processing")
            return url

        runs.append(("postgres", start, lambda: holder["server"].stop()))
    summary = []
    for engine, url_of, stop in runs:
        try:
            rates = bench(
                engine,
                url_of(),
                tmp,
                args.customers,
                args.seed,
                args.batch,
                args.profile,
                args.webhook_mix,
                args.mix_parts,
            )
        finally:
            stop()
        summary += [(engine, label, rate) for label, rate in rates.items()]
    print("\n== summary")
    for engine, label, rate in summary:
        print(f"  {engine}, {label}: {rate:.0f} events/s processed")
    for engine, label, rate in summary:
        if engine == "postgres" and not label.startswith("webhook mix"):
            verdict = "met" if rate >= TARGET else "MISSED"
            print(f"  [{verdict}] >= 1,000 events/s on PostgreSQL, {label}: {rate:.0f}/s")


if __name__ == "__main__":
    main()
