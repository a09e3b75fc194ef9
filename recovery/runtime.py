"""The process-wide parts, built once and shared by the web app, the worker and the CLI, and the
shapes of the handlers that run on them.

A `Runtime` is the configured outside world (settings, rules, database, clock, Stripe, mail,
SMS) plus `Handlers`: what to do for each event type, due-action kind and daily job. The
handlers themselves are listed in one place, `recovery.services.registry`, which also builds
the runtime (`build_runtime`); this module only says what they look like, so every service can
name these types without importing any other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from recovery.adapters.clock import Clock, SystemClock
from recovery.adapters.email import Mailer, SmtpMailer, parse_smtp_url
from recovery.adapters.sms import SmsSender, TwilioSms
from recovery.adapters.stripe.protocol import StripeGateway
from recovery.config import Settings
from recovery.db import Database
from recovery.models import OutboxMessage
from recovery.rules import Rules

log = logging.getLogger(__name__)

Payload = Mapping[str, Any]
"""A Stripe event or object as JSON: its shape is Stripe's, read with `domain.stripe_objects`."""


@dataclass(frozen=True)
class Claimed:
    """A due action a worker holds under a lease."""

    id: int
    kind: str
    subject: str
    dedupe_key: str
    attempts: int
    payload: Payload
    due_at: datetime


@dataclass
class ProcessingContext:
    """What a reaction to a Stripe event works with: the event's transaction and the runtime."""

    session: Session
    runtime: Runtime

    @property
    def clock(self) -> Clock:
        return self.runtime.clock


@dataclass
class ActionContext:
    """What a due-action handler works with: the action's transaction, the runtime, and which
    worker holds the lease."""

    session: Session
    runtime: Runtime
    worker_id: str = ""

    @property
    def clock(self) -> Clock:
        return self.runtime.clock


ContextFactory = Callable[[Session], ProcessingContext]
Reaction = Callable[[ProcessingContext, Payload, Payload], None]
"""reaction(ctx, event, event["data"]["object"])"""
ActionHandler = Callable[[ActionContext, Claimed], None]
DailyJob = Callable[["Runtime", Session], None]
StillWanted = Callable[[Session, OutboxMessage], "str | None"]
"""Checked right before a message is sent: a reason it must not go out, or None."""


@dataclass(frozen=True)
class Handlers:
    on_event: Mapping[str, tuple[Reaction, ...]] = field(default_factory=dict)
    actions: Mapping[str, ActionHandler] = field(default_factory=dict)
    daily_jobs: Mapping[str, DailyJob] = field(default_factory=dict)
    still_wanted: Mapping[str, StillWanted] = field(default_factory=dict)
    """Message relevance checks by the first part of the message's subject (`case`, `expiry`)."""

    def with_action(self, kind: str, handler: ActionHandler) -> Handlers:
        return replace(self, actions={**self.actions, kind: handler})

    def with_reaction(self, event_type: str, reaction: Reaction) -> Handlers:
        current = self.on_event.get(event_type, ())
        return replace(self, on_event={**self.on_event, event_type: (*current, reaction)})

    def with_daily_job(self, name: str, job: DailyJob) -> Handlers:
        return replace(self, daily_jobs={**self.daily_jobs, name: job})


def build_gateway(settings: Settings) -> StripeGateway:
    """The real SDK gateway when a Stripe key is set; otherwise the in-repo fake (demo, dev)."""
    if settings.stripe_api_key:
        from recovery.adapters.stripe.sdk import StripeSdkGateway

        return StripeSdkGateway(settings.stripe_api_key, api_base=settings.stripe_api_base)
    from recovery.adapters.stripe_fake import FakeStripeGateway

    log.warning("STRIPE_API_KEY is not set: using the built-in Stripe stand-in (no real calls)")
    return FakeStripeGateway()


def build_mailer(settings: Settings) -> Mailer | None:
    """SMTP when RECOVERY_SMTP_URL is set; otherwise None: messages stay in the local outbox."""
    return SmtpMailer(parse_smtp_url(settings.smtp_url)) if settings.smtp_url else None


def build_sms(settings: Settings) -> SmsSender | None:
    if not (settings.twilio_account_sid and settings.twilio_auth_token):
        return None
    return TwilioSms(
        settings.twilio_account_sid,
        settings.twilio_auth_token,
        messaging_service_sid=settings.twilio_messaging_service_sid,
        from_number=settings.twilio_from_number,
        api_base=settings.twilio_api_base,
    )


@dataclass
class Runtime:
    settings: Settings
    rules: Rules
    db: Database
    gateway: StripeGateway
    handlers: Handlers
    clock: Clock = field(default_factory=SystemClock)
    mailer: Mailer | None = None
    sms: SmsSender | None = None

    @classmethod
    def build(
        cls,
        settings: Settings,
        handlers: Handlers,
        *,
        clock: Clock | None = None,
        gateway: StripeGateway | None = None,
    ) -> Runtime:
        settings.check()
        return cls(
            settings=settings,
            rules=Rules.load(settings.rules_path),
            db=Database(settings.database_url),
            gateway=gateway if gateway is not None else build_gateway(settings),
            handlers=handlers,
            clock=clock or SystemClock(),
            mailer=build_mailer(settings),
            sms=build_sms(settings),
        )

    def processing_context(self, session: Session) -> ProcessingContext:
        return ProcessingContext(session=session, runtime=self)

    def action_context(self, session: Session, worker_id: str = "") -> ActionContext:
        return ActionContext(session=session, runtime=self, worker_id=worker_id)
