"""Helpers for reminder tests: a runtime wired to an SMTP sink and/or the Twilio fake, and
customers with a phone number and SMS consent."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from recovery.adapters.clock import FrozenClock
from recovery.models import OutboxMessage
from recovery.runtime import Runtime
from recovery.services.registry import build_runtime
from tests.conftest import make_settings
from tests.support.scenario import Billing, Story

TWILIO_SID = "AC" + "0" * 32
TWILIO_TOKEN = "twiliotesttoken0" * 2  # 32 letters and digits, as Twilio issues them
MESSAGING_SERVICE = "MG" + "1" * 32


def messaging_runtime(
    database_url: str,
    tmp_path: Path,
    clock: FrozenClock,
    gateway: Any,
    *,
    smtp_url: str = "",
    twilio_url: str = "",
    **settings_overrides: Any,
) -> Runtime:
    overrides: dict[str, Any] = {"smtp_url": smtp_url, **settings_overrides}
    if twilio_url:
        overrides.update(
            twilio_account_sid=TWILIO_SID,
            twilio_auth_token=TWILIO_TOKEN,
            twilio_messaging_service_sid=MESSAGING_SERVICE,
            twilio_api_base=twilio_url,
        )
    settings = make_settings(database_url, tmp_path, **overrides)
    return build_runtime(settings, clock=clock, gateway=gateway)


def with_phone(
    story: Story,
    billing: Billing,
    phone: str = "+4915112345678",
    consent: str | None = "true",
    locales: list[str] | None = None,
) -> None:
    """Give the customer a phone number (and SMS consent), as customer.updated would."""
    story.clock.advance(timedelta(seconds=1))  # a newer version than customer.created
    cus = story.fake.retrieve_customer(billing.customer)
    metadata = dict(cus.get("metadata") or {})
    if consent is not None:
        metadata["sms_consent"] = consent
    updated = {**cus, "phone": phone, "metadata": metadata}
    if locales is not None:
        updated["preferred_locales"] = locales
    story.fake.put(updated)
    story.fake.add_event("customer.updated", story.fake.retrieve_customer(billing.customer))


def messages(rt: Runtime, **where: Any) -> list[OutboxMessage]:
    query = select(OutboxMessage).order_by(OutboxMessage.send_after, OutboxMessage.id)
    for name, value in where.items():
        query = query.where(getattr(OutboxMessage, name) == value)
    with rt.db.transaction() as s:
        return list(s.scalars(query))


def with_locales(story: Story, billing: Billing, locales: list[str]) -> None:
    """Set the customer's Stripe preferred_locales, as customer.updated would."""
    story.clock.advance(timedelta(seconds=1))
    cus = story.fake.retrieve_customer(billing.customer)
    story.fake.put({**cus, "preferred_locales": locales})
    story.fake.add_event("customer.updated", story.fake.retrieve_customer(billing.customer))
