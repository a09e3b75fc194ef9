"""A case's experiment placement is read once per unit of work (the retry decision, the case's
scheduling and the reminders planner each ask for it), and never remembered past a savepoint
that rolled back: a holdout case must not be treated as placed (or unplaced) by mistake.
SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from recovery.adapters.clock import FrozenClock
from recovery.runtime import Runtime
from recovery.services.experiments.assignment import place_case, placement_of_case
from recovery.services.registry import build_runtime
from tests.conftest import make_settings

HOLDOUT_ALL = """
[[experiments]]
key = "hands-off"
applies_to = "dunning"
holdout = 0.999999
[[experiments.arms]]
name = "ours"
"""


@pytest.fixture
def rt(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any
) -> Iterator[Runtime]:
    path = tmp_path / "rules.toml"
    path.write_text(HOLDOUT_ALL)
    runtime = build_runtime(
        make_settings(database_url, tmp_path, rules_path=path), clock=clock, gateway=fake_gateway
    )
    yield runtime
    runtime.db.dispose()


def test_a_placement_is_read_once_per_transaction(rt: Runtime, clock: FrozenClock) -> None:
    with rt.db.transaction() as s:
        place_case(s, rt.rules, 7, "cus_7", clock.now())
    reads: list[str] = []

    @event.listens_for(rt.db.engine, "before_cursor_execute")
    def count(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        if "experiment_subjects" in statement:
            reads.append(statement)

    with rt.db.transaction() as s:
        first = placement_of_case(s, rt.rules, 7)
        again = placement_of_case(s, rt.rules, 7)
    assert first is not None and first.holdout and again == first
    assert len(reads) == 1
    with rt.db.transaction() as s:  # a new transaction reads again
        assert placement_of_case(s, rt.rules, 7) == first
    assert len(reads) == 2


def test_a_placement_rolled_back_is_not_remembered(rt: Runtime, clock: FrozenClock) -> None:
    with rt.db.transaction() as s:
        assert placement_of_case(s, rt.rules, 8) is None
        nested = s.begin_nested()  # one event's savepoint: it places the case, then fails
        placed = place_case(s, rt.rules, 8, "cus_8", clock.now())
        assert placed is not None and placed.holdout
        assert placement_of_case(s, rt.rules, 8) == placed  # written: read again, not None
        nested.rollback()
        assert placement_of_case(s, rt.rules, 8) is None  # the placement is gone again
        with s.begin_nested():  # the event again, this time kept
            place_case(s, rt.rules, 8, "cus_8", clock.now())
        assert placement_of_case(s, rt.rules, 8) == placed
    with rt.db.transaction() as s:
        assert placement_of_case(s, rt.rules, 8) == placed
