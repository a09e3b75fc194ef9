"""Outreach stories on the Stripe fake, with mail into a real SMTP server (aiosmtpd): monthly
subscribers, ended subscriptions, the emails they get and the pages those open."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from recovery.adapters.clock import FrozenClock
from recovery.adapters.stripe_fake import FakeStripeGateway
from recovery.app import create_app
from recovery.runtime import Runtime
from recovery.services.operations import jobs
from recovery.services.registry import build_runtime
from tests.conftest import make_settings
from tests.support.scenario import Story
from tests.support.smtp_sink import SmtpSink, smtp_sink

RULES = """
[term_offers]
enabled = true
months_from = 1
months_to = 4
proration = "{proration}"
prices = [ {{ from = "price_monthly", to = "price_yearly" }} ]

[win_back]
enabled = true
days = [14, 60]
consent_metadata_key = "marketing_consent"
coupon = "{coupon}"
"""
DAY = 86400


@dataclass
class Subscriber:
    customer: str
    payment_method: str
    subscription: str


class Outreach(Story):
    """A Story with outreach rules, an SMTP sink and the web app."""

    def __init__(self, rt: Runtime, fake: FakeStripeGateway, clock: FrozenClock, sink: SmtpSink):
        super().__init__(rt, fake, clock)
        self.sink = sink
        app = create_app(runtime=rt)
        app.config["TESTING"] = True
        self.app = app
        self.client = app.test_client()
        fake.add_price("price_monthly", unit_amount=2000, interval="month")
        fake.add_price("price_yearly", unit_amount=20000, interval="year")
        if rt.rules.win_back.coupon:
            fake.add_coupon(rt.rules.win_back.coupon, percent_off=20.0)

    def subscriber(
        self,
        *,
        email: str = "kim@example.com",
        locales: list[str] | None = None,
        metadata: dict[str, str] | None = None,
        age_days: int = 40,
        period_days_left: int = 20,
        price: str = "price_monthly",
    ) -> Subscriber:
        """A monthly subscriber `age_days` into the subscription, paid up."""
        now = int(self.clock.now().timestamp())
        cus = self.fake.add_customer(
            email=email,
            name="Kim Lee",
            country="DE",
            preferred_locales=locales or ["en"],
            metadata=metadata or {},
        )
        pm = self.fake.add_payment_method(cus["id"], brand="visa", funding="credit")
        self.fake.update_customer_default_payment_method(
            cus["id"], pm["id"], idempotency_key=f"seed:{cus['id']}"
        )
        sub = self.fake.add_subscription(
            cus["id"],
            price_id=price,
            default_payment_method=pm["id"],
            current_period_start=now - (30 - period_days_left) * DAY,
            created=now - age_days * DAY,
        )
        for event_type, obj in (
            ("customer.created", self.fake.retrieve_customer(cus["id"])),
            ("payment_method.attached", pm),
            ("customer.subscription.created", sub),
        ):
            self.fake.add_event(event_type, obj)
        self.deliver()
        return Subscriber(cus["id"], pm["id"], sub["id"])

    def run_job(self, name: str) -> None:
        jobs.run_now(self.rt, name)
        self.run_due()

    def later(self, days: float) -> None:
        """Let `days` pass, running everything that comes due on the way."""
        end = self.clock.now() + timedelta(days=days)
        while self.advance_to_next_due(limit=end - self.clock.now()):
            pass
        self.clock.set(end)
        self.run_due()

    def mails_to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.sink.messages if address in str(m["To"])]

    def csrf(self, path: str) -> str:
        html = self.client.get(path).get_data(as_text=True)
        match = re.search(r'name="csrf_token" value="([^"]+)"', html)
        assert match, f"no CSRF token on {path}"
        return match.group(1)


def body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def token_in(message: EmailMessage, page: str) -> str:
    match = re.search(rf"/{page}/([A-Za-z0-9_-]{{43}})", body(message))
    assert match, f"no /{page}/ link in {body(message)!r}"
    return match.group(1)


def write_rules(tmp_path: Path, *, proration: str = "charge_now", coupon: str = "") -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(RULES.format(proration=proration, coupon=coupon))
    return path


@contextmanager
def outreach_story(
    database_url: str,
    tmp_path: Path,
    clock: FrozenClock,
    fake: FakeStripeGateway,
    public_url: str = "http://recovery.test",
    **rules: Any,
) -> Iterator[Outreach]:
    with smtp_sink() as sink:
        settings = make_settings(
            database_url,
            tmp_path,
            rules_path=write_rules(tmp_path, **rules),
            smtp_url=sink.url,
            public_url=public_url,
        )
        rt = build_runtime(settings, clock=clock, gateway=fake)
        try:
            yield Outreach(rt, fake, clock, sink)
        finally:
            rt.db.dispose()
