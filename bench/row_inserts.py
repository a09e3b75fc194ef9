"""The rows written and loaded back as objects in one INSERT ... RETURNING: a case opened
(`services/cases/opening.py`) and a message written (`services/messaging/outbox_writes.py`),
each as built there (a Core insert whose row the ORM loads, `from_statement`) against the ORM's
bulk insert of the model it replaced, alternately in the same process, on SQLite and on a
throwaway PostgreSQL (tests/support/postgres.py).

    .venv/bin/python bench/row_inserts.py [--rows 1000] [--rounds 4]

Every failed renewal opens a case and plans its reminders (a case on ~1 event in 8 of the
webhook mix, bench/event_processing.py; a message for each step of its plan). Prints the CPU of
this process per row, each round alternating the two, and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from recovery.db import Database, insert_ignoring  # noqa: E402
from recovery.migrate import upgrade  # noqa: E402
from recovery.models import OutboxMessage, RecoveryCase  # noqa: E402
from recovery.services.cases import opening  # noqa: E402
from recovery.services.messaging import outbox_writes  # noqa: E402
from tests.support.postgres import start_postgres  # noqa: E402


def _case(n: int) -> dict[str, Any]:
    return {
        "invoice_id": f"in_bench{n:08d}",
        "customer_id": f"cus_bench{n:08d}",
        "subscription_id": f"sub_bench{n:08d}",
        "status": "open",
        "currency": "usd",
        "amount_due": 2900,
        "opened_at": datetime.now(UTC),
        "hosted_invoice_url": None,
    }


def _message(n: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "about": f"case:{n}",
        "case_id": None,
        "customer_id": f"cus_bench{n:08d}",
        "channel": "email",
        "template": "soft_decline",
        "step": "soft.0",
        "locale": "en",
        "recipient": f"customer{n}@example.com",
        "subject": "Your payment didn't go through",
        "body": "Hi,\n\nWe couldn't collect 29.00 USD from your Visa card ending in 4242.\n" * 6,
        "send_after": now,
        "cap_day": None,
        "dedupe_key": f"case:{n}:reminder:1:soft:0",
        "status": "pending",
        "attempts": 0,
        "created_at": now,
    }


def _time(db: Database, statement: Any, values: Any, model: type, first: int, rows: int) -> float:
    """CPU microseconds per row written (and loaded as `model`), in one transaction."""
    with db.sessionmaker() as session, session.begin():
        started = time.process_time()
        for n in range(first, first + rows):
            row = session.scalars(statement, values(n)).one_or_none()
            assert isinstance(row, model)
        return (time.process_time() - started) / rows * 1e6


def bench(url: str, dialect: str, rows: int, rounds: int) -> None:
    upgrade(url)
    db = Database(url)
    kinds = (
        (
            "a case opened",
            RecoveryCase,
            _case,
            opening._insert_case_statement(dialect),
            insert_ignoring(dialect, RecoveryCase, ["invoice_id"]).returning(RecoveryCase),
        ),
        (
            "a message written",
            OutboxMessage,
            _message,
            outbox_writes._insert_message(dialect),
            insert_ignoring(dialect, OutboxMessage).returning(OutboxMessage),
        ),
    )
    for label, model, values, ours, orm_bulk in kinds:
        times: dict[str, list[float]] = {"ours": [], "orm bulk insert": []}
        first = 0
        for _ in range(rounds):
            for name, statement in (("orm bulk insert", orm_bulk), ("ours", ours)):
                times[name].append(_time(db, statement, values, model, first, rows))
                first += rows
        for name, got in times.items():
            shown = ", ".join(f"{t:.0f}" for t in got)
            median = statistics.median(got)
            print(f"  {dialect:<10} {label:<18} {name:<16} {shown} us CPU (median {median:.0f})")
        ratio = statistics.median(times["orm bulk insert"]) / statistics.median(times["ours"])
        print(f"  {dialect:<10} {label:<18} the ORM bulk insert costs {ratio:.2f}x ours")
    db.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="row-inserts-") as tmp:
        bench(f"sqlite:///{tmp}/bench.db", "sqlite", args.rows, args.rounds)
        server = start_postgres(Path(tmp))
        try:
            bench(server.url, "postgresql", args.rows, args.rounds)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
