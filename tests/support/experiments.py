"""A known experiment history for the results, dashboard and browser tests: a Thompson dunning
experiment with a holdout and two arms, and a cancel-flow experiment with a holdout."""

from __future__ import annotations

from datetime import timedelta

from recovery.models import (
    CancelSession,
    ExperimentAssignment,
    ExperimentRouting,
    ExperimentSubject,
    RecoveryCase,
)
from recovery.runtime import Runtime

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


def add_cases(rt: Runtime, arm: str, recovered: int, total: int, *, recent: int = 0) -> None:
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
                closed_at=now - timedelta(days=39) if won else None,
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


def add_sessions(rt: Runtime) -> None:
    """3 holdout sessions cancelled; in pause_only 2 saves, 1 cancel and 1 left undecided."""
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


def add_routing(rt: Runtime) -> None:
    with rt.db.transaction() as s:
        s.add(
            ExperimentRouting(
                experiment_key="dunning-q1",
                at=rt.clock.now(),
                shares={"holdout": 0.1, "smart": 0.7, "email_only": 0.2},
                posteriors={
                    "posteriors": [
                        {
                            "arm": "smart",
                            "recovered": 35,
                            "not_recovered": 15,
                            "mean": 0.6923,
                            "p_best": 0.99,
                        },
                        {
                            "arm": "email_only",
                            "recovered": 12,
                            "not_recovered": 38,
                            "mean": 0.25,
                            "p_best": 0.01,
                        },
                    ]
                },
            )
        )


def seed(rt: Runtime) -> None:
    add_cases(rt, "holdout", 10, 50)
    add_cases(rt, "smart", 35, 50, recent=5)  # 5 still in their window: not in the rate
    add_cases(rt, "email_only", 12, 50)
    add_sessions(rt)
    add_routing(rt)
