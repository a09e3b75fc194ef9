"""The due actions of a recovery case: our retry, turning off Stripe's own attempts, the end of
the retry window, and the end-of-dunning step. Each runs in the worker, with an idempotency
key on every Stripe call, so a crash between Stripe's answer and our commit replays safely.
"""

from __future__ import annotations

import logging
from typing import Any

from recovery.adapters.stripe.errors import (
    AuthenticationRequired,
    CardDeclined,
    GatewayError,
    InvalidRequest,
    NotFound,
)
from recovery.domain.cases import TERMINAL, CaseStatus, CloseReason, RecoveredVia
from recovery.domain.stripe_objects.attempts import AttemptState
from recovery.domain.stripe_objects.fields import normalize_brand
from recovery.domain.stripe_objects.states import invoice_state
from recovery.models import PaymentMethod, RecoveryCase
from recovery.rules import Rules
from recovery.runtime import ActionContext, Claimed
from recovery.services.cases import evidence as case_evidence
from recovery.services.cases import log as case_log
from recovery.services.cases import scheduling as case_scheduling
from recovery.services.cases import state as case_state
from recovery.services.events import mirror

log = logging.getLogger(__name__)


def _case(ctx: ActionContext, action: Claimed) -> RecoveryCase | None:
    return ctx.session.get(RecoveryCase, int(action.payload["case_id"]), with_for_update=True)


def _rules(ctx: ActionContext) -> Rules:
    rules: Rules = ctx.runtime.rules
    return rules


def _now_ts(ctx: ActionContext) -> int:
    return int(ctx.clock.now().timestamp())


def _refresh_invoice(ctx: ActionContext, case: RecoveryCase) -> dict[str, Any]:
    """Re-read the invoice from Stripe and mirror it: never act on a stale view."""
    invoice: dict[str, Any] = ctx.runtime.gateway.retrieve_invoice(case.invoice_id)
    mirror.apply_invoice(ctx.session, invoice_state(invoice), _now_ts(ctx))
    return invoice


def _settled(ctx: ActionContext, case: RecoveryCase, invoice: dict[str, Any]) -> bool:
    """Close the case if the invoice no longer needs us. True when it was settled."""
    now = ctx.clock.now()
    state = invoice_state(invoice)  # reads every API version's shape
    if state.status == "paid":
        case_state.mark_recovered(
            ctx.session,
            case,
            RecoveredVia.HOSTED_INVOICE_PAGE,
            state.amount_paid or case.amount_due,
            now,
        )
        return True
    if state.status in ("void", "uncollectible"):
        reason = CloseReason.VOIDED if state.status == "void" else CloseReason.UNCOLLECTIBLE
        case_state.mark_closed(ctx.session, case, reason, now)
        return True
    if state.amount_remaining == 0:
        case_state.mark_closed(ctx.session, case, CloseReason.NOTHING_DUE, now)
        return True
    return False


def run_retry(ctx: ActionContext, action: Claimed) -> None:
    case = _case(ctx, action)
    attempt = int(action.payload["attempt"])
    key = case_scheduling.stripe_key(action.dedupe_key, action.payload)
    if (
        case is not None
        and case.status == CaseStatus.RECOVERED
        and case.our_attempts < attempt
        and _was_ours(ctx, case, action, attempt, key)
    ):
        return  # the webhook of our own payment closed the case before this re-run
    if case is None or case.status in TERMINAL or case.dunning_paused:
        return
    if case.our_attempts >= attempt:
        return  # this attempt was made and recorded already
    now = ctx.clock.now()
    rules = _rules(ctx)
    try:
        invoice = _refresh_invoice(ctx, case)
    except NotFound:
        case_state.mark_closed(ctx.session, case, CloseReason.DELETED, now)
        return
    gateway = ctx.runtime.gateway
    if invoice_state(invoice).status == "paid" and _was_ours(ctx, case, action, attempt, key):
        return
    if _settled(ctx, case, invoice):
        return
    if rules.retry.retry_owner == "stripe":
        return
    next_attempt = invoice_state(invoice).next_payment_attempt
    if invoice.get("auto_advance") and next_attempt and next_attempt <= _now_ts(ctx) + 3600:
        case_log.record(
            ctx.session,
            case,
            now,
            "retry_skipped",
            "Stripe will attempt this invoice within the hour; not charging twice",
            dedupe_key=f"{key}:skipped",
        )
        return
    try:
        paid = gateway.pay_invoice(case.invoice_id, idempotency_key=key)
    except AuthenticationRequired as exc:
        case.our_attempts = attempt
        _record_attempt(ctx, case, attempt, exc)
        case_state.await_authentication(
            ctx.session, case, exc.hosted_invoice_url or invoice.get("hosted_invoice_url"), now
        )
        return
    except CardDeclined as exc:
        case.our_attempts = attempt
        _record_attempt(ctx, case, attempt, exc)
        case_scheduling.reevaluate(ctx.session, case, rules, now, f"our attempt {attempt} declined")
        return
    except InvalidRequest as exc:
        # e.g. the invoice is no longer payable: learn its state and let the policy decide
        case_log.record(
            ctx.session,
            case,
            now,
            "retry_refused",
            f"Stripe refused: {exc.message}",
            dedupe_key=f"{key}:refused",
        )
        _settled(ctx, case, _refresh_invoice(ctx, case))
        return
    _succeeded(ctx, case, attempt, key, paid)


def _was_ours(
    ctx: ActionContext, case: RecoveryCase, action: Claimed, attempt: int, key: str
) -> bool:
    """The invoice is paid and this action ran before: an earlier run may have made the payment
    and died before its commit. Stripe answers a reused idempotency key with the first result,
    so ask it rather than credit our payment to someone else; True when it was ours (recorded).
    https://docs.stripe.com/api/idempotent_requests"""
    if action.attempts < 2:
        return False
    try:
        replayed = ctx.runtime.gateway.pay_invoice(case.invoice_id, idempotency_key=key)
    except GatewayError:
        return False  # not our payment
    if replayed.get("status") != "paid":
        return False
    _succeeded(ctx, case, attempt, key, replayed)
    return True


def _succeeded(
    ctx: ActionContext, case: RecoveryCase, attempt: int, key: str, paid: dict[str, Any]
) -> None:
    now = ctx.clock.now()
    case.our_attempts = attempt
    mirror.apply_invoice(ctx.session, invoice_state(paid), _now_ts(ctx))  # before webhooks
    case_log.record(
        ctx.session,
        case,
        now,
        "our_attempt",
        f"our retry {attempt} succeeded",
        {"attempt": attempt, "succeeded": True},
        f"{key}:result",
    )
    if paid.get("status") == "paid":
        case_state.mark_recovered(
            ctx.session,
            case,
            RecoveredVia.OUR_RETRY,
            int(paid.get("amount_paid") or case.amount_due),
            now,
            override=True,
        )


def _record_attempt(
    ctx: ActionContext, case: RecoveryCase, attempt: int, exc: CardDeclined | AuthenticationRequired
) -> None:
    """Keep the decline details now: the webhooks with them may arrive later, or never."""
    attempt_id = exc.charge_id or f"{exc.payment_intent_id or case.invoice_id}:{attempt}"
    # The card as we know it: without its fingerprint the policy could not count this attempt
    # against the card's limit (an intent that needs 3D Secure has no charge to tell it later).
    card = ctx.session.get(PaymentMethod, exc.payment_method_id) if exc.payment_method_id else None
    if card is None:
        card = case_evidence.current_card(ctx.session, case)
    state = AttemptState(
        id=attempt_id,
        payment_intent_id=exc.payment_intent_id,
        invoice_id=case.invoice_id,
        customer_id=case.customer_id,
        payment_method_id=exc.payment_method_id,
        status="failed",
        amount=case.amount_due,
        currency=case.currency,
        failure_code=exc.code,
        failure_message=exc.message[:1000] if exc.message else None,
        decline_code=exc.decline_code,
        outcome_type=None,
        outcome_reason=None,
        network_status=None,
        advice_code=exc.advice_code,
        network_advice_code=exc.network_advice_code,
        network_decline_code=exc.network_decline_code,
        card_brand=normalize_brand(exc.card_brand or (card.brand if card else None)),
        card_last4=card.last4 if card else None,
        card_funding=card.funding if card else None,
        card_fingerprint=card.fingerprint if card else None,
        created=_now_ts(ctx),
    )
    mirror.apply_attempt(ctx.session, state, _now_ts(ctx))
    summary = f"our retry {attempt} declined: {exc.decline_code or exc.code or 'declined'}"
    case_log.record(
        ctx.session,
        case,
        ctx.clock.now(),
        "our_attempt",
        summary,
        {
            "attempt": attempt,
            "attempt_id": attempt_id,
            "succeeded": False,
            "decline_code": exc.decline_code,
            "failure_code": exc.code,
            "network_advice_code": exc.network_advice_code,
        },
        f"case:{case.id}:attempt:{attempt}:result",
    )


def run_auto_advance_off(ctx: ActionContext, action: Claimed) -> None:
    case = _case(ctx, action)
    if case is None or case.status in TERMINAL:
        return
    ctx.runtime.gateway.update_invoice(
        case.invoice_id, auto_advance=False, idempotency_key=f"case:{case.id}:auto_advance_off"
    )
    case_log.record(
        ctx.session,
        case,
        ctx.clock.now(),
        "auto_advance_off",
        "Stripe's own retries are off for this invoice: recovery owns collection",
        dedupe_key=f"case:{case.id}:auto_advance_off",
    )


def run_window_end(ctx: ActionContext, action: Claimed) -> None:
    case = _case(ctx, action)
    if case is None or case.status in TERMINAL:
        return
    case_scheduling.reevaluate(
        ctx.session, case, _rules(ctx), ctx.clock.now(), "the retry window ended"
    )


def run_end_of_dunning(ctx: ActionContext, action: Claimed) -> None:
    case = _case(ctx, action)
    if case is None or case.status != CaseStatus.LOST:
        return  # recovered meanwhile: nothing to end
    gateway = ctx.runtime.gateway
    what = action.payload.get("apply")
    key = f"case:{case.id}:end_of_dunning"
    if what == "cancel_subscription" and case.subscription_id:
        gateway.cancel_subscription(case.subscription_id, at_period_end=False, idempotency_key=key)
        summary = "subscription cancelled after failed payments"
    elif what == "mark_uncollectible":
        gateway.mark_uncollectible(case.invoice_id, idempotency_key=key)
        summary = "invoice marked uncollectible"
    else:
        return
    case_log.record(ctx.session, case, ctx.clock.now(), "end_of_dunning", summary, dedupe_key=key)
