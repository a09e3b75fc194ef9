"""GET /api/v1/experiments from a known history (SQLite and PostgreSQL): per arm the customers,
amounts, the rate with its Wilson interval, the lift over the holdout with Newcombe's and the
bootstrap's intervals, and a verdict only once the interval excludes zero."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from recovery.adapters.clock import FrozenClock
from recovery.app import create_app
from recovery.domain.stats import newcombe, wilson
from recovery.models import (
    CancelSession,
    ExperimentAssignment,
    ExperimentRouting,
    ExperimentSubject,
    RecoveryCase,
)
from recovery.runtime import Runtime
from recovery.services.registry import build_runtime
from tests.conftest import API_KEY, make_settings

RULES = """
[[experiments]]
key = "dunning-q1"
applies_to = "dunning"
holdout = 0.1
routing = "thompson"
min_share = 0.1
[[experiments.arms]]
name = "smart"
[[experiments.arms]]
name = "email_only"
channels = ["email"]

[[experiments]]
key = "offers-q1"
applies_to = "cancel_flow"
holdout = 0.2
[[experiments.arms]]
name = "pause_only"
offers = ["pause"]
"""


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


def _cases(rt: Runtime, arm: str, recovered: int, total: int, *, recent: int = 0) -> None:
    now = rt.clock.now()
    with rt.db.transaction() as s:
        for i in range(total + recent):
            won = i < recovered
            cid = f"cus_{arm}_{i}"
            case = RecoveryCase(
                invoice_id=f"in_{arm}_{i}",
                customer_id=cid,
                status="recovered" if won else ("lost" if i < total else "retrying"),
                currency="usd",
                amount_due=1000,
                amount_recovered=1000 if won else 0,
                opened_at=now - timedelta(days=40 if i < total else 2),
            )
            s.add(case)
            s.flush()
            s.add(
                ExperimentAssignment(
                    experiment_key="dunning-q1",
                    arm=arm,
                    customer_id=cid,
                    subject=f"case:{case.id}",
                    assigned_at=now,
                )
            )
            s.add(
                ExperimentSubject(
                    experiment_key="dunning-q1",
                    arm=arm,
                    customer_id=cid,
                    case_id=case.id,
                    assigned_at=now,
                )
            )


def _get(rt: Runtime) -> dict[str, Any]:
    client = create_app(runtime=rt).test_client()
    response = client.get("/api/v1/experiments", headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 200
    return {e["key"]: e for e in response.get_json()["data"]}


def test_dunning_results_with_intervals_lift_and_verdict(rt: Runtime) -> None:
    _cases(rt, "holdout", 10, 50)
    _cases(rt, "smart", 35, 50, recent=5)  # 5 still in their window: not in the rate
    _cases(rt, "email_only", 12, 50)
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
    assert smart["lift_money_per_case"] == 500.0  # 700 - 200 minor units per finished case
    money_low, money_high = smart["lift_money_interval"]
    assert money_low > 0 and money_low < 500 < money_high
    [email] = arms["email_only"]["currencies"]
    assert email["verdict"] == "not enough data yet"  # 24 % vs 20 %: the interval spans 0
    [holdout] = arms["holdout"]["currencies"]
    assert "verdict" not in holdout and holdout["recovery_rate"] == 0.2
    assert found["routing_log"][0]["shares"]["smart"] == 0.7


def test_cancel_flow_results_count_sessions_saves_and_cancels(rt: Runtime) -> None:
    now = rt.clock.now()
    with rt.db.transaction() as s:
        for i, (arm, outcome) in enumerate(
            [("holdout", "cancelled")] * 3
            + [("pause_only", "saved_by_pause")] * 2
            + [("pause_only", "cancelled"), ("pause_only", "abandoned")]
        ):
            sid = f"cxs_{i}"
            s.add(
                CancelSession(
                    id=sid,
                    token_hash=f"{i:064d}",
                    source="api",
                    customer_id=f"cus_{i}",
                    subscription_id=f"sub_{i}",
                    return_url="https://example.com",
                    variant=arm,
                    created_at=now,
                    expires_at=now + timedelta(hours=1),
                    decided_at=now,
                    outcome=outcome,
                    currency="usd",
                    mrr_before=2000,
                    mrr_after=2000 if outcome.startswith("saved") else 0,
                )
            )
            s.add(
                ExperimentSubject(
                    experiment_key="offers-q1",
                    arm=arm,
                    customer_id=f"cus_{i}",
                    cancel_session_id=sid,
                    assigned_at=now,
                )
            )
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
