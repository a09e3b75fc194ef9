"""The mirror updates of a batch of events, worked out in memory and written together.

Most events in a batch do nothing but update the mirror (no reaction is needed: see
services/events/gates.py). For those, the batch reads every row they touch once (one SELECT
per table, `FOR UPDATE` on PostgreSQL), decides in memory - event by event, in the batch's
order, with the same rules as the one-event path (mirror.py: newest version wins, a tie asks
Stripe, a charge and its PaymentIntent merge field by field) - which states win, and writes
each winner once, one statement per table (`flush`), before any event whose reactions must run
reads the mirror. The end state is the one the one-event path gives; what each event changed
(`Changes`) is worked out the same way, so the gates decide alike.

`plan` is a dry run, for deciding: `commit` keeps it (the event takes this path), or it is
dropped (the event runs its reactions, on the one-event path, after a `flush`; `forget` then
drops the rows it wrote from memory).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select, tuple_
from sqlalchemy.orm import Session

from recovery.db import as_columns, dialect_insert, in_list, insert_from_json, json_rows
from recovery.models import InvoicePayment, PaymentAttempt, Subscription, SubscriptionItem
from recovery.runtime import Changes
from recovery.services.cases import cards
from recovery.services.events import mirror, pipeline
from recovery.services.events.mirror_handlers import Attempt, Link, Op
from recovery.services.events.pipeline import Write

Key = tuple[Any, str]  # (model, id)
_ATTEMPT_COLUMNS = (*mirror.ATTEMPT_FIELDS, "status", "version_ts")


@dataclass
class Plan:
    """What one event would change: rows that win, attempts merged, links, ties."""

    stored: dict[Key, mirror.Stored] = field(default_factory=dict)
    writes: dict[Key, mirror.Versioned] = field(default_factory=dict)
    attempts: dict[str, dict[str, Any]] = field(default_factory=dict)
    links: set[tuple[str, str]] = field(default_factory=set)
    ties: list[tuple[Any, str, int]] = field(default_factory=list)


# Each write's statement: on SQLite run once a row; on PostgreSQL for a set of `columns`, the
# rows as one JSON text (recovery.db.insert_from_json) - one statement a table, where psycopg
# ran one a row (in a worker's round of retries: the charges, their links and paid invoices).


def _insert(dialect: str, table: Any, columns: tuple[str, ...]) -> Any:
    return insert_from_json(table, columns) if columns else dialect_insert(dialect)(table)


@functools.cache
def _upsert(model: Any, dialect: str, columns: tuple[str, ...] = ()) -> Any:
    """INSERT ... ON CONFLICT (id) DO UPDATE, only over an older version (another worker may
    have inserted the row since it was read)."""
    table = model.__table__
    stmt = _insert(dialect, table, columns)
    newer = tuple_(table.c.version_ts, table.c.version_tiebreak) < tuple_(
        stmt.excluded.version_ts, stmt.excluded.version_tiebreak
    )
    updated = {c.name: stmt.excluded[c.name] for c in table.columns if c.name != "id"}
    return stmt.on_conflict_do_update(index_elements=["id"], set_=updated, where=newer)


@functools.cache
def _replace_attempt(dialect: str, columns: tuple[str, ...] = ()) -> Any:
    table = PaymentAttempt.__table__
    stmt = _insert(dialect, table, columns)
    updated = {c.name: stmt.excluded[c.name] for c in table.columns if c.name != "id"}
    return stmt.on_conflict_do_update(index_elements=["id"], set_=updated)


@functools.cache
def _insert_attempt(dialect: str, columns: tuple[str, ...] = ()) -> Any:
    table = PaymentAttempt.__table__
    stmt = _insert(dialect, table, columns).on_conflict_do_nothing(index_elements=["id"])
    return stmt.returning(table.c.id)


@functools.cache
def _insert_link(dialect: str, columns: tuple[str, ...] = ()) -> Any:
    stmt = _insert(dialect, InvoicePayment.__table__, columns)
    return stmt.on_conflict_do_nothing(index_elements=["invoice_id", "payment_intent_id"])


@functools.cache
def _insert_items(dialect: str, columns: tuple[str, ...] = ()) -> Any:
    return _insert(dialect, _ITEMS, columns)


def _write(
    dialect: str,
    statement: Callable[[str, tuple[str, ...]], Any],
    table: Any,
    rows: list[dict[str, Any]],
    returning: bool = False,
) -> list[Write]:
    if dialect != "postgresql" or not rows:
        return [Write(statement(dialect, ()), rows, returning)]
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row), []).append(row)
    return [
        Write(statement(dialect, columns), [{"rows": json_rows(table, columns, group)}], returning)
        for columns, group in groups.items()
    ]


@functools.cache
def _rows_statement(model: Any, dialect: str) -> Any:
    lock = dialect == "postgresql"
    columns = [model.id, model.version_ts, model.version_tiebreak]
    columns += [getattr(model, name) for name in mirror.WATCHED[model]]
    stmt = select(*columns).where(in_list(model.id, "ids", dialect))
    return stmt.order_by(model.id).with_for_update() if lock else stmt.order_by(model.id)


@functools.cache
def _attempts_statement(dialect: str) -> Any:
    lock = dialect == "postgresql"
    columns = [PaymentAttempt.id, *(getattr(PaymentAttempt, c) for c in _ATTEMPT_COLUMNS)]
    stmt = select(*columns).where(in_list(PaymentAttempt.id, "ids", dialect))
    stmt = stmt.order_by(PaymentAttempt.id)
    return stmt.with_for_update() if lock else stmt


_ITEMS: Any = SubscriptionItem.__table__
_ITEM_COLUMNS = tuple(c.name for c in _ITEMS.columns)
Items = frozenset[tuple[Any, ...]]  # a subscription's items as rows, in _ITEM_COLUMNS order


def _items_of(rows: Iterable[dict[str, Any]]) -> Items:
    return frozenset(tuple(row[c] for c in _ITEM_COLUMNS) for row in rows)


@functools.cache
def _delete_items(dialect: str) -> Any:
    return delete(_ITEMS).where(in_list(_ITEMS.c.subscription_id, "ids", dialect))


@functools.cache
def _items_statement(dialect: str) -> Any:
    return select(*_ITEMS.columns).where(in_list(_ITEMS.c.subscription_id, "ids", dialect))


@functools.cache
def _links_statement(dialect: str) -> Any:
    table = InvoicePayment.__table__
    return select(table.c.invoice_id, table.c.payment_intent_id).where(
        in_list(table.c.invoice_id, "ids", dialect)
    )


class MirrorBatch:
    def __init__(self, session: Session, dialect: str, *, keeps_writes: bool = False) -> None:
        """`keeps_writes`: nothing the batch writes is rolled back alone (a failure anywhere
        rolls back the whole batch and drops this object), so what it wrote is known to be in
        the database for the rest of the batch."""
        self.session, self.dialect = session, dialect
        self._lock = dialect == "postgresql"
        self._keeps_writes = keeps_writes
        # Links in the database: most invoice events restate a link stored long ago (a third
        # of the webhook mix's statements were such inserts, each ignored as a conflict).
        self._links: set[tuple[str, str]] = set()
        self._stored: dict[Key, mirror.Stored | None] = {}
        self._attempts: dict[str, dict[str, Any] | None] = {}
        self._in_db: set[str] = set()  # attempts the database holds (so: merge on write)
        # The items the database holds for the batch's stored subscriptions (locked with them on
        # PostgreSQL): a subscription's update restates them unchanged most of the time, and
        # replacing them was two statements (a DELETE and an INSERT) on every write.
        self._items: dict[str, Items] = {}
        self._pending = Plan()
        self._writing = Plan()  # what the flush under way writes (forgotten if it fails)

    # ---- reading ---------------------------------------------------------------------------

    def prefetch(self, ops: Iterable[Op]) -> None:
        """Read (and lock) every row these ops touch, one statement per table."""
        wanted: dict[Any, set[str]] = {}
        attempts: set[str] = set()
        links: set[tuple[str, str]] = set()
        states = 0  # of subscriptions
        for op in ops:
            if isinstance(op, mirror.Versioned):
                wanted.setdefault(op.model, set()).add(op.oid)
                states += op.model is Subscription
                links.update((op.oid, intent) for intent in op.links)
            elif isinstance(op, Attempt):
                attempts.add(op.state.id)
            else:
                links.add((op.invoice_id, op.payment_intent_id))
        for model, ids in wanted.items():
            self._read(model, sorted(ids - {k[1] for k in self._stored if k[0] is model}))
        if states > 1:  # a lone state is written at once: reading its items would not pay
            stored = {k[1] for k, v in self._stored.items() if k[0] is Subscription and v}
            self._read_items(sorted(stored - set(self._items)))
        self._read_attempts(sorted(attempts - set(self._attempts)))
        if len(links) > 1:  # one link is as cheap to insert as to look up
            invoices = sorted({invoice for invoice, _ in links})
            found = self.session.execute(_links_statement(self.dialect), {"ids": invoices})
            self._links.update((row[0], row[1]) for row in found)

    def _read(self, model: Any, ids: list[str]) -> None:
        if not ids:
            return
        found = {}
        for row in self.session.execute(_rows_statement(model, self.dialect), {"ids": ids}):
            watched = dict(zip(mirror.WATCHED[model], row[3:], strict=True))
            found[row[0]] = mirror.Stored(mirror.Version(row[1], row[2]), watched)
        for oid in ids:
            self._stored[(model, oid)] = found.get(oid)

    def _read_items(self, subscription_ids: list[str]) -> None:
        if not subscription_ids:
            return
        found: dict[str, list[dict[str, Any]]] = {oid: [] for oid in subscription_ids}
        for row in self.session.execute(
            _items_statement(self.dialect), {"ids": subscription_ids}
        ).mappings():
            found[row["subscription_id"]].append(dict(row))
        self._items.update((oid, _items_of(rows)) for oid, rows in found.items())

    def _read_attempts(self, ids: list[str]) -> None:
        if not ids:
            return
        for row in self.session.execute(_attempts_statement(self.dialect), {"ids": ids}):
            self._attempts[row[0]] = dict(zip(_ATTEMPT_COLUMNS, row[1:], strict=True))
            self._in_db.add(row[0])
        for oid in ids:
            self._attempts.setdefault(oid, None)

    def _stored_row(self, plan: Plan, key: Key) -> mirror.Stored | None:
        if key in plan.stored:
            return plan.stored[key]
        if key not in self._stored:
            self._read(key[0], [key[1]])
        return self._stored[key]

    def _stored_attempt(self, plan: Plan, oid: str) -> dict[str, Any] | None:
        if oid in plan.attempts:
            return plan.attempts[oid]
        if oid not in self._attempts:
            self._read_attempts([oid])
        return self._attempts[oid]

    # ---- deciding ---------------------------------------------------------------------------

    def plan(self, ops: list[Op], changes: Changes) -> Plan:
        """What these ops would write, as the one-event path would decide it, given what the
        batch holds so far; `changes` gets what moved. Nothing is kept until `commit`."""
        plan = Plan()
        for op in ops:
            if isinstance(op, mirror.Versioned):
                self._plan_row(plan, op, changes)
            elif isinstance(op, Link):
                plan.links.add((op.invoice_id, op.payment_intent_id))
            else:
                self._plan_attempt(plan, op, changes)
        return plan

    def _plan_row(self, plan: Plan, op: mirror.Versioned, changes: Changes) -> None:
        for intent in op.links:
            plan.links.add((op.oid, intent))
        key = (op.model, op.oid)
        stored = self._stored_row(plan, key)
        if stored is not None:
            if mirror.is_tie(stored.version, op.version):
                plan.ties.append((op.model, op.oid, op.version.ts))
            if op.version <= stored.version:
                return
        moved = mirror.moved_columns(op.model, stored, op.values)
        mirror.note(changes, op.table, op.oid, moved)
        watched = {name: op.values.get(name) for name in mirror.WATCHED[op.model]}
        plan.stored[key] = mirror.Stored(op.version, watched)
        plan.writes[key] = op

    def _plan_attempt(self, plan: Plan, op: Attempt, changes: Changes) -> None:
        state, ts = op.state, op.ts
        new_values = mirror.attempt_values(state)
        stored = self._stored_attempt(plan, state.id)
        if stored is None:
            row = {**new_values, "status": state.status, "version_ts": ts}
        else:
            row = mirror.merged_attempt(stored, new_values, state.status, ts)
        changes.mirrored.add(("payment_attempts", state.id))
        plan.attempts[state.id] = row

    def commit(self, plan: Plan) -> None:
        self._stored.update(plan.stored)
        self._attempts.update(plan.attempts)
        pending = self._pending
        pending.writes.update(plan.writes)
        pending.attempts.update(plan.attempts)
        pending.links |= plan.links
        pending.ties += plan.ties

    def forget(self, mirrored: Iterable[tuple[str, str]], *, items: bool = True) -> None:
        """Rows written outside the batch (an event run on the one-event path): read them
        again when next needed. `items`: whether its subscriptions' items may have been written
        outside the batch too (only a mirror handler run on its own writes them)."""
        for table, oid in mirrored:
            if table == "payment_attempts":
                self._attempts.pop(oid, None)
                self._in_db.discard(oid)
            if table == "subscriptions" and items:
                self._items.pop(oid, None)
            for key in [k for k in self._stored if k[1] == oid and k[0].__tablename__ == table]:
                del self._stored[key]

    def forget_pending(self) -> None:
        """The pending writes failed and rolled back: forget what they put in memory - those
        of the flush that failed included (forgetting only what was pending after it, as
        before, left its rows in memory as if stored: the run's events, replayed one by one,
        then found nothing to write, and were marked processed without their rows)."""
        for pending in (self._pending, self._writing):
            for key in pending.writes:
                self._stored.pop(key, None)
                self._items.pop(key[1], None)
            for oid in pending.attempts:
                self._attempts.pop(oid, None)
                self._in_db.discard(oid)
        self._pending, self._writing = Plan(), Plan()

    # ---- writing -----------------------------------------------------------------------------

    def flush(self) -> None:
        """Write what is pending: one statement per table (executemany); on PostgreSQL, when
        nothing the batch writes is rolled back alone, all of them in one round trip
        (services/events/pipeline.py)."""
        pending = self._writing = self._pending
        self._pending = Plan()
        cards.forget(self.session)  # a card or a customer read before may be another now
        dialect = self.dialect
        writes: list[Write] = []
        links = pending.links - self._links
        if links:
            rows = [{"invoice_id": i, "payment_intent_id": p} for i, p in sorted(links)]
            writes += _write(dialect, _insert_link, InvoicePayment.__table__, rows)
            if self._keeps_writes:
                self._links |= links
        by_model: dict[Any, list[dict[str, Any]]] = {}
        items: list[dict[str, Any]] = []
        replaced: list[str] = []
        for (model, oid), write in pending.writes.items():
            values = {
                "id": oid,
                **write.values,
                "version_ts": write.version.ts,
                "version_tiebreak": write.version.tiebreak,
            }
            by_model.setdefault(model, []).append(as_columns(model, values))
            if write.items is not None and self._items_moved(oid, write.items):
                replaced.append(oid)
                items += write.items
        for model, rows in by_model.items():
            upsert = functools.partial(_upsert, model)
            writes += _write(dialect, upsert, model.__table__, rows)
        if replaced:
            writes.append(Write(_delete_items(dialect), [{"ids": replaced}]))
            writes += _write(dialect, _insert_items, _ITEMS, items)
        new: list[dict[str, Any]] = []
        if pending.attempts:
            known: list[dict[str, Any]] = []
            for oid, row in pending.attempts.items():
                (known if oid in self._in_db else new).append(
                    {"id": oid, "version_tiebreak": "", **row}
                )
            attempts = PaymentAttempt.__table__
            writes += _write(dialect, _replace_attempt, attempts, known)
            writes += _write(dialect, _insert_attempt, attempts, new, returning=True)
        inserted = self._send(writes)
        if new:  # (only the new attempts' writes return rows)
            self._merge_conflicts(new, {oid for found in inserted for oid in found})
            self._in_db.update(row["id"] for row in new)
        self._in_db.update(pending.attempts)
        for model, oid, ts in pending.ties:
            mirror.refetch_later(self.session, model, oid, ts)
        self._writing = Plan()

    def _send(self, writes: list[Write]) -> list[list[Any]]:
        if self._lock and self._keeps_writes:
            return pipeline.send(self.session, writes)
        results = []
        for write in writes:
            if not write.rows:
                continue
            # (one row - a PostgreSQL write's JSON text - is one statement, not a list of them)
            rows = write.rows[0] if len(write.rows) == 1 else list(write.rows)
            if write.returning:
                results.append(list(self.session.scalars(write.statement, rows)))
            else:
                self.session.execute(write.statement, rows)
        return results

    def _merge_conflicts(self, new: list[dict[str, Any]], inserted: set[str]) -> None:
        for row in new:
            oid = row["id"]
            if oid not in inserted:  # another worker stored it meanwhile: merge into it
                values = {k: row[k] for k in mirror.ATTEMPT_FIELDS}
                mirror.merge_attempt(self.session, oid, values, row["status"], row["version_ts"])

    def _items_moved(self, oid: str, items: Iterable[dict[str, Any]]) -> bool:
        """Whether a subscription's items must be replaced: unless the database is known to
        hold these very rows. Known afterwards only if nothing the batch writes is rolled back
        alone (`keeps_writes`)."""
        new = _items_of(items)
        if self._items.get(oid) == new:
            return False
        if self._keeps_writes:
            self._items[oid] = new
        else:
            self._items.pop(oid, None)
        return True
