"""GET /api/v1/experiments from a known history (SQLite and PostgreSQL): per arm the customers,
amounts, the rate with its Wilson interval, the lift over the holdout with Newcombe's and the
bootstrap's intervals, and a verdict only once the interval excludes zero."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recovery.adapters.clock import FrozenClock
from recovery.app import create_app
from recovery.domain.stats import newcombe, wilson
from recovery.models import (
    ExperimentRouting,
)
from recovery.runtime import Runtime
from recovery.services.registry import build_runtime
from tests.conftest import API_KEY, make_settings
from tests.support.experiments import RULES, add_cases, add_sessions


@pytest.fixture
def rt(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any
) -> Iterator[Runtime]:
    path = tmp_path / "rules.toml"
    path.write_text(RULES)
    runtime = build_runtime(
        make_settings(database_url, tmp_path, rules_path=path), clock=clock, gateway=fake_gateway
    )
    yield runtime
    runtime.db.dispose()


def _get(rt: Runtime) -> dict[str, Any]:
    client = create_app(runtime=rt).test_client()
    response = client.get("/api/v1/experiments", headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 200
    return {e["key"]: e for e in response.get_json()["data"]}


def test_dunning_results_with_intervals_lift_and_verdict(rt: Runtime) -> None:
    add_cases(rt, "holdout", 10, 50)
    add_cases(rt, "smart", 35, 50, recent=5)  # 5 still in their window: not in the rate
    add_cases(rt, "email_only", 12, 50)
    with rt.db.transaction() as s:
        s.add(
            ExperimentRouting(
                experiment_key="dunning-q1",
                at=rt.clock.now(),
                shares={"holdout": 0.1, "smart": 0.7, "email_only": 0.2},
                posteriors={"posteriors": [{"arm": "smart", "p_best": 1.0}]},
            )
        )
    found = _get(rt)["dunning-q1"]
    assert (found["routing"], found["holdout"], found["min_share"]) == ("thompson", 0.1, 0.1)
    arms = {a["name"]: a for a in found["arms"]}
    assert list(arms) == ["holdout", "smart", "email_only"]
    assert arms["smart"]["share"] == 0.7 and arms["holdout"]["share"] == 0.1
    [smart] = arms["smart"]["currencies"]
    assert smart["cases"] == 55
    assert arms["smart"]["customers"] == 55
    assert (smart["failed_amount"], smart["recovered_count"], smart["recovered_amount"]) == (
        55000,
        35,
        35000,
    )
    assert (smart["finished_cases"], smart["finished_recovered"], smart["recovery_rate"]) == (
        50,
        35,
        0.7,
    )
    rate = wilson(35, 50)
    assert smart["recovery_rate_interval"] == [round(rate.low, 4), round(rate.high, 4)]
    assert smart["lift_points"] == 0.5
    points = newcombe(35, 50, 10, 50)
    assert smart["lift_points_interval"] == [round(points.low, 4), round(points.high, 4)]
    assert smart["verdict"] == "better than the holdout"
    # Recovered 39 days ago, no cancellation, no invoice due since: durable at 30 days, the
    # 60- and 90-day windows still open.
    assert smart["durable_recoveries"] == [
        {"days": 30, "held": 35, "not_held": 0, "pending": 0},
        {"days": 60, "held": 0, "not_held": 0, "pending": 35},
        {"days": 90, "held": 0, "not_held": 0, "pending": 35},
    ]
    assert smart["lift_money_per_case"] == 500.0  # 700 - 200 minor units per finished case
    money_low, money_high = smart["lift_money_interval"]
    assert money_low > 0 and money_low < 500 < money_high
    [email] = arms["email_only"]["currencies"]
    assert email["verdict"] == "not enough data yet"  # 24 % vs 20 %: the interval spans 0
    [holdout] = arms["holdout"]["currencies"]
    assert "verdict" not in holdout and holdout["recovery_rate"] == 0.2
    assert found["routing_log"][0]["shares"]["smart"] == 0.7


def test_cancel_flow_results_count_sessions_saves_and_cancels(rt: Runtime) -> None:
    add_sessions(rt)
    found = _get(rt)["offers-q1"]
    arms = {a["name"]: a for a in found["arms"]}
    pause = arms["pause_only"]
    assert (pause["sessions"], pause["saves"], pause["cancels"], pause["save_rate"]) == (
        4,
        2,
        1,
        0.6667,
    )
    assert pause["validated_saves"][0] == {"days": 30, "held": 0, "not_held": 0, "pending": 2}
    assert pause["lift_points"] == 0.6667 and pause["verdict"] == "not enough data yet"
    assert arms["holdout"]["save_rate"] == 0.0
    from recovery.domain.experiments import Outcomes
    from recovery.services.experiments import routing

    experiment = rt.rules.experiments.get("offers-q1")
    assert experiment is not None
    with rt.db.reading() as s:
        counts = routing.cancel_flow_outcomes(s, experiment)
    assert counts == {"holdout": Outcomes(0, 3), "pause_only": Outcomes(2, 1)}
