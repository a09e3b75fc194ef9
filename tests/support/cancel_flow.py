"""Helpers for the cancel-flow tests: a seeded Stripe fake, rules with every offer configured,
and a client that walks the pages like a browser would (CSRF token included)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from html import unescape
from pathlib import Path
from typing import Any

from recovery.adapters.stripe_fake import FakeStripeGateway
from tests.conftest import API_KEY, START

DAY = 86400
LINK_SECRET = "link-secret-for-tests-0123456789"
WEBHOOK_SECRET = "webhook-secret-for-tests-0123456789"

# Every offer configured, for one monthly price; an override file as a business would write it.
RULES_TOML = """
[cancel_flow]
return_url_hosts = ["shop.example", "127.0.0.1"]

[offers.downgrade]
prices = [{ from = "price_pro_monthly", to = "price_basic_monthly", to_unit_amount = 900 }]

[offers.longer_term]
prices = [{ from = "price_pro_monthly", to = "price_pro_yearly", to_unit_amount = 19200 }]

[offers.discount]
coupon = "STAY25"
percent_off = 25
duration_months = 3
"""


def write_rules(directory: Path, extra: str = "") -> Path:
    path = directory / "rules.toml"
    path.write_text(RULES_TOML + extra)
    return path


@dataclass(frozen=True)
class Seeded:
    customer: str
    subscription: str
    item: str


def seed(
    gateway: FakeStripeGateway,
    *,
    customer: str = "cus_ada",
    subscription: str = "sub_ada",
    locales: list[str] | None = None,
    email: str | None = "ada@example.com",
    status: str = "active",
    tenure_days: int = 200,
) -> Seeded:
    """A customer on Pro monthly ($20), 10 days into the period, `tenure_days` subscribed."""
    now = int(START.timestamp())
    if "price_pro_monthly" not in gateway.store["price"]:
        gateway.add_price("price_pro_monthly", unit_amount=2000, product="prod_pro")
        gateway.add_price("price_basic_monthly", unit_amount=900, product="prod_pro")
        gateway.add_price(
            "price_pro_yearly", unit_amount=19200, interval="year", product="prod_pro"
        )
        gateway.add_coupon("STAY25", percent_off=25, duration="repeating")
    gateway.add_customer(customer, email=email, name="Ada", preferred_locales=list(locales or []))
    sub = gateway.add_subscription(
        customer,
        id=subscription,
        price_id="price_pro_monthly",
        status=status,
        current_period_start=now - 10 * DAY,
        created=now - tenure_days * DAY,
    )
    return Seeded(customer, subscription, sub["items"]["data"][0]["id"])


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class FlowClient:
    """Walks the cancel flow through Flask's test client."""

    def __init__(self, client: Any, url: str) -> None:
        self.client = client
        self.path = url.split("://", 1)[-1].split("/", 1)[1]
        self.path = "/" + self.path
        self.last: Any = None
        self.token: str | None = None  # the last CSRF token a page carried

    @classmethod
    def start(cls, client: Any, seeded: Seeded, **body: Any) -> tuple[FlowClient, dict[str, Any]]:
        payload = {
            "customer": seeded.customer,
            "subscription": seeded.subscription,
            "return_url": "https://shop.example/account?tab=billing",
            **body,
        }
        response = client.post("/api/v1/cancel-sessions", json=payload, headers=auth())
        assert response.status_code == 201, response.get_data(as_text=True)
        data: dict[str, Any] = response.get_json()
        return cls(client, data["url"]), data

    def get(self, suffix: str = "", **kw: Any) -> Any:
        self.last = self.client.get(self.path + suffix, **kw)
        found = CSRF.search(self.last.get_data(as_text=True))
        if found:
            self.token = unescape(found.group(1))
        return self.last

    def csrf(self) -> str:
        page = self.last if self.last is not None else self.get()
        found = CSRF.search(page.get_data(as_text=True))
        if found:
            self.token = unescape(found.group(1))
        assert self.token, "no CSRF token seen yet"
        return self.token

    def post(self, suffix: str, data: dict[str, Any] | None = None, **kw: Any) -> Any:
        form = {"csrf_token": self.csrf(), **(data or {})}
        self.last = self.client.post(self.path + suffix, data=form, **kw)
        return self.last

    def text(self) -> str:
        return str(self.last.get_data(as_text=True))


def advance_days(clock: Any, days: float) -> None:
    clock.advance(timedelta(days=days))


@dataclass
class Flow:
    """A runtime and app with rules that configure every offer, on a seeded Stripe fake."""

    runtime: Any
    app: Any
    gateway: FakeStripeGateway
    clock: Any
    seeded: Seeded

    @property
    def client(self) -> Any:
        return self.app.test_client()

    def start(self, **body: Any) -> tuple[FlowClient, dict[str, Any]]:
        return FlowClient.start(self.client, self.seeded, **body)

    def writes(self) -> list[Any]:
        """Stripe writes made so far (reads excluded)."""
        return [r for r in self.gateway.requests if r.idempotency_key is not None]


def make_flow(
    database_url: str,
    tmp_path: Path,
    clock: Any,
    gateway: FakeStripeGateway,
    *,
    rules_extra: str = "",
    env: dict[str, str] | None = None,
    public_url: str = "http://recovery.test",
    **seed_args: Any,
) -> Flow:
    from recovery.app import create_app
    from recovery.services.registry import build_runtime
    from tests.conftest import make_settings

    seeded = seed(gateway, **seed_args)
    settings = make_settings(
        database_url,
        tmp_path,
        rules_path=write_rules(tmp_path, rules_extra),
        public_url=public_url,
        extra={"RECOVERY_CANCEL_LINK_SECRET": LINK_SECRET, **(env or {})},
    )
    runtime = build_runtime(settings, clock=clock, gateway=gateway)
    app = create_app(runtime=runtime)
    app.config["TESTING"] = True
    return Flow(runtime, app, gateway, clock, seeded)


def session_row(flow: Flow, session_id: str) -> Any:
    from recovery.models import CancelSession

    with flow.runtime.db.transaction() as s:
        row = s.get(CancelSession, session_id)
        assert row is not None
        return row


def due(flow: Flow, kind: str | None = None) -> list[Any]:
    from sqlalchemy import select

    from recovery.models import DueAction

    with flow.runtime.db.transaction() as s:
        query = select(DueAction).order_by(DueAction.id)
        if kind:
            query = query.where(DueAction.kind == kind)
        return list(s.scalars(query).all())


def emails(flow: Flow, template: str | None = None) -> list[Any]:
    """The cancel flow's messages in the outbox, oldest first."""
    from sqlalchemy import select

    from recovery.models import OutboxMessage

    with flow.runtime.db.transaction() as s:
        query = (
            select(OutboxMessage)
            .where(OutboxMessage.about.like("cancel_session:%"))
            .order_by(OutboxMessage.send_after, OutboxMessage.id)
        )
        if template:
            query = query.where(OutboxMessage.template == template)
        return list(s.scalars(query).all())
