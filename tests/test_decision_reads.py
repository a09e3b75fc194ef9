"""A case decision's reads stay cheap as the mirror grows: each goes by an index on the case's
own customer, not over every customer's rows. SQLite keeps no statistics and picks among
equally good-looking indexes by itself; the status index it took for the customer's paid
renewals walked every paid invoice of every customer on each decision (at 600 customers, 1.4 ms
a call and the chaos replay's costliest statement, growing with every renewal)."""

from __future__ import annotations

from typing import Any

from recovery.db import Database
from recovery.services.cases import decision_lines


def _plan(db: Database, statement: Any, values: dict[str, Any]) -> str:
    compiled = statement.compile(dialect=db.engine.dialect)
    params = compiled.construct_params(values)
    positional = tuple(params[name] for name in compiled.positiontup or ())
    with db.engine.connect() as conn:
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", positional).all()
    return "\n".join(str(row[-1]) for row in rows)


def test_a_customers_paid_renewals_are_read_by_the_customer_index(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    try:
        plan = _plan(db, decision_lines.paid_renewals_statement(), {"customer_id": "cus_1"})
    finally:
        db.dispose()
    assert "ix_invoices_customer_id" in plan, plan
    assert "ix_invoices_status" not in plan, plan
