"""The cancel flow's due actions, run by the worker with retries and backoff:

- `cancel_flow.apply`: a decision Stripe could not take at the time (same idempotency key).
- `cancel_flow.expire`: an undecided session becomes `abandoned` when its link expires.
- `cancel_flow.webhook`: the signed outcome notification to the business, if configured.
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

from sqlalchemy import select

from recovery.adapters.stripe.errors import AccessDenied, GatewayError
from recovery.domain.offers import OfferKind
from recovery.models import CancelSession
from recovery.models.cancel_flow import Outcome, StripeStatus
from recovery.rules import Rules
from recovery.runtime import ActionContext, Claimed, Runtime
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


def run_apply(ctx: ActionContext, action: Claimed) -> None:
    row = _locked(ctx, action)
    if row is None or row.stripe_status != StripeStatus.PENDING:
        return  # applied inline meanwhile, or nothing to apply
    if row.outcome != Outcome.CANCELLED and row.outcome not in decisions.SAVED:
        return
    rt = _runtime(ctx)
    rules = rt.rules.cancel_flow
    reason = rules.reason(row.reason)
    try:
        result = decisions.apply_in_stripe(rt.gateway, row, reason.feedback if reason else None)
    except GatewayError as exc:
        if exc.transient or isinstance(exc, AccessDenied):
            raise  # the worker retries with backoff, with the same idempotency key
        row.stripe_status = StripeStatus.FAILED
        row.stripe_error = f"{exc.__class__.__name__}: {exc.message}"[:2000]
        log.error("cancel session %s: Stripe refused %s for good: %s", row.id, row.outcome, exc)
        return
    days = rules.offers.get(OfferKind.PAUSE).reminder_days_before
    decisions.record_applied(ctx.session, row, result, ctx.clock.now(), days, ctx.runtime.rules)


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


def run_webhook(ctx: ActionContext, action: Claimed) -> None:
    rt = _runtime(ctx)
    env = flow_env(rt.settings)
    if not env.webhook_url:
        return  # switched off since it was scheduled
    row = ctx.session.get(CancelSession, str(action.payload["session_id"]))
    if row is None:
        return
    now = ctx.clock.now()
    outcome = str(action.payload.get("outcome") or row.outcome)
    event = {
        "id": f"{row.id}:{outcome}",
        "type": f"cancel_session.{outcome}",
        "created": int(now.timestamp()),
        "data": session_json(row, now),
    }
    body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
    request = urllib.request.Request(
        env.webhook_url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "recovery-cancel-flow/1",
            SIGNATURE_HEADER: sign_webhook(env.webhook_secret, int(now.timestamp()), body),
        },
    )
    try:  # the URL's scheme is http(s), checked by flow_env
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as response:  # nosec B310
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        raise ConnectionError(f"webhook to the business failed: {exc}") from exc
    if not 200 <= status < 300:
        raise ConnectionError(f"webhook to the business answered {status}")


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
