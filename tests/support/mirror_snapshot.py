"""Every row of every mirror table as plain, sorted, engine-neutral tuples - and a readable diff.

Two runs (in-order and shuffled, SQLite and PostgreSQL) are compared value by value, so the
snapshot leaves out only what legitimately differs between runs: the surrogate autoincrement id
of `invoice_payments`. Datetimes become aware-UTC ISO strings (SQLite keeps them naive) and JSON
columns become canonical JSON text, so equal states compare equal whatever the engine.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, Table, select

from recovery.db import Base, Database
from recovery.models import mirror  # noqa: F401 - registers the mirror tables on Base.metadata

MIRROR_TABLES = (
    "customers",
    "payment_methods",
    "subscriptions",
    "subscription_items",
    "invoices",
    "invoice_payments",
    "payment_attempts",
)
# Surrogate keys: assigned in arrival order, so two correct runs may number rows differently.
SKIPPED_COLUMNS = {"invoice_payments": frozenset({"id"})}

Snapshot = dict[str, list[tuple[Any, ...]]]


def _table(name: str) -> Table:
    return Base.metadata.tables[name]


def columns(name: str) -> list[str]:
    """The compared columns of a mirror table, in table order."""
    skipped = SKIPPED_COLUMNS.get(name, frozenset())
    return [c.name for c in _table(name).columns if c.name not in skipped]


def _normal(value: Any) -> Any:
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


def _sort_key(row: tuple[Any, ...]) -> tuple[tuple[bool, Any], ...]:
    # None sorts first and never meets a value of another type; each column is one type.
    return tuple((v is not None, v if v is not None else 0) for v in row)


def snapshot(db: Database | Engine) -> Snapshot:
    engine = db.engine if isinstance(db, Database) else db
    result: Snapshot = {}
    with engine.connect() as conn:
        for name in MIRROR_TABLES:
            table = _table(name)
            query = select(*(table.c[c] for c in columns(name)))
            rows = [tuple(_normal(v) for v in row) for row in conn.execute(query)]
            result[name] = sorted(rows, key=_sort_key)
    return result


def _keyed(name: str, rows: list[tuple[Any, ...]]) -> dict[Any, tuple[Any, ...]]:
    # Rows are keyed by their Stripe id; invoice_payments rows are their own key.
    names = columns(name)
    if "id" in names:
        at = names.index("id")
        return {row[at]: row for row in rows}
    return {row: row for row in rows}


def diff(a: Snapshot, b: Snapshot, *, limit: int = 5, labels: tuple[str, str] = ("a", "b")) -> str:
    """The first differing rows of each table, column by column; '' when equal."""
    la, lb = labels
    out: list[str] = []
    for name in sorted(set(a) | set(b)):
        rows_a, rows_b = a.get(name, []), b.get(name, [])
        if rows_a == rows_b:
            continue
        names = columns(name)
        keyed_a, keyed_b = _keyed(name, rows_a), _keyed(name, rows_b)
        only_a = [k for k in keyed_a if k not in keyed_b]
        only_b = [k for k in keyed_b if k not in keyed_a]
        changed = [k for k in keyed_a if k in keyed_b and keyed_a[k] != keyed_b[k]]
        out.append(
            f"{name}: {len(rows_a)} rows in {la}, {len(rows_b)} in {lb}; {len(changed)} differ, "
            f"{len(only_a)} only in {la}, {len(only_b)} only in {lb}"
        )
        for key in changed[:limit]:
            cells = [
                f"{col}: {la}={va!r} {lb}={vb!r}"
                for col, va, vb in zip(names, keyed_a[key], keyed_b[key], strict=True)
                if va != vb
            ]
            out.append(f"  {key}: " + "; ".join(cells))
        for label, keys, keyed in ((la, only_a, keyed_a), (lb, only_b, keyed_b)):
            for key in keys[:limit]:
                out.append(f"  only in {label}: {dict(zip(names, keyed[key], strict=True))}")
    return "\n".join(out)
