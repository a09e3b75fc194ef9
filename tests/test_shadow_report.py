"""The shadow report: Stripe's own retries beside what we would have done, for the invoices of
a period - from a shadow-mode run (API, dashboard page) and from mirrored history
(`recovery shadow-replay`), which give the same answer."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from recovery.adapters.clock import FrozenClock
from recovery.adapters.stripe_fake import FakeStripeGateway
from recovery.app import create_app
from recovery.runtime import Runtime
from recovery.services.registry import build_runtime
from tests.conftest import API_KEY, make_settings
from tests.support.dashboard import ADMIN, add_user, login
from tests.support.scenario import Billing, Story

DAY = timedelta(days=1)
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def shadow_rt(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: FakeStripeGateway
) -> Any:
    rt = build_runtime(
        make_settings(database_url, tmp_path, mode="shadow"), clock=clock, gateway=fake_gateway
    )
    yield rt
    rt.db.dispose()


def _stripe_gives_up(story: Story, billing: Billing) -> None:
    """Stripe's end of dunning: the subscription cancelled after the last failed retry."""
    story.fake.cancel_subscription(
        billing.subscription, at_period_end=False, idempotency_key=f"stripe:end:{billing.invoice}"
    )
    story.deliver()


def _history(story: Story) -> dict[str, Billing]:
    """Three renewals that failed on the first day, and Stripe's own retries afterwards."""
    start = story.clock.now()
    stolen = story.customer(brand="visa", amount=1900)  # Visa category 1: never again
    short = story.customer(brand="visa", amount=2900)  # insufficient funds, then lost
    paid = story.customer(brand="mastercard", amount=4900)  # insufficient funds, then paid
    story.deliver()
    story.stripe_charges(stolen.invoice, decline_code=None, network_decline_code="04")
    story.stripe_charges(short.invoice, decline_code="insufficient_funds")
    story.stripe_charges(paid.invoice, decline_code="insufficient_funds")
    for day, billing, decline in (
        (3, stolen, {"decline_code": None, "network_decline_code": "04"}),
        (3, short, {"decline_code": "insufficient_funds"}),
        (3, paid, {}),
        (5, stolen, {"decline_code": None, "network_decline_code": "04"}),
        (5, short, {"decline_code": "insufficient_funds"}),
        (7, short, {"decline_code": "insufficient_funds"}),
    ):
        story.clock.set(start + day * DAY)
        story.run_due()
        story.stripe_charges(billing.invoice, **decline)
    story.clock.set(start + 8 * DAY)
    story.run_due()
    _stripe_gives_up(story, stolen)
    _stripe_gives_up(story, short)
    return {"stolen": stolen, "short": short, "paid": paid}


def _by_invoice(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {i["invoice"]: i for i in report["invoices"]}


def test_the_report_sets_stripes_retries_beside_our_plan(
    shadow_rt: Runtime, fake_gateway: FakeStripeGateway, clock: FrozenClock
) -> None:
    story = Story(shadow_rt, fake_gateway, clock)
    day = clock.now().date().isoformat()
    b = _history(story)
    client = create_app(runtime=shadow_rt).test_client()
    answer = client.get(f"/api/v1/shadow-report?from={day}&to={day}", headers=AUTH)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    report = answer.get_json()
    items = _by_invoice(report)
    assert set(items) == {x.invoice for x in b.values()}
    assert report["mode"] == "shadow" and "Stripe Dashboard" in report["stripe_emails"]

    stolen = items[b["stolen"].invoice]
    assert stolen["stripe"]["retries"] == 2 and stolen["stripe"]["outcome"] == "lost"
    assert stolen["ours"]["retries"] == [], "we never charge a category-1 decline again"
    assert "never" in stolen["ours"]["stopped"]
    avoided = stolen["stripe_retries_we_would_not_make"]
    assert len(avoided) == 2 and {a["kind"] for a in avoided} == {"network_rule"}
    assert "category 1" in avoided[0]["why"]
    assert stolen["lost_with_attempts_left"] == 0
    assert stolen["amount"] == "19.00 USD"

    short = items[b["short"].invoice]
    assert short["stripe"]["retries"] == 3 and short["stripe"]["outcome"] == "lost"
    assert short["ours"]["retries"], "insufficient funds: we plan retries on paydays"
    last_stripe = short["stripe"]["attempts"][-1]["at"]
    assert any(r["at"] > last_stripe for r in short["ours"]["retries"])
    assert short["lost_with_attempts_left"] >= 1
    assert short["ours"]["reminders"] and short["ours"]["reminders"][0]["channel"] == "email"
    # the running service's own record of the case: shadow actions with what they would do
    notes = [a["note"] for a in short["case"]["actions"] if a["status"] == "shadow"]
    assert f"switch off Stripe's own retries of {b['short'].invoice}" in notes

    paid = items[b["paid"].invoice]
    assert paid["stripe"]["outcome"] == "recovered" and paid["stripe"]["retries"] == 1
    paid_at = paid["stripe"]["ended_at"]
    assert all(r["at"] < paid_at for r in paid["ours"]["retries"] + paid["ours"]["reminders"])

    totals = report["totals"]
    assert totals["invoices"] == 3 and totals["stripe_retries"] == 6
    assert totals["stripe_recovered"] == 1 and totals["stripe_lost"] == 2
    assert totals["of_which_network_rules"] >= 2
    assert totals["lost_with_attempts_left"] == 1

    # ---- the same from history: `recovery shadow-replay` reads the mirror only --------------
    env = {
        "RECOVERY_DATABASE_URL": shadow_rt.settings.database_url,
        "RECOVERY_INSTANCE_PATH": str(shadow_rt.settings.instance_path),
        "RECOVERY_MODE": "shadow",
    }
    replay = _replay(shadow_rt, env, days=30, until=(clock.now() + DAY).date().isoformat())
    assert replay["totals"]["invoices"] == 3
    for invoice, item in _by_invoice(replay).items():
        assert item["stripe"] == items[invoice]["stripe"]
        assert (
            item["stripe_retries_we_would_not_make"]
            == items[invoice]["stripe_retries_we_would_not_make"]
        )


def _replay(rt: Runtime, env: dict[str, str], days: int, until: str) -> dict[str, Any]:
    from recovery.cli import main

    args = ["shadow-replay", "--days", str(days), "--until", until]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.output)
    return data


def test_the_dashboard_page_and_bad_periods(
    shadow_rt: Runtime, fake_gateway: FakeStripeGateway, clock: FrozenClock
) -> None:
    story = Story(shadow_rt, fake_gateway, clock)
    day = clock.now().date().isoformat()
    b = _history(story)
    add_user(shadow_rt, ADMIN, "admin")
    client = create_app(runtime=shadow_rt).test_client()
    login(client, ADMIN)
    page = client.get(f"/dashboard/shadow?from={day}&to={day}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert b["stolen"].invoice in html and "category 1" in html
    assert "Lost at Stripe with" in html
    assert "Shadow mode:" in html  # the banner on every page
    assert client.get("/dashboard/shadow?from=2026-13-01").status_code == 400
    api = create_app(runtime=shadow_rt).test_client()
    for query in ("from=2026-11-05&to=2026-11-01", "from=2020-01-01&to=2026-11-01", "to=tomorrow"):
        answer = api.get(f"/api/v1/shadow-report?{query}", headers=AUTH)
        assert answer.status_code == 400 and answer.get_json()["error"]["message"]
