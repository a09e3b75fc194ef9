"""Opening a case: the one INSERT ... RETURNING that opens it, as `services/cases/opening.py`
builds it, against the ORM's bulk insert of the model it replaced, in the same process, on
SQLite and on a throwaway PostgreSQL (tests/support/postgres.py).

    .venv/bin/python bench/case_opening.py [--cases 1000] [--rounds 4]

Every failed renewal opens one (a renewal run's first failures: a case on ~1 event in 8 of the
webhook mix, bench/event_processing.py). Prints the CPU of this process per case opened, each
round alternating the two, and the ratio of the medians.
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
from recovery.models import RecoveryCase  # noqa: E402
from recovery.services.cases import opening  # noqa: E402
from tests.support.postgres import start_postgres  # noqa: E402


def _values(n: int) -> dict[str, Any]:
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


def _time(db: Database, statement: Any, first: int, cases: int) -> float:
    """CPU microseconds per case opened (and loaded as a RecoveryCase), in one transaction."""
    with db.sessionmaker() as session, session.begin():
        started = time.process_time()
        for n in range(first, first + cases):
            case = session.scalars(statement, _values(n)).one_or_none()
            assert isinstance(case, RecoveryCase)
        return (time.process_time() - started) / cases * 1e6


def bench(url: str, dialect: str, cases: int, rounds: int) -> None:
    upgrade(url)
    db = Database(url)
    ours = opening._insert_case_statement(dialect)
    orm_bulk = insert_ignoring(dialect, RecoveryCase, ["invoice_id"]).returning(RecoveryCase)
    times: dict[str, list[float]] = {"ours": [], "orm bulk insert": []}
    first = 0
    for _ in range(rounds):
        for name, statement in (("orm bulk insert", orm_bulk), ("ours", ours)):
            times[name].append(_time(db, statement, first, cases))
            first += cases
    db.engine.dispose()
    for name, got in times.items():
        shown = ", ".join(f"{t:.0f}" for t in got)
        median = statistics.median(got)
        print(f"  {dialect:<10} {name:<16} {shown} us CPU a case (median {median:.0f})")
    ratio = statistics.median(times["orm bulk insert"]) / statistics.median(times["ours"])
    print(f"  {dialect:<10} the ORM bulk insert costs {ratio:.2f}x ours")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="case-opening-") as tmp:
        bench(f"sqlite:///{tmp}/bench.db", "sqlite", args.cases, args.rounds)
        server = start_postgres(Path(tmp))
        try:
            bench(server.url, "postgresql", args.cases, args.rounds)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
