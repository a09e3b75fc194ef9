"""The process-wide parts, built once and shared by the web app, the worker and the CLI."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from recovery.adapters.clock import Clock, SystemClock
from recovery.config import Rules, Settings
from recovery.db import Database
from recovery.features import register_all
from recovery.services.due_actions import ActionContext
from recovery.services.processing import ProcessingContext

log = logging.getLogger(__name__)


def build_gateway(settings: Settings) -> Any:
    """The real SDK gateway when a Stripe key is set; otherwise the in-repo fake (demo, dev)."""
    if settings.stripe_api_key:
        from recovery.adapters.stripe_gateway import StripeSdkGateway

        return StripeSdkGateway(settings.stripe_api_key, api_base=settings.stripe_api_base)
    from recovery.adapters.stripe_fake import FakeStripeGateway

    log.warning("STRIPE_API_KEY is not set: using the built-in Stripe stand-in (no real calls)")
    return FakeStripeGateway()


@dataclass
class Runtime:
    settings: Settings
    rules: Rules
    db: Database
    clock: Clock = field(default_factory=SystemClock)
    gateway: Any = None
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls, settings: Settings, *, clock: Clock | None = None, gateway: Any = None
    ) -> Runtime:
        settings.check()
        register_all()
        rules = Rules.load(settings.rules_path)
        db = Database(settings.database_url)
        return cls(
            settings=settings,
            rules=rules,
            db=db,
            clock=clock or SystemClock(),
            gateway=gateway if gateway is not None else build_gateway(settings),
        )

    @property
    def services(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "rules": self.rules,
            "gateway": self.gateway,
            "runtime": self,
            **self.extras,
        }

    def processing_context(self, session: Session) -> ProcessingContext:
        return ProcessingContext(session=session, clock=self.clock, services=self.services)

    def action_context(self, session: Session) -> ActionContext:
        return ActionContext(session=session, clock=self.clock, services=self.services)
