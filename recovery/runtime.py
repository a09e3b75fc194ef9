"""The process-wide parts, built once and shared by the web app, the worker and the CLI, and the
shapes of the handlers that run on them.

A `Runtime` is the configured outside world (settings, rules, database, clock, Stripe, mail,
SMS) plus `Handlers`: what to do for each event type, due-action kind and daily job. The
handlers themselves are listed in one place, `recovery.services.registry`, which also builds
the runtime (`build_runtime`); this module only says what they look like, so every service can
name these types without importing any other.

A due-action handler that calls a provider is a `ThreePhase`: `decide` in the claim's
transaction (what to call, or nothing), `call` with no transaction open under a deadline (the
one place a provider is called; it gets only `Providers`), `record` in a second transaction
that also checks the action's lease. A handler that calls nothing is one function, run in one
transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from recovery.adapters.clock import Clock, SystemClock
from recovery.adapters.deadline import Deadline
from recovery.adapters.email import Mailer, SmtpMailer, parse_smtp_url
from recovery.adapters.sms import SmsSender, TwilioSms
from recovery.adapters.stripe.protocol import StripeGateway
from recovery.adapters.stripe.shadow import ShadowGateway
from recovery.adapters.unsent import UnsentMailer, UnsentSms
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
class Changes:
    """What the event being processed changed in the mirror, filled in by the mirror writers:
    reactions that depend on one kind of state run only when it moved."""

    mirrored: set[tuple[str, str]] = field(default_factory=set)  # (table, id) written
    cards: bool = False  # a card was added, or its expiry or owner changed
    default_card: bool = False  # which card a customer or subscription pays with
    renewal: bool = False  # a subscription's renewal date, or whether it is live
    subscription_status: set[str] = field(default_factory=set)  # subscriptions whose status moved

    @property
    def expiry_inputs(self) -> bool:
        """What the expiring-card planner reads: a card's expiry, a default card, a renewal."""
        return self.cards or self.default_card or self.renewal


class Facts:
    """What a batch of events may act on, read for the batch when first asked and grown as it
    goes: which invoices, customers and subscriptions have recovery cases, which customers have
    expiring-card notices pending. A reaction that acts on none of them is skipped (`Gated`)."""

    def __init__(
        self,
        read_cases: Callable[[Facts], None] | None = None,
        read_notices: Callable[[Facts], None] | None = None,
    ) -> None:
        self._read_cases, self._read_notices = read_cases, read_notices
        self._invoices: set[str] = set()
        self._active_customers: set[str] = set()
        self._subscriptions: set[str] = set()
        self._notices: set[str] = set()

    def _cases(self) -> None:
        read, self._read_cases = self._read_cases, None
        if read is not None:
            read(self)

    def add_case(
        self, invoice_id: str, customer_id: str | None, subscription_id: str | None, active: bool
    ) -> None:
        self._invoices.add(invoice_id)
        if subscription_id:
            self._subscriptions.add(subscription_id)
        if customer_id and active:
            self._active_customers.add(customer_id)

    def add_notices(self, customer_ids: Iterable[str]) -> None:
        self._notices.update(customer_ids)

    @property
    def invoices_with_cases(self) -> set[str]:
        self._cases()
        return self._invoices

    @property
    def customers_with_active_cases(self) -> set[str]:
        self._cases()
        return self._active_customers

    @property
    def subscriptions_with_cases(self) -> set[str]:
        self._cases()
        return self._subscriptions

    @property
    def customers_with_expiry_notices(self) -> set[str]:
        read, self._read_notices = self._read_notices, None
        if read is not None:
            read(self)
        return self._notices


@dataclass
class ProcessingContext:
    """What a reaction to a Stripe event works with: the event's transaction, the runtime, what
    the event changed so far (`changes`, reset for every event) and, in a worker's batch, the
    batch's `facts`."""

    session: Session
    runtime: Runtime
    changes: Changes = field(default_factory=Changes)
    facts: Facts | None = None

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


@dataclass(frozen=True)
class Providers:
    """Everything outside that a due action may call: all a `ThreePhase.call` gets."""

    gateway: StripeGateway
    mailer: Mailer | None = None
    sms: SmsSender | None = None


PlanT = TypeVar("PlanT")
OutcomeT = TypeVar("OutcomeT")


@dataclass(frozen=True)
class ThreePhase(Generic[PlanT, OutcomeT]):
    """A due action that calls a provider, in three steps so no transaction spans the call:

    - `decide(ctx, action)`: in the claim's transaction, rows locked only there; returns what to
      call (plain data), or None when there is nothing to call (the action is then done);
    - `call(providers, plan, deadline)`: no transaction open; the provider calls, each with an
      idempotency key, a stable Message-ID or a look-up before a second attempt, and nothing
      else - the one place a provider is called. Returns what happened (plain data). Raising
      means "try again later" (or never, for `PermanentError`);
    - `record(ctx, action, plan, outcome)`: a second transaction, which commits only while the
      action's lease is still ours.
    A worker killed between `call` and `record` re-runs the action after its lease: the same
    keys make the second call replay the first.
    """

    decide: Callable[[ActionContext, Claimed], PlanT | None]
    call: Callable[[Providers, PlanT, Deadline], OutcomeT]
    record: Callable[[ActionContext, Claimed, PlanT, OutcomeT], None]
    together: RecordTogether[PlanT, OutcomeT] | None = None
    # `decide` for a round's actions of this kind at once, their rows read in one query per
    # table; the plans (or None) in the actions' order, the same as `decide` one by one.
    decide_many: Callable[[ActionContext, Sequence[Claimed]], Sequence[PlanT | None]] | None = None


@dataclass(frozen=True)
class RecordTogether(Generic[PlanT, OutcomeT]):
    """The common outcomes of a round (a message sent) recorded in set-based statements, not
    one action at a time: `record` gets the actions `applies` accepted whose lease held, already
    marked done in the same transaction; the others go through `ThreePhase.record` one by one."""

    applies: Callable[[OutcomeT], bool]
    record: Callable[[ActionContext, Sequence[tuple[Claimed, PlanT, OutcomeT]]], None]


ContextFactory = Callable[[Session], ProcessingContext]
Reaction = Callable[[ProcessingContext, Payload, Payload], None]
"""reaction(ctx, event, event["data"]["object"])"""
Needed = Callable[[ProcessingContext, Payload, Payload], bool]


@dataclass(frozen=True)
class Gated:
    """A reaction that runs only when `needed` says the state it acts on is there or moved;
    otherwise it would do nothing (a case reaction for an invoice without a case). The worker's
    batches ask `needed` first: an event none of whose reactions is needed has its mirror
    update written together with the batch's others."""

    needed: Needed
    reaction: Reaction

    def __call__(self, ctx: ProcessingContext, event: Payload, obj: Payload) -> None:
        if self.needed(ctx, event, obj):
            self.reaction(ctx, event, obj)


OnePhase = Callable[[ActionContext, Claimed], None]
"""A due action that calls nothing outside: one function, one transaction."""
ActionHandler = OnePhase | ThreePhase[Any, Any]
DailyJob = Callable[["Runtime", Session], None]
"""Runs once a day cluster-wide, in one transaction."""
MaintenanceJob = Callable[["Runtime"], int]
"""Runs once a day cluster-wide in many small transactions of its own; returns rows touched."""
CasesMoved = Callable[["Runtime", Session, Sequence[int]], None]
"""Run before a unit of work commits, for the recovery cases whose timeline it added to."""
StillWanted = Callable[[Session, OutboxMessage], "str | None"]
"""Checked right before a message is sent: a reason it must not go out, or None."""

_MOVED_CASES = "recovery.cases_moved"
_MOVED_IN_BATCH = "recovery.cases_moved_in_batch"


def note_case_moved(session: Session, case_id: int) -> None:
    """A case's timeline got a line in this unit of work: its state moved."""
    session.info.setdefault(_MOVED_CASES, set()).add(case_id)
    session.info.setdefault(_MOVED_IN_BATCH, set()).add(case_id)


def has_moved_cases(session: Session) -> bool:
    return bool(session.info.get(_MOVED_CASES))


def take_batch_moves(session: Session) -> set[int]:
    """The cases moved since the last call, for a batch keeping its `Facts` up to date."""
    moved: set[int] = session.info.pop(_MOVED_IN_BATCH, set())
    return moved


def take_moved_cases(session: Session) -> set[int]:
    """The cases moved in this unit of work since the last call (and forget them)."""
    moved: set[int] = session.info.pop(_MOVED_CASES, set())
    return moved


@dataclass(frozen=True)
class Handlers:
    on_event: Mapping[str, tuple[Reaction, ...]] = field(default_factory=dict)
    actions: Mapping[str, ActionHandler] = field(default_factory=dict)
    daily_jobs: Mapping[str, DailyJob] = field(default_factory=dict)
    maintenance: Mapping[str, MaintenanceJob] = field(default_factory=dict)
    # every minute, on every worker (each job keeps itself to one at a time cluster-wide)
    periodic: Mapping[str, MaintenanceJob] = field(default_factory=dict)
    on_cases_moved: tuple[CasesMoved, ...] = ()
    still_wanted: Mapping[str, StillWanted] = field(default_factory=dict)
    """Message relevance checks by the first part of the message's subject (`case`, `expiry`)."""

    def with_action(self, kind: str, handler: ActionHandler) -> Handlers:
        return replace(self, actions={**self.actions, kind: handler})

    def with_reaction(self, event_type: str, reaction: Reaction) -> Handlers:
        current = self.on_event.get(event_type, ())
        return replace(self, on_event={**self.on_event, event_type: (*current, reaction)})

    def with_daily_job(self, name: str, job: DailyJob) -> Handlers:
        return replace(self, daily_jobs={**self.daily_jobs, name: job})

    def with_maintenance(self, name: str, job: MaintenanceJob) -> Handlers:
        return replace(self, maintenance={**self.maintenance, name: job})


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
        gateway = gateway if gateway is not None else build_gateway(settings)
        if settings.is_shadow:  # reads only: nothing changes at Stripe in shadow mode
            gateway = cast(StripeGateway, ShadowGateway(gateway))
        runtime = cls(
            settings=settings,
            rules=Rules.load(settings.rules_path),
            db=Database(settings.database_url),
            gateway=gateway,
            handlers=handlers,
            clock=clock or SystemClock(),
            mailer=build_mailer(settings),
            sms=build_sms(settings),
        )
        if settings.is_shadow:  # a message is planned as if it would go out, then held
            runtime.mailer = runtime.mailer or UnsentMailer()
            runtime.sms = runtime.sms or UnsentSms()
        # Whatever moved a case (an event, a due action, a page), what depends on the case's
        # state (its reminders) follows in the same commit.
        sa_event.listen(runtime.db.sessionmaker, "before_commit", runtime._cases_moved)
        return runtime

    def _cases_moved(self, session: Session) -> None:
        moved = take_moved_cases(session)
        if moved:
            for hook in self.handlers.on_cases_moved:
                hook(self, session, sorted(moved))

    @property
    def providers(self) -> Providers:
        return Providers(gateway=self.gateway, mailer=self.mailer, sms=self.sms)

    def processing_context(self, session: Session) -> ProcessingContext:
        return ProcessingContext(session=session, runtime=self)

    def action_context(self, session: Session, worker_id: str = "") -> ActionContext:
        return ActionContext(session=session, runtime=self, worker_id=worker_id)
