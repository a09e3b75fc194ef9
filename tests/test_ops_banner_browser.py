"""The admin banner: on every dashboard page, when Stripe events are parked, actions overdue or
sends failing, an admin sees what and a link to /dashboard/health; without any, nothing. In
headless Chromium at 1280 and 390 px (screenshots in artifacts/screenshots/ops/)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from recovery.adapters.clock import FrozenClock
from recovery.app import create_app
from recovery.models import DueAction, StripeEvent
from recovery.runtime import Runtime
from recovery.services.events.inbox import ingest, parse_event
from recovery.services.registry import build_runtime
from recovery.services.work import due_actions
from tests.conftest import make_settings
from tests.support.browser import Served, chromium, shot
from tests.support.dashboard import ADMIN, PASSWORD, VIEWER, add_user, login

WIDTHS = {"1280": {"width": 1280, "height": 800}, "390": {"width": 390, "height": 844}}
PAGES = ["/dashboard", "/dashboard/cases", "/dashboard/cancel-sessions"]


@pytest.fixture
def site(
    sqlite_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any
) -> Iterator[tuple[str, Runtime]]:
    served = Served()
    settings = make_settings(sqlite_url, tmp_path, public_url=served.url)
    rt = build_runtime(settings, clock=clock, gateway=fake_gateway)
    add_user(rt, ADMIN, "admin")
    add_user(rt, VIEWER, "viewer")
    served.serve(create_app(runtime=rt, config={"RATELIMIT_ENABLED": False}))
    yield served.url, rt
    served.stop()
    rt.db.dispose()


def park_an_event(rt: Runtime) -> None:
    event = {
        "id": "evt_parked_1",
        "object": "event",
        "type": "invoice.payment_failed",
        "created": 1_700_000_000,
        "livemode": False,
        "api_version": "2026-10-28.endive",
        "data": {"object": {"id": "in_parked", "object": "invoice"}},
    }
    body = json.dumps(event).encode()
    ingest(rt.db, parse_event(body)[0], body, rt.clock.now())
    with rt.db.transaction() as s:
        s.execute(update(StripeEvent).values(status="failed", last_error="KeyError: 'customer'"))


def banner(page: Any) -> Any:
    return page.get_by_role("alert").filter(has_text="Needs attention")


@pytest.mark.parametrize("width", sorted(WIDTHS))
def test_the_banner_shows_with_a_parked_event_and_not_without(
    site: tuple[str, Runtime], width: str
) -> None:
    url, rt = site
    with chromium() as browser:
        context = browser.new_context(viewport=WIDTHS[width], locale="en-US")
        context.set_default_timeout(10_000)
        page = context.new_page()
        page.goto(f"{url}/login")
        page.get_by_label("Email").fill(ADMIN)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        for path in PAGES:
            page.goto(url + path)
            assert banner(page).count() == 0, path
        shot(page, f"banner_none_{width}", folder="ops")

        park_an_event(rt)
        for path in PAGES:
            page.goto(url + path)
            assert banner(page).count() == 1, path
            text = banner(page).inner_text()
            assert "1 Stripe event is parked after repeated errors" in text
            assert banner(page).is_visible()
        # it fits the screen: no sideways scrolling on a phone
        assert page.evaluate("document.documentElement.scrollWidth") <= WIDTHS[width]["width"]
        shot(page, f"banner_parked_{width}", folder="ops")
        banner(page).get_by_role("link", name="Open the health page").click()
        page.wait_for_url(lambda at: at == f"{url}/dashboard/health")


def test_viewers_see_no_banner_and_each_cause_is_named(
    site: tuple[str, Runtime], clock: FrozenClock
) -> None:
    _url, rt = site
    park_an_event(rt)
    with rt.db.transaction() as s:
        now = clock.now()
        # a send that failed and is to be tried again in an hour (the due actions' backoff)
        later = now + timedelta(hours=1)
        due_actions.schedule(
            s, kind="outbox.send", subject="case:1", dedupe_key="k1", due_at=later, now=now
        )
        s.execute(update(DueAction).values(last_error="SendError: 451 try later"))
        due_actions.schedule(
            s, kind="case.window_end", subject="case:2", dedupe_key="k2", due_at=now, now=now
        )
    clock.advance(timedelta(minutes=10))
    app = create_app(runtime=rt, config={"RATELIMIT_ENABLED": False})
    viewer = app.test_client()
    login(viewer, VIEWER)
    assert "Needs attention" not in viewer.get("/dashboard/cases").get_data(as_text=True)
    admin = app.test_client()
    login(admin, ADMIN)
    html = admin.get("/dashboard/cases").get_data(as_text=True)
    assert "1 Stripe event is parked" in html
    assert "1 action is overdue" in html
    assert "1 message is failing to send" in html
