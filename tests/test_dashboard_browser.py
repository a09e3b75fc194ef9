"""The dashboard in headless Chromium against the app on a real port: sign in, filter cases,
open one, act on it, export CSV (a real download), sign out - with screenshots written to
artifacts/screenshots/ (kept by CI)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from recovery.adapters.clock import FrozenClock
from recovery.app import create_app
from recovery.runtime import Runtime
from recovery.services.cases import log as case_log
from recovery.services.registry import build_runtime
from tests.conftest import START, make_settings
from tests.support.browser import Served, chromium, shot
from tests.support.dashboard import (
    ADMIN,
    PASSWORD,
    add_cancel_session,
    add_case,
    add_customer,
    add_failed_invoice,
    add_user,
)

LAPTOP = {"width": 1280, "height": 800}
CATEGORIES = ["soft", "needs_new_card", "needs_customer", "never_retry"]
STATUSES = ["retrying", "awaiting_customer", "recovered", "lost"]


@pytest.fixture
def site(
    sqlite_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any
) -> Iterator[tuple[str, Runtime]]:
    served = Served()
    settings = make_settings(sqlite_url, tmp_path, public_url=served.url)
    rt = build_runtime(settings, clock=clock, gateway=fake_gateway)
    app = create_app(runtime=rt)
    served.serve(app)
    yield served.url, rt
    served.stop()
    rt.db.dispose()


def seed(rt: Runtime) -> int:
    names = ["Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra", "Barbara Liskov"]
    with rt.db.transaction() as db:
        for i in range(1, 31):
            cid = f"cus_{i:06d}"
            first = names[i % len(names)].split()[0].lower()
            add_customer(db, cid, f"{first}{i}@example.com", names[i % len(names)])
            add_case(
                db,
                n=i,
                opened_at=START - timedelta(days=i, hours=i),
                status=STATUSES[i % 4],
                category=CATEGORIES[i % 4],
                currency="eur" if i % 3 else "usd",
                amount=900 + i * 700,
                customer_id=cid,
                brand=["visa", "mastercard", "amex"][i % 3],
            )
            add_cancel_session(
                db,
                n=i,
                created_at=START - timedelta(days=i),
                outcome=["cancelled", "saved_by_pause", "saved_by_discount", None][i % 4],
                customer_id=cid,
                reason_text="Too pricey for a small team" if i % 5 == 0 else None,
            )
        target = add_case(
            db,
            n=99,
            opened_at=START - timedelta(days=2),
            customer_id="cus_000005",  # Ada Lovelace
            amount=4900,
            category="soft",
        )
        add_failed_invoice(
            db, target, failed_at=START - timedelta(days=2), decline_code="do_not_honor"
        )
        case_log.record(
            db, target, START - timedelta(days=2), "opened", "opened: invoice payment failed"
        )
        case_log.record(
            db, target, START - timedelta(days=2), "decision", "next try tomorrow, 10:00"
        )
        return target.id


def test_sign_in_filter_open_act_and_export(site: tuple[str, Runtime], tmp_path: Path) -> None:
    url, rt = site
    add_user(rt, ADMIN, "admin")
    target = seed(rt)
    with chromium() as browser:
        context = browser.new_context(viewport=LAPTOP, accept_downloads=True, locale="en-US")
        context.set_default_timeout(10_000)
        page = context.new_page()
        page.goto(f"{url}/dashboard/cases?status=retrying")
        assert page.url.startswith(f"{url}/login?next=")
        shot(page, "dashboard_login", folder=".")
        page.get_by_label("Email").fill(ADMIN)
        page.get_by_label("Password").fill("wrong password here")
        page.get_by_role("button", name="Sign in").click()
        assert page.get_by_role("alert").inner_text() == "Email or password is incorrect."
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        # back where they began
        page.wait_for_url(lambda at: at == f"{url}/dashboard/cases?status=retrying")

        page.get_by_label("Decline category").select_option("soft")
        page.get_by_label("Search").fill("ada")
        # the rows of the page the form leads to, not of the one it was on
        with page.expect_navigation():
            page.get_by_role("button", name="Filter").click()
        rows = page.locator("tbody tr")
        assert rows.count() >= 1
        for text in rows.all_inner_texts():
            assert "retrying" in text and "Soft decline" in text and "Ada" in text
        shot(page, "dashboard_cases", folder=".")

        page.get_by_role("link", name=f"#{target}").click()
        page.wait_for_url(lambda at: at == f"{url}/dashboard/cases/{target}")
        declined = "was declined: the bank declined without giving a reason (do_not_honor)."
        assert page.get_by_text(declined).count() == 1
        page.get_by_role("button", name="Retry now").click()
        assert "Retry 1 is queued" in page.get_by_role("status").inner_text()
        page.get_by_role("button", name="Pause dunning").click()
        assert "Dunning is paused" in page.get_by_role("status").inner_text()
        shot(page, "dashboard_case", folder=".")

        page.goto(f"{url}/dashboard/cases?currency=eur")
        with page.expect_download() as info:
            page.get_by_role("link", name="Export CSV").click()
        download = info.value
        saved = tmp_path / download.suggested_filename
        download.save_as(saved)
        assert saved.name.startswith("cases-") and saved.suffix == ".csv"
        with saved.open(newline="") as handle:
            exported = list(csv.DictReader(handle))
        assert exported and {r["currency"] for r in exported} == {"EUR"}

        page.goto(f"{url}/dashboard/cancel-sessions?outcome=cancelled")
        assert page.locator("tbody tr").count() >= 1
        shot(page, "dashboard_cancel_sessions", folder=".")

        phone = browser.new_context(viewport={"width": 390, "height": 844})
        phone.add_cookies(context.cookies())
        small = phone.new_page()
        small.goto(f"{url}/dashboard/cases/{target}")
        # Nothing wider than the screen but the scrollable table.
        width = small.evaluate("document.documentElement.scrollWidth")
        assert width <= 390
        shot(small, "dashboard_case_phone", folder=".")
        phone.close()

        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(lambda at: at == f"{url}/login")
        page.goto(f"{url}/dashboard")
        assert page.url.startswith(f"{url}/login")
        context.close()
