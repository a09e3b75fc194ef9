"""Chaos replay: a whole billing lifecycle delivered shuffled and duplicated ends in exactly the
mirror of in-order delivery, every row of every table, on SQLite and on PostgreSQL.

Stripe promises neither order nor single delivery, and sometimes tells one change with two Event
objects (docs/stripe.md). The mirror keeps the newest state by the event's `created` with a
deterministic tie-break, so the arrival order must not matter. Each test replays the true order
into a fresh database, snapshots the mirror, empties the database, replays the chaotic order
and compares the two snapshots row by row. Figures of the big run go to
artifacts/chaos_replay_<engine>.txt.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from recovery.adapters.deadline import Deadline
from recovery.db import Base
from recovery.models import DueAction, EventStatus, StripeEvent
from recovery.runtime import Claimed, Runtime
from recovery.services.events import mirror, refetch
from recovery.services.events.inbox import receive_events
from tests.support import stripe_payloads as sp
from tests.support.lifecycle import deliveries, generate_lifecycle
from tests.support.mirror_snapshot import MIRROR_TABLES, Snapshot, columns, diff, snapshot

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
BIG_CUSTOMERS = 2_000
BIG_SEED = 20_261_102
DUPLICATE_RATIO = 0.35
# The full run replays ~215,000 deliveries per engine (the true order, then the chaos): a few
# minutes per engine on an idle 2-core machine. It runs in `make test` (so in CI);
# `make chaos` runs it alone.


@functools.cache
def _replays(n_customers: int, seed: int) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    """(true order, chaotic order) as webhook bodies; generated once per session, both engines."""
    events = generate_lifecycle(n_customers, seed)
    in_order = tuple(sp.body_of(evt) for evt in events)
    return in_order, tuple(deliveries(events, seed, DUPLICATE_RATIO, bodies_of_events=in_order))


def _event_ids(bodies: Sequence[bytes]) -> list[str]:
    return [json.loads(body)["id"] for body in bodies]


def _engine(runtime: Runtime) -> str:
    return "postgres" if runtime.db.is_postgres else "sqlite"


def _empty_database(runtime: Runtime) -> None:
    """Back to a freshly migrated database: every table, not just the mirror, so reactions of
    other features start from nothing too, and autoincrement ids restart."""
    tables = Base.metadata.sorted_tables
    with runtime.db.transaction() as session:
        if runtime.db.is_postgres:
            names = ", ".join(t.name for t in tables)
            session.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(tables):  # children before parents (subscription_items)
                session.execute(table.delete())
            has_sequences = session.execute(
                text("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'")
            ).first()
            if has_sequences:
                session.execute(text("DELETE FROM sqlite_sequence"))
    with runtime.db.transaction() as session:
        for table in tables:
            assert session.execute(select(table).limit(1)).first() is None, table.name


def _replay(runtime: Runtime, bodies: Sequence[bytes]) -> tuple[list[bool], float]:
    started = time.perf_counter()
    new = receive_events(runtime.db, bodies, runtime.processing_context, runtime.clock)
    return new, time.perf_counter() - started


def _assert_inbox(runtime: Runtime, bodies: Sequence[bytes], new: list[bool]) -> None:
    """Each distinct event stored exactly once and processed exactly once, without error."""
    unique = set(_event_ids(bodies))
    assert sum(new) == len(unique), "a redelivery was stored as new, or an event was dropped"
    with runtime.db.transaction() as session:
        rows = session.execute(
            select(StripeEvent.id, StripeEvent.status, StripeEvent.attempts, StripeEvent.last_error)
        ).all()
    assert len(rows) == len(unique)
    assert {row.id for row in rows} == unique
    bad = [row for row in rows if (row.status, row.attempts) != (EventStatus.PROCESSED, 1)]
    assert not bad, f"{len(bad)} events not processed exactly once, e.g. {bad[:3]}"


def _assert_same_mirror(expected: Snapshot, actual: Snapshot, label: str) -> None:
    assert sum(len(rows) for rows in expected.values()) > 0
    report = diff(expected, actual, labels=("in order", label))
    assert actual == expected, f"the mirror after {label} delivery differs:\n{report}"


def _converges(
    runtime: Runtime, in_order: Sequence[bytes], chaos: Sequence[bytes], label: str
) -> tuple[Snapshot, float, float]:
    """Replay the true order, snapshot, empty the database, replay `chaos`, compare.
    Returns the mirror and the seconds each pass took."""
    new, ordered_seconds = _replay(runtime, in_order)
    _assert_inbox(runtime, in_order, new)
    expected = snapshot(runtime.db)
    _empty_database(runtime)
    new, chaos_seconds = _replay(runtime, chaos)
    _assert_inbox(runtime, chaos, new)
    _assert_same_mirror(expected, snapshot(runtime.db), label)
    return expected, ordered_seconds, chaos_seconds


def _figures(
    engine: str,
    n_customers: int,
    in_order: Sequence[bytes],
    chaos: Sequence[bytes],
    seconds: tuple[float, float],
    mirrored: Snapshot,
) -> str:
    unique = len(set(_event_ids(chaos)))
    ordered_s, chaos_s = seconds
    lines = [
        f"chaos replay on {engine}: {n_customers} customers, seed {BIG_SEED}",
        f"events (true order)      {len(in_order)}",
        f"unique events delivered  {unique} ({unique - len(in_order)} twin Event objects)",
        f"deliveries (shuffled)    {len(chaos)}",
        f"duplicates               {len(chaos) - unique} ({(len(chaos) - unique) / unique:.1%} "
        "of unique events)",
        f"in-order pass            {ordered_s:.1f} s, {len(in_order) / ordered_s:.0f} events/s",
        f"shuffled pass            {chaos_s:.1f} s, {len(chaos) / chaos_s:.0f} deliveries/s",
        "mirror rows              "
        + ", ".join(f"{name} {len(mirrored[name])}" for name in MIRROR_TABLES),
    ]
    return "\n".join(lines)


@pytest.mark.chaos_full  # `make chaos` runs just this
@pytest.mark.timeout(90 * 60)
def test_two_thousand_customers_shuffled_and_duplicated_end_in_the_in_order_mirror(
    runtime: Runtime,
) -> None:
    in_order, chaos = _replays(BIG_CUSTOMERS, BIG_SEED)
    unique = len(set(_event_ids(chaos)))
    assert (len(chaos) - unique) / unique >= 0.30
    assert unique > len(in_order)  # some changes told by two Event objects
    mirrored, ordered_s, chaos_s = _converges(runtime, in_order, chaos, "shuffled")
    assert len(mirrored["customers"]) == BIG_CUSTOMERS
    engine = _engine(runtime)
    report = _figures(engine, BIG_CUSTOMERS, in_order, chaos, (ordered_s, chaos_s), mirrored)
    print("\n" + report)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"chaos_replay_{engine}.txt").write_text(report + "\n")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_small_lifecycles_converge_whatever_the_order(runtime: Runtime, seed: int) -> None:
    in_order, chaos = _replays(20, seed)
    _converges(runtime, in_order, chaos, f"shuffled (seed {seed})")


def test_reversed_order_converges(runtime: Runtime) -> None:
    """The worst order for newest-wins: every older state arrives after every newer one."""
    in_order, _ = _replays(20, 7)
    _converges(runtime, in_order, in_order[::-1], "reversed")


VERSIONED_OBJECTS = ("customer", "payment_method", "card", "subscription", "invoice")
VERSIONED_TABLES = (
    "customers",
    "payment_methods",
    "subscriptions",
    "subscription_items",
    "invoices",
)


def _last_event_per_object(in_order: Sequence[bytes]) -> list[bytes]:
    """For each versioned object (customer, card, subscription, invoice): the body of the last
    event that states it - the object's true final state."""
    last: dict[str, bytes] = {}
    for body in in_order:
        evt: dict[str, Any] = json.loads(body)
        obj = evt["data"]["object"]
        if obj.get("object") in VERSIONED_OBJECTS and "id" in obj:  # invoice.upcoming has none
            last[obj["id"]] = body
        error = obj.get("last_payment_error") or {}
        if isinstance(error.get("payment_method"), dict):  # a PaymentIntent restates its card
            last[error["payment_method"]["id"]] = body
    return list(dict.fromkeys(last.values()))


def _states(mirrored: Snapshot) -> Snapshot:
    """The versioned tables without the version columns: a refetched row is stamped with the
    fetch time, a row from an event with the event's `created`; the state is what must match."""
    out: Snapshot = {}
    for name in VERSIONED_TABLES:
        keep = [i for i, col in enumerate(columns(name)) if not col.startswith("version_")]
        out[name] = [tuple(row[i] for i in keep) for row in mirrored[name]]
    return out


def _run_refetches(runtime: Runtime, finals: Sequence[bytes]) -> int:
    """Do what the worker does with the mirror's `stripe.refetch` actions, against a Stripe
    that holds each object's current state. Returns how many objects were re-read."""
    gateway = runtime.gateway
    for body in finals:
        gateway.put(json.loads(body)["data"]["object"])
    with runtime.db.transaction() as session:
        actions = session.scalars(
            select(DueAction).where(DueAction.kind == mirror.REFETCH_KIND).order_by(DueAction.id)
        ).all()
        claimed = [
            Claimed(a.id, a.kind, a.subject, a.dedupe_key, a.attempts, a.payload, a.due_at)
            for a in actions
        ]
    for action in claimed:  # its three steps, as the worker runs them
        with runtime.db.transaction() as session:
            plan = refetch.decide_refetch(runtime.action_context(session), action)
        assert plan is not None
        fresh = refetch.call_refetch(runtime.providers, plan, Deadline(60))
        with runtime.db.transaction() as session:
            refetch.record_refetch(runtime.action_context(session), action, plan, fresh)
    return len(claimed)


def test_in_order_delivery_plus_refetches_keeps_each_objects_final_state(
    runtime: Runtime,
) -> None:
    """Newest-wins must end on the *true* last state, also within one second. Stripe stamps
    several states of one object with one second (a renewal finalized and charged at once; for
    Automations users invoice.payment_failed without next_payment_attempt, then invoice.updated
    with it); the tie-break alone can keep the older one, so the mirror asks Stripe (a
    `stripe.refetch` due action). After those ran, the mirror must equal the mirror of each
    object's last event alone. Seed 6 ends one invoice mid-dunning right after such a pair, as
    many invoices are on any given day."""
    in_order, _ = _replays(40, 6)
    finals = _last_event_per_object(in_order)
    _replay(runtime, in_order)
    refetched = _run_refetches(runtime, finals)
    whole = _states(snapshot(runtime.db))
    _empty_database(runtime)
    _replay(runtime, finals)
    final = _states(snapshot(runtime.db))
    report = diff(final, whole, labels=("last events", "whole lifecycle"))
    assert whole == final, f"the mirror lost a final state ({refetched} refetches ran):\n{report}"
