"""Cancel-flow experiments through the pages (SQLite and PostgreSQL): an arm limits the offers
shown, the holdout goes straight to the cancel confirmation with no offer, and the session
names its experiment and arm."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from recovery.adapters.clock import FrozenClock
from recovery.models import ExperimentAssignment, ExperimentSubject
from tests.conftest import API_KEY
from tests.support.cancel_flow import Flow, make_flow, session_row

HOLDOUT_ALL = """
[[experiments]]
key = "no-offers"
applies_to = "cancel_flow"
holdout = 0.999999
[[experiments.arms]]
name = "every_offer"
"""

DISCOUNT_ONLY = """
[[experiments]]
key = "discount-only"
applies_to = "cancel_flow"
holdout = 0
[[experiments.arms]]
name = "discount"
offers = ["discount"]
[[experiments.arms]]
name = "discount_too"
offers = ["discount"]
"""


def _flow(
    database_url: str, tmp_path: Path, clock: FrozenClock, gateway: Any, rules: str
) -> Iterator[Flow]:
    made = make_flow(database_url, tmp_path, clock, gateway, rules_extra=rules)
    yield made
    made.runtime.db.dispose()


@pytest.fixture
def holdout_flow(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any
) -> Iterator[Flow]:
    yield from _flow(database_url, tmp_path, clock, fake_gateway, HOLDOUT_ALL)


@pytest.fixture
def discount_flow(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any
) -> Iterator[Flow]:
    yield from _flow(database_url, tmp_path, clock, fake_gateway, DISCOUNT_ONLY)


def test_the_holdout_goes_straight_to_the_cancel_confirmation(holdout_flow: Flow) -> None:
    flow = holdout_flow
    page, started = flow.start()
    first = page.get()
    assert first.status_code == 303 and first.headers["Location"].endswith("/offer")
    page.get("/offer")
    text = page.text()
    assert "Confirm your cancellation" in text and "Before you go" not in text
    assert "Pause until" not in text and "discount" not in text.lower()
    assert page.post("/cancel").status_code == 303
    row = session_row(flow, started["id"])
    assert (row.variant, row.offer_shown, row.outcome) == ("holdout", None, "cancelled")
    body = flow.client.get(
        f"/api/v1/cancel-sessions/{started['id']}",
        headers={"Authorization": f"Bearer {API_KEY}"},
    ).get_json()
    assert body["experiment"] == {"key": "no-offers", "arm": "holdout"}
    with flow.runtime.db.transaction() as s:
        [assigned] = s.scalars(select(ExperimentAssignment)).all()
        assert (assigned.arm, assigned.subject) == ("holdout", f"cancel_session:{started['id']}")


def test_a_holdout_subscriber_can_still_keep_their_subscription(holdout_flow: Flow) -> None:
    page, started = holdout_flow.start()
    page.get("/offer")
    assert "You can also keep your subscription" in page.text()
    assert page.post("/keep").status_code == 303
    assert session_row(holdout_flow, started["id"]).outcome == "abandoned"


def test_an_arm_shows_only_its_offers(discount_flow: Flow) -> None:
    flow = discount_flow
    page, started = flow.start()
    assert page.get().status_code == 200  # the survey, as without an experiment
    # too_expensive prefers a downgrade; this arm allows only the discount.
    assert page.post("", {"reason": "too_expensive"}).status_code == 303
    page.get("/offer")
    assert "A discount if you stay" in page.text()
    row = session_row(flow, started["id"])
    assert (row.variant, row.offer_shown) in {
        ("discount", "discount"),
        ("discount_too", "discount"),
    }
    with flow.runtime.db.transaction() as s:
        [subject] = s.scalars(select(ExperimentSubject)).all()
        assert (subject.cancel_session_id, subject.arm) == (started["id"], row.variant)
