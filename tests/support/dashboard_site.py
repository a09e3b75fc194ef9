"""A dashboard with a real history behind it, for the browser tests: the demo's seeded history
(`recovery.devtools.history`: renewals, declines, retries, reminders, card updates, cancel-flow
sessions, expiring-card notices, all played through the service against the Stripe fake) on a
fixed clock, served on a loopback port, with an admin and a viewer - and helpers to find in it
the rows each finding of issue 15 is about."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import aliased

from recovery.adapters.clock import FrozenClock
from recovery.adapters.stripe_fake import FakeStripeGateway
from recovery.app import create_app
from recovery.devtools import population
from recovery.devtools.history import History
from recovery.models import CancelSession, PaymentAttempt, RecoveryCase
from recovery.runtime import Runtime
from recovery.services.registry import build_runtime
from tests.conftest import make_settings
from tests.support.browser import Served
from tests.support.dashboard import ADMIN, PASSWORD, VIEWER, add_user

END = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)  # a fixed "now": the same history every run
CUSTOMERS = 90
DAYS = 150
LAPTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
WIDTHS = {"1280": LAPTOP, "390": PHONE}


@dataclass
class Site:
    url: str
    rt: Runtime

    def sql(self, statement: Any) -> list[Any]:
        with self.rt.db.reading() as session:
            return list(session.execute(statement).all())


@contextmanager
def seeded_site(tmp: Path, sqlite_template: Path) -> Iterator[Site]:
    db = tmp / "recovery.db"
    shutil.copy(sqlite_template, db)
    rules = tmp / "demo-rules.toml"
    rules.write_text(population.RULES_TOML, encoding="utf-8")
    clock = FrozenClock(END)
    fake = FakeStripeGateway(clock=clock)
    served = Served()
    settings = make_settings(
        f"sqlite:///{db}",
        tmp,
        rules_path=rules,
        public_url=served.url,
        # Test mode: the customer page links to Stripe's test dashboard. The gateway is the
        # fake whatever the key (it is passed in).
        stripe_api_key="sk_test_dashboard_findings",
    )
    rt = build_runtime(settings, clock=clock, gateway=fake)
    History(rt, fake, clock, customers=CUSTOMERS, seed=7, end=END, days=DAYS).run()
    clock.set(END)
    add_user(rt, ADMIN, "admin")
    add_user(rt, VIEWER, "viewer")
    served.serve(create_app(runtime=rt, config={"RATELIMIT_ENABLED": False}))
    try:
        yield Site(served.url, rt)
    finally:
        served.stop()
        rt.db.dispose()


def sign_in(
    browser: Any, site: Site, viewport: dict[str, int], who: str = ADMIN, **opts: Any
) -> Any:
    """A page signed in through the real form, in a fresh context of that size."""
    context = browser.new_context(viewport=viewport, locale="en-US", **opts)
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto(f"{site.url}/login")
    page.get_by_label("Email").fill(who)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{site.url}/dashboard")
    return page


# ---- the rows the findings are about ----------------------------------------------------------


def reversed_save(site: Site) -> tuple[str, str]:
    """(the saved session, the later session that cancelled it)."""
    later = aliased(CancelSession)
    found = site.sql(
        select(CancelSession.id, later.id)
        .join(later, later.subscription_id == CancelSession.subscription_id)
        .where(CancelSession.outcome.like("saved_by_%"))
        .where(later.outcome == "cancelled", later.decided_at > CancelSession.decided_at)
        .limit(1)
    )
    assert found, "the history has no reversed save"
    return found[0][0], found[0][1]


def case_with_later_renewals(site: Site) -> RecoveryCase:
    """A recovered case whose customer paid later renewals of the same amount on the same
    card - charges that name no invoice (the demo's case 10)."""
    cases = site.sql(select(RecoveryCase).where(RecoveryCase.status == "recovered"))
    for (case,) in cases:
        assert case.closed_at is not None
        later = site.sql(
            select(PaymentAttempt.id)
            .where(PaymentAttempt.customer_id == case.customer_id)
            .where(PaymentAttempt.status == "succeeded", PaymentAttempt.amount == case.amount_due)
            .where(PaymentAttempt.created > int(case.closed_at.timestamp()) + 86_400)
        )
        if later:
            return case
    raise AssertionError("no recovered case with later renewals in the history")
