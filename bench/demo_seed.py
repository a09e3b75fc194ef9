"""The demo's seeding (`recovery demo --exit-after-seed`), timed on a fixed date, with a
fingerprint of what it produced.

    .venv/bin/python bench/demo_seed.py [--customers 300] [--end 2026-12-04T15:00:00+00:00]
                                        [--profile out.prof] [--figures] [--split]
                                        [--tables FILE] [--against FILE]

`recovery demo` ends its history at the moment it starts, so two runs of it tell slightly
different stories (other weekdays, holidays, month lengths) and are not comparable. This plays
the same history (recovery/devtools/history, the demo's seed) through the same steps as the
demo - a fresh SQLite file, every migration, the demo's rules and Stripe - but ending at `--end`,
and prints:

- CPU seconds of this process (user + system) for the whole run and for the history alone,
  wall seconds, SQL statements, and the machine's load average before and after;
- a fingerprint (sha256) of the figures the dashboard shows and the rows behind them (cases by
  status with amounts, timeline lines, messages, due actions, cancel sessions, win-backs):
  the same fingerprint before and after a change means the demo's story did not change
  (`--figures` prints the figures themselves);
- with `--split`, where the history's CPU went: the events' processing (the inbox), the due
  actions, the daily jobs, and the rest (the Stripe fake, the customers' pages, the schedule).

`--tables FILE` writes every table of the seeded database (recovery/devtools/snapshot.py: random
parts and the events' receipt times left out) and `--against FILE` compares with such a file,
table by table: run it on main with `--tables`, then on a branch with `--against`, for a check
row by row where the fingerprint only sums.

`--profile` times by CPU (not wall) time: on a shared machine the wall clock also counts the
other processes' turns. cProfile's own cost is per Python call, so it overstates code made of
many small calls (SQLAlchemy, the fake's copies, Jinja's compiler) several times; `--split`
measures without it.

Target (issue 16): the seeding of 300 customers in under 10 s on an idle 2-core machine.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import hashlib
import json
import os
import resource
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, event, text  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

from recovery import worker  # noqa: E402
from recovery.adapters.clock import FrozenClock  # noqa: E402
from recovery.devtools import snapshot  # noqa: E402
from recovery.devtools.demo import prepare_environment, seed_history  # noqa: E402
from recovery.devtools.demo_gateway import DemoStripeGateway  # noqa: E402
from recovery.devtools.history import simulation  # noqa: E402
from recovery.migrate import upgrade  # noqa: E402

DEFAULT_END = "2026-12-04T15:00:00+00:00"
TARGET_SECONDS = 10.0

# What the dashboard's figures and pages are made of; ids are left out where they depend on
# nothing but insertion order.
FIGURES = {
    "cases": "SELECT status, decline_category, count(*), sum(amount_due), "
    "sum(amount_recovered), sum(our_attempts) FROM recovery_cases "
    "GROUP BY status, decline_category ORDER BY 1, 2",
    "case_lines": "SELECT kind, count(*) FROM case_events GROUP BY kind ORDER BY 1",
    "messages": "SELECT channel, template, status, count(*) FROM outbox_messages "
    "GROUP BY channel, template, status ORDER BY 1, 2, 3",
    "due_actions": "SELECT kind, status, count(*) FROM due_actions GROUP BY kind, status "
    "ORDER BY 1, 2",
    "cancel_sessions": "SELECT outcome, count(*) FROM cancel_sessions GROUP BY outcome ORDER BY 1",
    "win_backs": "SELECT status, count(*), sum(reactivated_amount) FROM win_backs "
    "GROUP BY status ORDER BY 1",
    "invoices": "SELECT status, count(*), sum(amount_paid) FROM invoices GROUP BY status "
    "ORDER BY 1",
    "subscriptions": "SELECT status, count(*) FROM subscriptions GROUP BY status ORDER BY 1",
    "events": "SELECT type, status, count(*) FROM stripe_events GROUP BY type, status "
    "ORDER BY 1, 2",
}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Split:
    """CPU seconds of the history's main parts, measured around their entry points."""

    def __init__(self) -> None:
        parts = {
            "events": (simulation, "receive_events"),
            "due actions": (worker.Worker, "run_due_actions"),
            "daily jobs": (worker.Worker, "run_daily_jobs"),
        }
        self.seconds = dict.fromkeys(parts, 0.0)
        self.depth = 0
        for name, (owner, attr) in parts.items():
            setattr(owner, attr, self._timed(name, getattr(owner, attr)))

    def _timed(self, name: str, fn: Any) -> Any:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self.depth:  # inside another part: counted there
                return fn(*args, **kwargs)
            self.depth += 1
            started = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.depth -= 1
                self.seconds[name] += time.thread_time() - started

        return timed

    def summary(self, total: float) -> str:
        rest = total - sum(self.seconds.values())
        parts = [f"{name} {s:.1f}" for name, s in self.seconds.items()]
        return f"history CPU s: {', '.join(parts)}, the rest {rest:.1f}"


def figures(url: str) -> dict[str, list[list[Any]]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                name: [list(row) for row in conn.execute(text(sql))]
                for name, sql in FIGURES.items()
            }
    finally:
        engine.dispose()


def tables(url: str) -> dict[str, list[str]]:
    engine = create_engine(url)
    try:
        return snapshot.tables(engine)
    finally:
        engine.dispose()


def _speed() -> str:
    from bench.stack import python_speed_ms

    return f"this machine's plain-Python speed {python_speed_ms()} ms (bench/stack.py)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--end", default=DEFAULT_END, help="when the history ends (ISO 8601)")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the history here")
    parser.add_argument("--figures", action="store_true", help="print the figures themselves")
    parser.add_argument("--split", action="store_true", help="print where the history's CPU went")
    parser.add_argument("--tables", type=Path, help="write every table of the database here")
    parser.add_argument("--against", type=Path, help="compare every table with a --tables file")
    args = parser.parse_args()
    end = datetime.fromisoformat(args.end)

    statements = 0

    @event.listens_for(Engine, "before_cursor_execute")
    def count(*_: Any) -> None:
        nonlocal statements
        statements += 1

    load_before = os.getloadavg()
    started, cpu_started = time.perf_counter(), _cpu()
    with tempfile.TemporaryDirectory(prefix="demo-seed-") as tmp:
        os.environ["RECOVERY_INSTANCE_PATH"] = tmp
        os.environ.pop("RECOVERY_DATABASE_URL", None)
        settings = prepare_environment("127.0.0.1", 5999)
        upgrade(settings.database_url)
        clock = FrozenClock(end)
        gateway = DemoStripeGateway(clock=clock, pages_url=settings.public_url)
        split = Split() if args.split else None
        cpu_history = _cpu()
        history_thread = time.thread_time()
        profile = cProfile.Profile(time.thread_time) if args.profile else None
        if profile:
            profile.enable()
        report = seed_history(settings, gateway, clock, args.customers, args.seed)
        if profile:
            profile.disable()
            profile.dump_stats(args.profile)
        cpu_history = _cpu() - cpu_history
        history_thread = time.thread_time() - history_thread
        wall, cpu = time.perf_counter() - started, _cpu() - cpu_started
        found = figures(settings.database_url)
        rows = tables(settings.database_url) if args.tables or args.against else {}
    load_after = os.getloadavg()
    digest = hashlib.sha256(json.dumps(found, default=str).encode()).hexdigest()[:16]
    print(f"history: {report.summary()}")
    print(
        f"demo seed ({args.customers} customers, ending {end.isoformat()}): "
        f"{cpu:.1f} CPU s ({cpu_history:.1f} in the history), {wall:.1f} s wall, "
        f"{statements} SQL statements; figures {digest}"
    )
    if split:
        print(split.summary(history_thread))
    before, after = (" ".join(f"{n:.2f}" for n in load) for load in (load_before, load_after))
    print(f"load average before {before}, after {after}; {_speed()}")
    print(f"target: under {TARGET_SECONDS:.0f} s on an idle 2-core machine")
    if args.figures:
        print(json.dumps(found, indent=1, default=str))
    if args.tables:
        args.tables.write_text(json.dumps(rows, indent=0), encoding="utf-8")
    if args.against:
        before = json.loads(args.against.read_text(encoding="utf-8"))
        differ = snapshot.differences(before, rows)
        print(f"tables against {args.against}: {'; '.join(differ) or 'every row the same'}")


if __name__ == "__main__":
    main()
