"""The cancel flow's due actions, run by the worker with retries and backoff:

- `cancel_flow.apply`: a decision Stripe could not take at the time (same idempotency key).
- `cancel_flow.expire`: an undecided session becomes `abandoned` when its link expires.
- `cancel_flow.webhook`: the signed outcome notification to the business, if configured.
The two that call out are three steps (recovery.runtime.ThreePhase): no transaction is open
while Stripe or the business's endpoint is called.
- `email.cancel_confirmation`, `email.pause_ending`: kept only for due actions scheduled by
  earlier versions, which sent these emails from here. They now write the message to the outbox
  (services/cancel_messages.py), where decisions write it themselves.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select

from recovery.adapters.deadline import Deadline
from recovery.adapters.stripe.errors import AccessDenied, GatewayError
from recovery.domain.offers import OfferKind
from recovery.models import CancelSession
from recovery.models.cancel_flow import Outcome, StripeStatus
from recovery.rules import Rules
from recovery.runtime import ActionContext, Claimed, Providers, Runtime, ThreePhase
from recovery.services.cancel import decisions
from recovery.services.cancel import messages as cancel_messages
from recovery.services.cancel.flow import flow_env
from recovery.services.cancel.records import session_json

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_SECONDS = 10
SIGNATURE_HEADER = "Recovery-Signature"


def _runtime(ctx: ActionContext) -> Runtime:
    rt: Runtime = ctx.runtime
    return rt


def _locked(ctx: ActionContext, action: Claimed) -> CancelSession | None:
    return ctx.session.scalar(
        select(CancelSession)
        .where(CancelSession.id == str(action.payload["session_id"]))
        .with_for_update()
    )


# ---- apply later --------------------------------------------------------------------------------


def _snapshot(row: CancelSession) -> CancelSession:
    """A detached copy of the session's columns: what the Stripe call reads, outside any
    transaction."""
    names = [prop.key for prop in sa_inspect(CancelSession).column_attrs]
    return CancelSession(**{name: getattr(row, name) for name in names})


@dataclass(frozen=True)
class Apply:
    session: CancelSession  # a detached copy
    feedback: str | None


@dataclass(frozen=True)
class Applied:
    result: Any = None
    refused: GatewayError | None = None  # for good: no retry can help


def decide_apply(ctx: ActionContext, action: Claimed) -> Apply | None:
    row = _locked(ctx, action)
    if row is None or row.stripe_status != StripeStatus.PENDING:
        return None  # applied inline meanwhile, or nothing to apply
    if row.outcome != Outcome.CANCELLED and row.outcome not in decisions.SAVED:
        return None
    reason = _runtime(ctx).rules.cancel_flow.reason(row.reason)
    return Apply(_snapshot(row), reason.feedback if reason else None)


def call_apply(providers: Providers, plan: Apply, deadline: Deadline) -> Applied:
    try:
        return Applied(decisions.apply_in_stripe(providers.gateway, plan.session, plan.feedback))
    except GatewayError as exc:
        if exc.transient or isinstance(exc, AccessDenied):
            raise  # the worker retries with backoff, with the same idempotency key
        return Applied(refused=exc)


def record_apply(ctx: ActionContext, action: Claimed, plan: Apply, applied: Applied) -> None:
    row = _locked(ctx, action)
    if row is None or row.stripe_status != StripeStatus.PENDING:
        return
    if applied.refused is not None:
        exc = applied.refused
        row.stripe_status = StripeStatus.FAILED
        row.stripe_error = f"{exc.__class__.__name__}: {exc.message}"[:2000]
        log.error("cancel session %s: Stripe refused %s for good: %s", row.id, row.outcome, exc)
        return
    rules = _runtime(ctx).rules
    days = rules.cancel_flow.offers.get(OfferKind.PAUSE).reminder_days_before
    decisions.record_applied(ctx.session, row, applied.result, ctx.clock.now(), days, rules)


run_apply = ThreePhase(decide=decide_apply, call=call_apply, record=record_apply)


# ---- expiry -------------------------------------------------------------------------------------


def run_expire(ctx: ActionContext, action: Claimed) -> None:
    row = _locked(ctx, action)
    now = ctx.clock.now()
    if row is None or row.outcome is not None or row.expires_at > now:
        return
    row.outcome = Outcome.ABANDONED
    row.decided_at = now
    rt = _runtime(ctx)
    decisions.notify_business(rt, ctx.session, row, now)


# ---- the business webhook -----------------------------------------------------------------------


def sign_webhook(secret: str, timestamp: int, body: bytes) -> str:
    """`t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`, the scheme Stripe uses."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


@dataclass(frozen=True)
class Notification:
    url: str
    body: bytes
    signature: str


def decide_webhook(ctx: ActionContext, action: Claimed) -> Notification | None:
    env = flow_env(_runtime(ctx).settings)
    if not env.webhook_url:
        return None  # switched off since it was scheduled
    row = ctx.session.get(CancelSession, str(action.payload["session_id"]))
    if row is None:
        return None
    now = ctx.clock.now()
    outcome = str(action.payload.get("outcome") or row.outcome)
    event = {
        "id": f"{row.id}:{outcome}",
        "type": f"cancel_session.{outcome}",
        "created": int(now.timestamp()),
        "data": session_json(row, now),
    }
    body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
    signature = sign_webhook(env.webhook_secret, int(now.timestamp()), body)
    return Notification(env.webhook_url, body, signature)


def call_webhook(providers: Providers, plan: Notification, deadline: Deadline) -> None:
    request = urllib.request.Request(
        plan.url,
        data=plan.body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "recovery-cancel-flow/1",
            SIGNATURE_HEADER: plan.signature,
        },
    )
    timeout = min(WEBHOOK_TIMEOUT_SECONDS, max(deadline.remaining(), 0.05))
    try:  # the URL's scheme is http(s), checked by flow_env
        with urllib.request.urlopen(request, timeout=timeout) as response:  # nosec B310
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        raise ConnectionError(f"webhook to the business failed: {exc}") from exc
    if not 200 <= status < 300:
        raise ConnectionError(f"webhook to the business answered {status}")


def _nothing_to_record(ctx: ActionContext, action: Claimed, plan: Notification, _: None) -> None:
    """Delivered: the action is done; the business acknowledged with a 2xx."""


run_webhook = ThreePhase(decide=decide_webhook, call=call_webhook, record=_nothing_to_record)


# ---- messages to the subscriber (due actions of earlier versions) -----------------------------


def run_cancel_confirmation(ctx: ActionContext, action: Claimed) -> None:
    row = ctx.session.get(CancelSession, str(action.payload["session_id"]))
    if row is not None:
        rules: Rules = ctx.runtime.rules
        cancel_messages.confirm_cancellation(ctx.session, row, rules, ctx.clock.now())


def run_pause_ending(ctx: ActionContext, action: Claimed) -> None:
    row = ctx.session.get(CancelSession, str(action.payload["session_id"]))
    if row is not None:
        now = ctx.clock.now()
        cancel_messages.remind_pause_ending(ctx.session, row, ctx.runtime.rules, now, now)
