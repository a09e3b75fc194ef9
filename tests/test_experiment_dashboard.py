"""/dashboard/experiments: the table, the server-side chart and the CSV export from a known
history (through the app), and in headless Chromium at 1280 and 390 px with axe-core."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recovery.adapters.clock import FrozenClock
from recovery.app import create_app
from recovery.runtime import Runtime
from recovery.services.registry import build_runtime
from tests.conftest import make_settings
from tests.support.a11y import assert_accessible
from tests.support.browser import Served, chromium, shot
from tests.support.dashboard import ADMIN, PASSWORD, VIEWER, add_user, login
from tests.support.experiments import RULES, seed


def _runtime(url: str, tmp_path: Path, clock: FrozenClock, gateway: Any, **extra: Any) -> Runtime:
    path = tmp_path / "rules.toml"
    path.write_text(RULES)
    settings = make_settings(url, tmp_path, rules_path=path, **extra)
    return build_runtime(settings, clock=clock, gateway=gateway)


@pytest.fixture
def rt(sqlite_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any) -> Iterator[Runtime]:
    runtime = _runtime(sqlite_url, tmp_path, clock, fake_gateway)
    seed(runtime)
    yield runtime
    runtime.db.dispose()


def test_the_page_shows_each_experiment_as_a_table_and_a_chart(rt: Runtime) -> None:
    client = create_app(runtime=rt).test_client()
    add_user(rt, VIEWER, "viewer")
    login(client, VIEWER)
    html = client.get("/dashboard/experiments").get_data(as_text=True)
    assert 'aria-current="page">Experiments</a>' in html
    assert html.count("<svg") == 4  # two experiments, each drawn wide and for a phone
    assert 'aria-label="dunning-q1: Recovery rate by arm (USD)"' in html
    # the chart shows one currency of several: its caption says which, in words a reader sees
    assert '<p class="hint">Recovery rate by arm (USD)</p>' in html
    assert "better than the holdout" in html and "not enough data yet" in html
    assert "70.0 %" in html and "70 %" in html  # smart's recovery rate
    assert "+50.0 points" in html  # its lift over the holdout
    assert "35 held 30 days" in html  # its recoveries that held
    assert "Chance of being best" in html and "99.0 %" in html  # the routing log
    assert "Save rate by arm" in html and "66.7 %" in html


def test_the_csv_export_has_a_row_per_arm_and_currency(rt: Runtime) -> None:
    client = create_app(runtime=rt).test_client()
    add_user(rt, VIEWER, "viewer")
    login(client, VIEWER)
    response = client.get("/dashboard/experiments.csv")
    assert response.status_code == 200
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    smart = next(r for r in rows if r["arm"] == "smart")
    assert (smart["currency"], smart["failed_amount"], smart["rate"]) == ("usd", "550.00", "0.7")
    assert smart["verdict"] == "better than the holdout"
    pause = next(r for r in rows if r["arm"] == "pause_only")
    assert (pause["sessions"], pause["saves"], pause["cancels"]) == ("4", "2", "1")


@pytest.mark.slow
def test_the_page_in_a_browser_at_1280_and_390_px_passes_axe(
    sqlite_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any
) -> None:
    served = Served()
    runtime = _runtime(sqlite_url, tmp_path, clock, fake_gateway, public_url=served.url)
    seed(runtime)
    add_user(runtime, ADMIN, "admin")
    served.serve(create_app(runtime=runtime))
    try:
        with chromium() as browser:
            for width, height in ((1280, 800), (390, 844)):
                context = browser.new_context(
                    viewport={"width": width, "height": height}, bypass_csp=True
                )
                context.set_default_timeout(10_000)
                page = context.new_page()
                page.goto(f"{served.url}/login?next=/dashboard/experiments")
                page.get_by_label("Email").fill(ADMIN)
                page.get_by_label("Password").fill(PASSWORD)
                page.get_by_role("button", name="Sign in").click()
                page.wait_for_url(lambda at: at == f"{served.url}/dashboard/experiments")
                chart = page.get_by_role("img", name="dunning-q1: Recovery rate by arm (USD)")
                assert chart.count() == 1  # the drawing for this width; the other is hidden
                table = page.locator("[data-experiment=dunning-q1] table[data-table=arms]")
                assert "better than the holdout" in table.inner_text()
                # Nothing wider than the screen but the scrollable tables.
                assert page.evaluate("document.documentElement.scrollWidth") <= width
                assert_accessible(page, f"/dashboard/experiments at {width}px")
                shot(page, f"dashboard_experiments_{width}", folder=".")
                context.close()
    finally:
        served.stop()
        runtime.db.dispose()
