"""Cancel sessions: starting one (API or signed link), opening it, the survey and the one offer.

Decisions (accept an offer, cancel, keep) are in `cancel_decisions`; the worker's side (apply
later, emails, the business webhook, expiry) in `cancel_actions`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from recovery.adapters.stripe.errors import AccessDenied, GatewayError, NotFound
from recovery.config import Settings
from recovery.db import utcnow_from
from recovery.domain.cancel_links import SignedLink
from recovery.domain.cancel_rules import CancelFlowRules
from recovery.domain.cancel_terms import CancelPlan, SubscriptionNow, plan_cancel
from recovery.domain.experiments import CancelFlowOptions
from recovery.domain.offer_terms import terms_for
from recovery.domain.offers import OfferKind, PastOffer, Plan, SubscriptionFacts, choose_offer
from recovery.domain.stripe_objects.states import customer_state, subscription_state
from recovery.models import CancelSession, Customer, Invoice, OfferAcceptance, Subscription
from recovery.rules import RulesError
from recovery.runtime import Runtime
from recovery.services.events import mirror
from recovery.services.experiments.assignment import place, placement_of_cancel_session
from recovery.services.work import due_actions

log = logging.getLogger(__name__)

LINK_SECRET_ENV = "RECOVERY_CANCEL_LINK_SECRET"
WEBHOOK_URL_ENV = "RECOVERY_CANCEL_WEBHOOK_URL"
WEBHOOK_SECRET_ENV = "RECOVERY_CANCEL_WEBHOOK_SECRET"
EXPIRE_ACTION = "cancel_flow.expire"
MAX_URL = 2000
MAX_METADATA_KEYS = 20
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class FlowError(Exception):
    """A request the flow refuses; `status` and `code` say how (pages and API alike)."""

    status = 400
    code = "invalid_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SessionInvalid(FlowError):
    status, code = 403, "invalid_session"


class SessionExpired(FlowError):
    status, code = 410, "session_expired"


class BadInput(FlowError):
    status, code = 422, "invalid_input"

    def __init__(self, message: str, problem: str = "reason") -> None:
        super().__init__(message)
        self.problem = problem  # which explanation the page shows


class NotFoundError(FlowError):
    status, code = 404, "not_found"


class StripeUnavailable(FlowError):
    status, code = 503, "stripe_unavailable"


# ---- configuration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CancelFlowEnv:
    link_secret: str
    webhook_url: str
    webhook_secret: str


def flow_env(settings: Settings) -> CancelFlowEnv:
    """Environment settings of this feature (Settings.extra wins, for tests)."""

    def get(name: str) -> str:
        return (settings.extra.get(name) or os.environ.get(name) or "").strip()

    env = CancelFlowEnv(get(LINK_SECRET_ENV), get(WEBHOOK_URL_ENV), get(WEBHOOK_SECRET_ENV))
    if env.webhook_url and not env.webhook_url.startswith(("https://", "http://")):
        raise RulesError(f"{WEBHOOK_URL_ENV} must be an http(s) URL")
    if env.webhook_url and len(env.webhook_secret) < 16:
        raise RulesError(f"{WEBHOOK_SECRET_ENV} (16+ characters) is required with a webhook URL")
    if env.link_secret and len(env.link_secret) < 16:
        raise RulesError(f"{LINK_SECRET_ENV} must be at least 16 characters")
    return env


# ---- facts --------------------------------------------------------------------------------------


def subscription_facts(sub: Subscription) -> SubscriptionFacts:
    plans = tuple(
        Plan(
            item_id=item.id,
            price_id=item.price_id,
            unit_amount=item.unit_amount or 0,
            quantity=item.quantity,
            interval=item.interval,
            interval_count=item.interval_count,
        )
        for item in sub.items
    )
    currency = sub.currency or next((i.currency for i in sub.items if i.currency), None) or "usd"
    return SubscriptionFacts(
        id=sub.id,
        customer_id=sub.customer_id or "",
        status=sub.status,
        currency=currency,
        plans=plans,
        started_at=utcnow_from(sub.created),
        current_period_start=sub.current_period_start,
        current_period_end=sub.current_period_end,
        cancel_at_period_end=sub.cancel_at_period_end,
        paused=sub.pause_behavior is not None,
    )


def subscription_now(session: Session, sub: Subscription) -> SubscriptionNow:
    """The subscription as mirrored, with the open invoices it still owes."""
    owed = session.scalars(
        select(Invoice)
        .where(
            Invoice.subscription_id == sub.id,
            Invoice.status == "open",
            Invoice.amount_remaining > 0,
        )
        .order_by(Invoice.created, Invoice.id)
    ).all()
    return SubscriptionNow(
        status=sub.status,
        period_end=sub.current_period_end,
        cancel_at_period_end=sub.cancel_at_period_end,
        cancel_at=sub.cancel_at,
        ended_at=sub.ended_at,
        trial_end=sub.trial_end,
        paused=sub.pause_behavior is not None,
        resumes_at=sub.pause_resumes_at,
        unpaid_amount=sum(i.amount_remaining for i in owed),
        currency=(owed[0].currency if owed else None) or sub.currency or "usd",
        unpaid_since=utcnow_from(owed[0].created) if owed else None,
        open_invoices=tuple(i.id for i in owed),
    )


def cancel_plan(
    session: Session, sub: Subscription | None, rules: CancelFlowRules, now: datetime
) -> CancelPlan | None:
    """What cancelling the subscription now does, under the rules; None when it is unknown."""
    if sub is None:
        return None
    return plan_cancel(
        subscription_now(session, sub),
        cancel_at_period_end=rules.cancel_at_period_end,
        unpaid_invoice=rules.unpaid_invoice,
        now=now,
    )


def offer_history(session: Session, customer_id: str) -> list[PastOffer]:
    rows = session.scalars(
        select(OfferAcceptance).where(OfferAcceptance.customer_id == customer_id)
    ).all()
    return [PastOffer(OfferKind(r.kind), r.subscription_id, r.accepted_at, r.ends_at) for r in rows]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def session_url(settings: Settings, token: str) -> str:
    return f"{settings.public_url}/cancel/{token}"


# ---- starting a session -------------------------------------------------------------------------


@dataclass(frozen=True)
class StartRequest:
    customer_id: str
    subscription_id: str
    return_url: str
    locale: str | None = None
    metadata: Mapping[str, str] | None = None
    source: str = "api"


def check_return_url(url: str, rules: CancelFlowRules) -> None:
    parts = urlsplit(url)
    if (
        len(url) > MAX_URL
        or _CONTROL.search(url)
        or parts.scheme not in ("https", "http")
        or not parts.hostname
    ):
        raise FlowError("return_url must be an absolute http(s) URL of at most 2000 characters")
    host = parts.hostname.lower()
    allowed = rules.return_url_hosts
    if allowed and not any(host == h or host.endswith("." + h) for h in allowed):
        raise FlowError(f"return_url host {host} is not in cancel_flow.return_url_hosts")


def _fetch(rt: Runtime, what: str, oid: str) -> dict[str, Any] | None:
    """Fresh state from Stripe, or None when Stripe cannot answer now (the mirror is used)."""
    try:
        fetched: dict[str, Any] = getattr(rt.gateway, f"retrieve_{what}")(oid)
        return fetched
    except NotFound as exc:
        raise NotFoundError(f"no such {what}: {oid}") from exc
    except GatewayError as exc:
        if not (exc.transient or isinstance(exc, AccessDenied)):
            raise FlowError(f"Stripe refused to read the {what}: {exc.message}") from exc
        log.warning("Stripe unavailable reading %s %s: %s", what, oid, exc.message)
        return None


def _link_token(settings: Settings, link: SignedLink) -> str:
    # One signed link always opens the same session: its token is derived from the signature
    # with our own secret, so it is as unguessable as a random one.
    mac = hmac.new(settings.secret_key.encode(), f"cancel-link:{link.signature}".encode(), "sha256")
    return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


def start_session(
    rt: Runtime, request: StartRequest, *, link: SignedLink | None = None
) -> tuple[CancelSession, str]:
    """Create a session (or, for a signed link, reopen its session). Returns it and its token."""
    rules = rt.rules.cancel_flow
    check_return_url(request.return_url, rules)
    token = _link_token(rt.settings, link) if link else secrets.token_urlsafe(32)
    if link is not None:
        with rt.db.transaction() as session:
            existing = session.scalar(
                select(CancelSession).where(CancelSession.token_hash == token_hash(token))
            )
            if existing is not None:
                return existing, token
    sub_obj = _fetch(rt, "subscription", request.subscription_id)
    customer_obj = _fetch(rt, "customer", request.customer_id)
    now = rt.clock.now()
    with rt.db.transaction() as session:
        ts = int(now.timestamp())
        if sub_obj is not None:
            mirror.apply_subscription(session, subscription_state(sub_obj), ts)
        if customer_obj is not None:
            mirror.apply_customer(session, customer_state(customer_obj), ts)
        session.flush()
        sub = session.get(Subscription, request.subscription_id, populate_existing=True)
        if sub is None:
            raise StripeUnavailable("Stripe is unreachable and the subscription is not mirrored")
        if sub.customer_id != request.customer_id:
            raise NotFoundError("the subscription does not belong to that customer")
        facts = subscription_facts(sub)
        session_id = "cxs_" + secrets.token_hex(16)
        # An active cancel-flow experiment (or two or more variants, which are one) places the
        # customer: the arm is the session's variant; the holdout is shown no offer at all.
        experiment = rt.rules.experiments.active("cancel_flow")
        placed = (
            place(session, experiment, request.customer_id, now, cancel_session_id=session_id)
            if experiment is not None
            else None
        )
        expires_at = now + timedelta(minutes=rules.session_minutes)
        if link is not None:
            link_end = utcnow_from(link.timestamp + rules.link_max_age_minutes * 60)
            expires_at = max(expires_at, link_end or expires_at)
        row = CancelSession(
            id=session_id,
            token_hash=token_hash(token),
            source=request.source,
            customer_id=request.customer_id,
            subscription_id=request.subscription_id,
            return_url=request.return_url,
            locale=request.locale,
            metadata_=dict(request.metadata or {}),
            variant=placed.arm if placed else rules.assign_variant(request.customer_id).name,
            created_at=now,
            expires_at=expires_at,
            offer_decided=placed is not None and placed.holdout,
            currency=facts.currency,
            mrr_before=facts.monthly,
            stripe_status="none",
        )
        session.add(row)
        session.flush()
        due_actions.schedule(
            session,
            kind=EXPIRE_ACTION,
            subject=f"cancel_session:{row.id}",
            dedupe_key=f"{EXPIRE_ACTION}:{row.id}",
            due_at=expires_at,
            now=now,
            payload={"session_id": row.id},
        )
        return row, token


# ---- opening a session --------------------------------------------------------------------------


@dataclass(frozen=True)
class Opened:
    """A session with what its pages show, read in one transaction."""

    row: CancelSession
    facts: SubscriptionFacts | None
    customer_email: str | None
    preferred_locales: tuple[str, ...]
    subscription_ended: bool  # cancelled, or set to cancel at period end, outside this flow
    ends_at: datetime | None
    plan: CancelPlan | None  # what cancelling now would do (the pages say it before the click)
    now: datetime  # when the page is shown: a date before it is in the past tense
    unpaid_since: datetime | None = None  # past due: when the unpaid invoice was due
    resumes_at: datetime | None = None  # paused: when billing resumes


def locked_session(session: Session, token: str, now: datetime) -> CancelSession:
    row = session.scalar(
        select(CancelSession).where(CancelSession.token_hash == token_hash(token)).with_for_update()
    )
    if row is None:
        raise SessionInvalid("this link is not valid")
    if row.expires_at <= now and row.outcome in (None, "abandoned"):
        raise SessionExpired("this link has expired")
    return row


def open_session(rt: Runtime, token: str) -> Opened:
    now = rt.clock.now()
    with rt.db.transaction() as session:
        row = locked_session(session, token, now)
        sub = session.get(Subscription, row.subscription_id)
        customer = session.get(Customer, row.customer_id)
        facts = subscription_facts(sub) if sub is not None else None
        ended = sub is not None and (sub.status == "canceled" or sub.cancel_at_period_end)
        ends_at = None
        if sub is not None:
            ends_at = sub.ended_at or sub.cancel_at or sub.current_period_end
        plan = cancel_plan(session, sub, rt.rules.cancel_flow, now)
        return Opened(
            row=row,
            facts=facts,
            customer_email=customer.email if customer else None,
            preferred_locales=tuple(customer.preferred_locales or ()) if customer else (),
            subscription_ended=ended,
            ends_at=ends_at,
            plan=plan,
            now=now,
            unpaid_since=subscription_now(session, sub).unpaid_since if sub is not None else None,
            resumes_at=sub.pause_resumes_at if sub is not None else None,
        )


# ---- the survey and the one offer ---------------------------------------------------------------


def clean_text(text: str | None) -> str | None:
    """Free text as stored and sent to Stripe: no control characters (PostgreSQL refuses NUL),
    line breaks and tabs kept."""
    return None if text is None else _CONTROL.sub("", text)


def check_answer(rules: CancelFlowRules, reason_id: str | None, text: str | None) -> None:
    text = clean_text(text)
    if reason_id and rules.reason(reason_id) is None:
        raise BadInput("choose one of the listed reasons")
    if text and len(text) > rules.comment_max_chars:
        raise BadInput(
            f"the message is longer than {rules.comment_max_chars} characters", "too_long"
        )


def record_answer(
    row: CancelSession, reason_id: str | None, text: str | None, now: datetime
) -> None:
    text = clean_text(text)
    if reason_id:
        row.reason = reason_id
    if text is not None and text.strip():
        row.reason_text = text.strip()
    if reason_id or (text and text.strip()):
        row.survey_at = row.survey_at or now


def submit_survey(
    rt: Runtime, token: str, reason_id: str | None, text: str | None
) -> CancelSession:
    """Record the answer and fix the session's one offer (None when nothing fits)."""
    rules = rt.rules.cancel_flow
    check_answer(rules, reason_id, text)
    now = rt.clock.now()
    with rt.db.transaction() as session:
        row = locked_session(session, token, now)
        if row.outcome not in (None, "abandoned"):
            return row  # decided: the pages show the result
        record_answer(row, reason_id, text, now)
        row.survey_at = row.survey_at or now
        if row.offer_decided:
            return row  # never a second offer, whatever the new answer
        row.offer_decided = True
        sub = session.get(Subscription, row.subscription_id)
        reason = rules.reason(row.reason)
        if sub is None or reason is None:
            return row
        facts = subscription_facts(sub)
        history = offer_history(session, row.customer_id)
        allowed = _offers_allowed(session, rt, row)
        kind = choose_offer(reason.offers, allowed, rules.offers, facts, history, now)
        if kind is not None:
            row.offer_shown = kind.value
            row.offer_terms = terms_for(kind, rules.offers, facts, now).to_json()
            row.offer_shown_at = now
        return row


def _offers_allowed(session: Session, rt: Runtime, row: CancelSession) -> Collection[OfferKind]:
    """The offers the session's arm may show (every offer for an arm that names none; none for
    the holdout), or, outside any experiment, its variant's."""
    placed = placement_of_cancel_session(session, rt.rules, row.id)
    if placed is not None:
        if placed.holdout:
            return frozenset()
        options = placed.options
        if isinstance(options, CancelFlowOptions) and options.offers is not None:
            return options.offers
        return frozenset(OfferKind)
    rules = rt.rules.cancel_flow
    return (rules.variant(row.variant) or rules.assign_variant(row.customer_id)).offers
