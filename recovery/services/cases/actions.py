"""The due actions of a recovery case: our retry, turning off Stripe's own attempts, the end of
the retry window, and the end-of-dunning step. Each that calls Stripe is three steps (decide,
call, record; see recovery.runtime.ThreePhase), with an idempotency key on every Stripe call, so
a crash between Stripe's answer and our record replays safely.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from recovery.adapters.deadline import Deadline
from recovery.adapters.stripe.errors import (
    AuthenticationRequired,
    CardDeclined,
    GatewayError,
    InvalidRequest,
    NotFound,
)
from recovery.db import dialect_of, in_list, update_changed_together
from recovery.domain import stripe_objects as so
from recovery.domain.cases import TERMINAL, CaseStatus, CloseReason, RecoveredVia
from recovery.models import DunningPause, RecoveryCase
from recovery.rules import Rules
from recovery.runtime import ActionContext, Claimed, Providers, RecordTogether, ThreePhase
from recovery.services.cases import log as case_log
from recovery.services.cases import retry_results
from recovery.services.cases import scheduling as case_scheduling
from recovery.services.cases import state as case_state
from recovery.services.cases.lines import Line, record_lines
from recovery.services.events import mirror
from recovery.services.events.mirror_handlers import Op, apply_ops

log = logging.getLogger(__name__)


def _case(ctx: ActionContext, action: Claimed) -> RecoveryCase | None:
    return ctx.session.get(RecoveryCase, int(action.payload["case_id"]), with_for_update=True)


def _rules(ctx: ActionContext) -> Rules:
    rules: Rules = ctx.runtime.rules
    return rules


def _now_ts(ctx: ActionContext) -> int:
    return int(ctx.clock.now().timestamp())


def _settled(ctx: ActionContext, case: RecoveryCase, invoice: dict[str, Any]) -> bool:
    """Close the case if the invoice no longer needs us. True when it was settled."""
    now = ctx.clock.now()
    state = so.invoice_state(invoice)  # reads every API version's shape
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


def _settles(invoice: dict[str, Any]) -> bool:
    """Whether `_settled` would close the case: decided in the call step, done in the record."""
    state = so.invoice_state(invoice)
    return state.status in ("paid", "void", "uncollectible") or state.amount_remaining == 0


# ---- our retry ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Retry:
    case_id: int
    invoice_id: str
    attempt: int
    key: str  # the charge's idempotency key
    replay_only: bool  # the case is recovered: only learn whether an earlier run paid it
    may_be_ours: bool  # this action ran before: a payment found may be our own
    stripe_owns: bool  # rules: Stripe retries; we only refresh and settle
    now_ts: int


@dataclass(frozen=True)
class RetryOutcome:
    kind: str  # deleted, replayed, not_ours, settled, stripe_owns, skipped, auth, declined,
    #            refused, paid
    invoice: dict[str, Any] | None = None  # as re-read from Stripe before charging
    paid: dict[str, Any] | None = None  # the invoice Invoice.pay returned
    error: GatewayError | None = None


@functools.cache
def _cases_locked(dialect: str) -> Any:
    """A round's cases, locked in id order (as any other locker of several cases would)."""
    query = select(RecoveryCase).where(in_list(RecoveryCase.id, "ids", dialect))
    return query.order_by(RecoveryCase.id).with_for_update()


def decide_retry(ctx: ActionContext, action: Claimed) -> Retry | None:
    return _decide_retry(ctx, action, _case(ctx, action))


def decide_retries(ctx: ActionContext, actions: Sequence[Claimed]) -> list[Retry | None]:
    """`decide_retry` for a round's retries: their cases locked in one query (in id order, as
    any other locker of several cases would)."""
    ids = sorted({int(action.payload["case_id"]) for action in actions})
    locked = _cases_locked(dialect_of(ctx.session))
    cases = {case.id: case for case in ctx.session.scalars(locked, {"ids": ids})}
    return [_decide_retry(ctx, a, cases.get(int(a.payload["case_id"]))) for a in actions]


def _decide_retry(ctx: ActionContext, action: Claimed, case: RecoveryCase | None) -> Retry | None:
    attempt = int(action.payload["attempt"])
    key = case_scheduling.stripe_key(action.dedupe_key, action.payload)
    plan = Retry(
        case_id=int(action.payload["case_id"]),
        invoice_id=case.invoice_id if case is not None else "",
        attempt=attempt,
        key=key,
        replay_only=False,
        may_be_ours=action.attempts >= 2,
        stripe_owns=_rules(ctx).retry.retry_owner == "stripe",
        now_ts=_now_ts(ctx),
    )
    if (
        case is not None
        and case.status == CaseStatus.RECOVERED
        and case.our_attempts < attempt
        and plan.may_be_ours
    ):
        # The webhook of our own payment closed the case before this re-run: was it ours?
        return Retry(**{**plan.__dict__, "replay_only": True})
    if case is None or case.status in TERMINAL or case.dunning_paused:
        return None
    if case.our_attempts >= attempt:
        return None  # this attempt was made and recorded already
    return plan


def _replay(gateway: Any, plan: Retry) -> dict[str, Any] | None:
    """The invoice is paid and this action ran before: an earlier run may have made the
    payment and died before recording it. Stripe answers a reused idempotency key with the
    first result, so ask it rather than credit our payment to someone else; the paid invoice
    when it was ours. https://docs.stripe.com/api/idempotent_requests"""
    try:
        replayed: dict[str, Any] = gateway.pay_invoice(plan.invoice_id, idempotency_key=plan.key)
    except GatewayError:
        return None  # not our payment
    return replayed if replayed.get("status") == "paid" else None


def call_retry(providers: Providers, plan: Retry, deadline: Deadline) -> RetryOutcome:
    gateway = providers.gateway
    if plan.replay_only:
        replayed = _replay(gateway, plan)
        return RetryOutcome("replayed", paid=replayed) if replayed else RetryOutcome("not_ours")
    try:  # never act on a stale view
        invoice: dict[str, Any] = gateway.retrieve_invoice(plan.invoice_id)
    except NotFound:
        return RetryOutcome("deleted")
    if so.invoice_state(invoice).status == "paid" and plan.may_be_ours:
        replayed = _replay(gateway, plan)
        if replayed is not None:
            return RetryOutcome("replayed", invoice=invoice, paid=replayed)
    if _settles(invoice):
        return RetryOutcome("settled", invoice=invoice)
    if plan.stripe_owns:
        return RetryOutcome("stripe_owns", invoice=invoice)
    next_attempt = so.invoice_state(invoice).next_payment_attempt
    if invoice.get("auto_advance") and next_attempt and next_attempt <= plan.now_ts + 3600:
        return RetryOutcome("skipped", invoice=invoice)
    deadline.check("our retry's charge")
    try:
        paid = gateway.pay_invoice(plan.invoice_id, idempotency_key=plan.key)
    except AuthenticationRequired as exc:
        if exc.hosted_invoice_url is None:
            exc.hosted_invoice_url = invoice.get("hosted_invoice_url")
        return RetryOutcome("auth", invoice=invoice, error=exc)
    except CardDeclined as exc:
        return RetryOutcome("declined", invoice=invoice, error=exc)
    except InvalidRequest as exc:
        # e.g. the invoice is no longer payable: learn its state and let the policy decide
        return RetryOutcome("refused", invoice=gateway.retrieve_invoice(plan.invoice_id), error=exc)
    return RetryOutcome("paid", invoice=invoice, paid=paid)


# Outcomes of a charge we made: the invoice read before it is stale once the charge answered,
# so it is not mirrored. A paid one's paid invoice is mirrored in `_succeeded`; a declined
# one's newer state (one more attempt, Stripe's next attempt) comes with the charge's own
# webhooks (invoice.payment_failed), which the read before the charge, stamped with this
# second, would tie (a re-read from Stripe, mirror.refetch_later) or outrank (a stale
# attempt count kept). The demo: 93 -> 69 re-reads, every other figure the same.
_CHARGED = frozenset({"paid", "replayed", "declined", "auth"})


def record_retry(ctx: ActionContext, action: Claimed, plan: Retry, outcome: RetryOutcome) -> None:
    case = ctx.session.get(RecoveryCase, plan.case_id, with_for_update=True)
    if case is None:
        return
    now = ctx.clock.now()
    if outcome.invoice is not None and outcome.kind not in _CHARGED:
        mirror.apply_invoice(ctx.session, so.invoice_state(outcome.invoice), _now_ts(ctx))
    kind, attempt, key = outcome.kind, plan.attempt, plan.key
    if kind == "replayed" and outcome.paid is not None:
        _succeeded(ctx, case, attempt, key, outcome.paid)
    elif kind == "deleted":
        case_state.mark_closed(ctx.session, case, CloseReason.DELETED, now)
    elif kind == "settled" and outcome.invoice is not None:
        _settled(ctx, case, outcome.invoice)
    elif kind == "skipped":
        case_log.record(
            ctx.session,
            case,
            now,
            "retry_skipped",
            "Stripe will attempt this invoice within the hour; not charging twice",
            dedupe_key=f"{key}:skipped",
        )
    elif kind in ("auth", "declined") and isinstance(
        outcome.error, CardDeclined | AuthenticationRequired
    ):
        case.our_attempts = max(case.our_attempts, attempt)
        _record_attempt(ctx, case, attempt, outcome.error)
        if case.status in TERMINAL:
            return  # settled while we were charging: the attempt is on record, nothing to steer
        if isinstance(outcome.error, AuthenticationRequired):
            case_state.await_authentication(
                ctx.session, case, outcome.error.hosted_invoice_url, now
            )
        else:
            reason = f"our attempt {attempt} declined"
            case_scheduling.reevaluate(ctx.session, case, _rules(ctx), now, reason)
    elif kind == "refused" and outcome.error is not None and outcome.invoice is not None:
        case_log.record(
            ctx.session,
            case,
            now,
            "retry_refused",
            f"Stripe refused: {outcome.error.message}",
            dedupe_key=f"{key}:refused",
        )
        _settled(ctx, case, outcome.invoice)
    elif kind == "paid" and outcome.paid is not None:
        _succeeded(ctx, case, attempt, key, outcome.paid)


def _recorded_together(outcome: RetryOutcome) -> bool:
    """The common outcomes of our charge: paid, or declined (the rest go one by one)."""
    if outcome.kind == "paid":
        return outcome.paid is not None
    return outcome.kind == "declined" and isinstance(outcome.error, CardDeclined)


def record_retries(
    ctx: ActionContext, items: Sequence[tuple[Claimed, Retry, RetryOutcome]]
) -> None:
    """`record_retry` for a round's paid and declined charges, set-based: their cases locked in
    one statement (in id order), the declines' cards read in one, the timeline lines written in
    one statement a step, the recoveries closed together, the declined cases re-planned
    together (`scheduling.reevaluate_many`). The same writes as one by one."""
    session, now = ctx.session, ctx.clock.now()
    ids = sorted({plan.case_id for _, plan, _ in items})
    locked = _cases_locked(dialect_of(session)).execution_options(populate_existing=True)
    cases = {case.id: case for case in session.scalars(locked, {"ids": ids})}
    declines = [o.error for _, _, o in items if isinstance(o.error, CardDeclined)]
    pm_ids = sorted({e.payment_method_id for e in declines if e.payment_method_id})
    cards = retry_results.cards_by_id(session, pm_ids)
    # The cases' own columns flushed once at the end, not each time a statement follows a
    # change (twice a decline): nothing here reads them back from the database.
    with session.no_autoflush:
        lines: list[Line] = []
        ops: list[Op] = []
        recovered: list[tuple[RecoveryCase, RecoveredVia, int]] = []
        steer: list[tuple[RecoveryCase, str]] = []
        for _, plan, outcome in items:
            case = cases.get(plan.case_id)
            if case is None:
                continue
            if outcome.paid is not None:
                line, paid_ops = retry_results.payment_result(
                    ctx, case, plan.attempt, plan.key, outcome.paid
                )
                lines.append(line)
                ops += paid_ops
                if outcome.paid.get("status") == "paid":
                    amount = int(outcome.paid.get("amount_paid") or case.amount_due)
                    recovered.append((case, RecoveredVia.OUR_RETRY, amount))
            elif isinstance(outcome.error, CardDeclined):
                case.our_attempts = max(case.our_attempts, plan.attempt)
                card = retry_results.card_of(ctx, case, outcome.error, cards)
                line, declined_ops = retry_results.declined_result(
                    ctx, case, plan.attempt, outcome.error, card
                )
                lines.append(line)
                ops += declined_ops
                if case.status not in TERMINAL:  # (settled while we charged: nothing to steer)
                    steer.append((case, f"our attempt {plan.attempt} declined"))
        # The round's invoices, attempts and links mirrored together - read and locked in one
        # statement a table, written in one - before the re-plans read the attempts back. A
        # round of one writes its rows as one action does: reading them first would cost more.
        if len(lines) > 1:
            retry_results.mirror_together(session, ops)
        else:
            apply_ops(session, ops)
        record_lines(session, lines)
        case_state.mark_recovered_many(session, recovered, now, override=True)
        case_scheduling.reevaluate_many(session, steer, _rules(ctx), now)
        update_changed_together(session, cases.values())
    session.flush()


run_retry = ThreePhase(
    decide=decide_retry,
    call=call_retry,
    record=record_retry,
    decide_many=decide_retries,
    together=RecordTogether(_recorded_together, record_retries),
)


def _succeeded(
    ctx: ActionContext, case: RecoveryCase, attempt: int, key: str, paid: dict[str, Any]
) -> None:
    line, ops = retry_results.payment_result(ctx, case, attempt, key, paid)
    apply_ops(ctx.session, ops)
    record_lines(ctx.session, [line])
    if paid.get("status") == "paid":
        amount = int(paid.get("amount_paid") or case.amount_due)
        case_state.mark_recovered(
            ctx.session, case, RecoveredVia.OUR_RETRY, amount, ctx.clock.now(), override=True
        )


def _record_attempt(
    ctx: ActionContext, case: RecoveryCase, attempt: int, exc: CardDeclined | AuthenticationRequired
) -> None:
    """Keep the decline details now: the webhooks with them may arrive later, or never."""
    card = retry_results.card_of(ctx, case, exc, {})
    line, ops = retry_results.declined_result(ctx, case, attempt, exc, card)
    apply_ops(ctx.session, ops)
    record_lines(ctx.session, [line])


# ---- Stripe's own retries off, the window's end, the end of dunning -------------------------


@dataclass(frozen=True)
class CaseCall:
    case_id: int
    target: str  # the invoice or subscription the call is about
    what: str  # auto_advance_off | cancel_subscription | mark_uncollectible
    key: str


def decide_auto_advance_off(ctx: ActionContext, action: Claimed) -> CaseCall | None:
    case = _case(ctx, action)
    if case is None or case.status in TERMINAL:
        return None
    key = f"case:{case.id}:auto_advance_off"
    return CaseCall(case.id, case.invoice_id, "auto_advance_off", key)


def decide_end_of_dunning(ctx: ActionContext, action: Claimed) -> CaseCall | None:
    case = _case(ctx, action)
    if case is None or case.status != CaseStatus.LOST:
        return None  # recovered meanwhile: nothing to end
    what = action.payload.get("apply")
    key = f"case:{case.id}:end_of_dunning"
    if what == "offer_pause":
        # The pause the final notice offered was not taken by the window's end (a taken one
        # closed the case as paused, so it never got here): the subscription ends, as it would
        # have without the offer. A pause chosen but not yet carried out keeps it.
        chosen = ctx.session.scalar(select(DunningPause.id).where(DunningPause.case_id == case.id))
        what = "cancel_subscription" if chosen is None else None
    if what == "cancel_subscription" and case.subscription_id:
        return CaseCall(case.id, case.subscription_id, "cancel_subscription", key)
    if what == "mark_uncollectible":
        return CaseCall(case.id, case.invoice_id, "mark_uncollectible", key)
    return None


def call_case(providers: Providers, plan: CaseCall, deadline: Deadline) -> None:
    gateway = providers.gateway
    if plan.what == "auto_advance_off":
        gateway.update_invoice(plan.target, auto_advance=False, idempotency_key=plan.key)
    elif plan.what == "cancel_subscription":
        gateway.cancel_subscription(plan.target, at_period_end=False, idempotency_key=plan.key)
    elif plan.what == "mark_uncollectible":
        gateway.mark_uncollectible(plan.target, idempotency_key=plan.key)


_SUMMARIES = {
    "auto_advance_off": (
        "auto_advance_off",
        "Stripe's own retries are off for this invoice: recovery owns collection",
    ),
    "cancel_subscription": ("end_of_dunning", "subscription cancelled after failed payments"),
    "mark_uncollectible": ("end_of_dunning", "invoice marked uncollectible"),
}


def record_case(ctx: ActionContext, action: Claimed, plan: CaseCall, _: None) -> None:
    case = ctx.session.get(RecoveryCase, plan.case_id, with_for_update=True)
    if case is None:
        return
    kind, summary = _SUMMARIES[plan.what]
    case_log.record(ctx.session, case, ctx.clock.now(), kind, summary, dedupe_key=plan.key)


run_auto_advance_off = ThreePhase(
    decide=decide_auto_advance_off, call=call_case, record=record_case
)
run_end_of_dunning = ThreePhase(decide=decide_end_of_dunning, call=call_case, record=record_case)


def run_window_end(ctx: ActionContext, action: Claimed) -> None:
    case = _case(ctx, action)
    if case is None or case.status in TERMINAL:
        return
    case_scheduling.reevaluate(
        ctx.session, case, _rules(ctx), ctx.clock.now(), "the retry window ended"
    )
