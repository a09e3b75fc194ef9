"""How the demo's history feeds the inbox: renewals paid at once are held back and delivered in
one batch before anything reads the service - and the service ends up with exactly the database
it has when each renewal's events go at once (recovery/devtools/history/simulation.py)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from recovery.adapters.clock import FrozenClock
from recovery.adapters.stripe_fake import FakeStripeGateway
from recovery.devtools import population, snapshot
from recovery.devtools.history import History, simulation
from recovery.services.registry import build_runtime
from tests.conftest import START, make_settings


class DeliversAtOnce(History):
    hold_back_renewals = False


class ForgetsToFlush(History):
    """Holds renewals back but delivers them only with the next other delivery: the daily jobs
    and due actions may run before the service has heard of them."""

    def flush(self) -> None:
        pass


def _play(
    kind: type[History], template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, list[str]], int, int]:
    """(the database's tables, inbox batches, renewals held back) after one history."""
    run = tmp_path / kind.__name__
    run.mkdir()
    shutil.copy(template, run / "history.db")
    rules = run / "demo-rules.toml"
    rules.write_text(population.RULES_TOML, encoding="utf-8")
    settings = make_settings(f"sqlite:///{run / 'history.db'}", run, rules_path=rules)
    clock = FrozenClock(START)
    fake = FakeStripeGateway(clock=clock)
    rt = build_runtime(settings, clock=clock, gateway=fake)
    batches = 0
    receive = simulation.receive_events

    def counted(*args: Any, **kwargs: Any) -> list[bool]:
        nonlocal batches
        batches += 1
        return receive(*args, **kwargs)

    monkeypatch.setattr(simulation, "receive_events", counted)
    try:
        history = kind(rt, fake, clock, customers=40, seed=3, end=START, days=150)
        history.run()
        return snapshot.tables(rt.db.engine), batches, history.renewals_held
    finally:
        monkeypatch.setattr(simulation, "receive_events", receive)
        rt.db.dispose()


def test_held_back_renewals_leave_the_same_database_in_fewer_batches(
    sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at_once, batches_at_once, none_held = _play(
        DeliversAtOnce, sqlite_template, tmp_path, monkeypatch
    )
    held, batches_held, renewals_held = _play(History, sqlite_template, tmp_path, monkeypatch)
    assert none_held == 0 and renewals_held > 50
    # Every row the same (cases, timeline, messages, due actions, mirror, the events themselves
    # - 150 days, so the retention job has deleted old events in both), but when the inbox
    # received the events.
    assert snapshot.differences(at_once, held) == []
    assert sum(map(len, held.values())) > 1_000
    assert batches_held < batches_at_once - renewals_held // 2


def test_renewals_held_past_a_service_read_would_change_the_story(
    sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The comparison above can fail: delivering held renewals late (after the daily jobs and
    due actions that read them) leaves another database."""
    at_once, _, _ = _play(DeliversAtOnce, sqlite_template, tmp_path, monkeypatch)
    late, _, _ = _play(ForgetsToFlush, sqlite_template, tmp_path, monkeypatch)
    assert snapshot.differences(at_once, late) != []
