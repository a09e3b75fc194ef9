"""Event processing: a generated billing lifecycle replayed through the inbox, no HTTP.

    .venv/bin/python bench/event_processing.py [--customers 300] [--engine sqlite|postgres|both]

What the webhook does after the signature check (store the event, apply it to the mirror, run
every feature's reactions - cases, retries, reminders, expiry - in one transaction), timed on
the lifecycle the chaos replay uses (tests/support/lifecycle.py), on SQLite and on a throwaway
PostgreSQL (tests/support/postgres.py):

1. in order: each event once, in Stripe's order (the most work: every reaction acts);
2. shuffled: the same lifecycle shuffled with 35 % duplicates (the chaos replay's order);
3. the baseline, in the same process: storing the same events without processing them.

Prints events/s, CPU ms and SQL statements per event, and the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, event, text  # noqa: E402

from recovery.adapters.clock import FrozenClock  # noqa: E402
from recovery.adapters.stripe_fake import FakeStripeGateway  # noqa: E402
from recovery.db import Base  # noqa: E402
from recovery.migrate import upgrade  # noqa: E402
from recovery.services.events import inbox  # noqa: E402
from recovery.services.registry import build_runtime  # noqa: E402
from tests.conftest import START, make_settings  # noqa: E402
from tests.support import stripe_payloads as sp  # noqa: E402
from tests.support.lifecycle import deliveries, generate_lifecycle  # noqa: E402


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


def _run(url: str, tmp: Path, bodies: Sequence[bytes], process: bool) -> tuple[float, float, int]:
    """(wall s, CPU s, SQL statements) for one replay into an emptied database."""
    _empty(url)
    clock = FrozenClock(START)
    rt = build_runtime(make_settings(url, tmp), clock=clock, gateway=FakeStripeGateway(clock=clock))
    statements = [0]

    @event.listens_for(rt.db.engine, "before_cursor_execute")
    def count(*_: Any) -> None:
        statements[0] += 1

    wall, cpu = time.perf_counter(), time.process_time()
    for body in bodies:
        parsed, data = inbox.parse_event(body)
        inbox.receive_event(
            rt.db, parsed, data, body, rt.processing_context, rt.clock, process=process
        )
    result = time.perf_counter() - wall, time.process_time() - cpu, statements[0]
    rt.db.dispose()
    return result


def _line(label: str, n: int, run: tuple[float, float, int], base: float | None) -> str:
    wall, cpu, stmts = run
    ratio = f"  {n / wall / base:6.1%} of the baseline" if base else ""
    return (
        f"  {label:<22}{n:>8} events {n / wall:8.0f}/s  {cpu / n * 1000:6.2f} ms CPU/event"
        f"  {stmts / n:5.1f} statements/event{ratio}"
    )


def bench(engine: str, url: str, tmp: Path, customers: int, seed: int) -> None:
    events = generate_lifecycle(customers, seed)
    in_order = [sp.body_of(e) for e in events]
    shuffled = list(deliveries(events, seed, 0.35))
    upgrade(url)
    baseline = _run(url, tmp, in_order, process=False)
    base_rate = len(in_order) / baseline[0]
    print(f"{engine}: {customers} customers, seed {seed}, load average {os.getloadavg()[0]:.1f}")
    print(_line("store only (baseline)", len(in_order), baseline, None))
    print(_line("in order", len(in_order), _run(url, tmp, in_order, True), base_rate))
    print(_line("shuffled, 35% dupes", len(shuffled), _run(url, tmp, shuffled, True), base_rate))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--engine", choices=("sqlite", "postgres", "both"), default="both")
    args = parser.parse_args(argv)
    print(f"bench/event_processing.py {' '.join(sys.argv[1:])}  (python {sys.version.split()[0]})")
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
    for engine, url_of, stop in runs:
        try:
            bench(engine, url_of(), tmp, args.customers, args.seed)
        finally:
            stop()


if __name__ == "__main__":
    main()
