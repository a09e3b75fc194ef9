"""The pause page (`/pause/<token>`) a final notice links to, and carrying the pause out.

The link is the final notice's own card-update link (`card_update.links`, same token, same
expiry), on another page: it opens while the case is active, shows what a pause does - until
when nothing is charged, what becomes of the unpaid invoice, what is charged after - and one
button per length (1..`retry.pause_months` months).

Accepting is idempotent whatever the clicks: the first POST fixes the request (length and date)
on the case's one `DunningPause` row; every POST sends exactly that request under the same
idempotency keys, so a double submit or a second tab replays Stripe's first answer - one change.
No database transaction is held open across a Stripe call. A click whose calls do not finish
(the process dies, Stripe is unreachable) is finished by the next visit to the page, or by a
due action (`pause.apply`) a few minutes later - with the same keys.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from recovery.adapters.deadline import Deadline
from recovery.adapters.stripe.errors import InvalidRequest, NotFound
from recovery.adapters.stripe.protocol import StripeGateway
from recovery.db import insert_or_ignore
from recovery.domain import pauses as pause_terms
from recovery.domain import stripe_objects as so
from recovery.domain.cases import ACTIVE, CaseStatus, CloseReason
from recovery.models import (
    CardUpdateLink,
    Customer,
    DunningPause,
    Invoice,
    RecoveryCase,
    Subscription,
)
from recovery.runtime import ActionContext, Claimed, Providers, Runtime, ThreePhase
from recovery.services.card_update import links
from recovery.services.cases import log as case_log
from recovery.services.cases import state as case_state
from recovery.services.pauses import notices
from recovery.services.work import due_actions

log = logging.getLogger(__name__)

OFFER = "offer_pause"
APPLY_KIND = "pause.apply"
# The fallback due action runs this long after a click, when the page's own Stripe calls have
# long finished or failed (a worker killed mid-call, Stripe unreachable).
APPLY_AFTER = timedelta(minutes=5)
PAUSABLE = ("active", "past_due", "unpaid")  # a live subscription Stripe can pause
BEHAVIOR = "void"  # invoices of the pause are voided at once: nothing is owed for it


class Refused(Exception):
    """The link does not open a pause (unknown, revoked or expired): `status` 404 or 410."""

    def __init__(self, kind: str, status: int, locales: tuple[str, ...] = ()) -> None:
        super().__init__(kind)
        self.kind, self.status, self.locales = kind, status, locales


@dataclass(frozen=True)
class PauseView:
    """What the page shows. `status`: offered, accepted, failed, or unavailable (paid, ended,
    or pauses are not offered any more)."""

    status: str
    currency: str = ""
    unpaid: int = 0  # the unpaid invoice: voided when the pause is accepted
    unpaid_since: datetime | None = None
    renewal: int = 0  # what each renewal charges once collection resumes
    choices: tuple[pause_terms.PauseChoice, ...] = ()
    resumes_at: datetime | None = None
    notice_at: datetime | None = None  # when the "billing resumes" email goes out
    locales: tuple[str, ...] = ()


def _locales(session: Session, customer_id: str | None) -> tuple[str, ...]:
    customer = session.get(Customer, customer_id) if customer_id else None
    return tuple(customer.preferred_locales or []) if customer else ()


def _open(
    session: Session, token: str, now: datetime, *, lock: bool = False
) -> tuple[CardUpdateLink, RecoveryCase, DunningPause | None]:
    link = links.find(session, token, lock=lock)
    case = session.get(RecoveryCase, link.case_id, with_for_update=lock) if link else None
    if link is None or case is None:
        raise Refused("unknown", 404)
    pause = session.scalar(select(DunningPause).where(DunningPause.case_id == case.id))
    if pause is None and (link.revoked_at is not None or link.expires_at <= now):
        raise Refused("expired", 410, _locales(session, link.customer_id))
    return link, case, pause


def _decided(pause: DunningPause, locales: tuple[str, ...]) -> PauseView:
    return PauseView(
        status=pause.status,
        currency=pause.currency,
        unpaid=pause.amount_voided,
        resumes_at=pause.resumes_at,
        notice_at=notices.notice_at(pause.resumes_at, pause.chosen_at),
        locales=locales,
    )


def _pausable(session: Session, rt: Runtime, case: RecoveryCase) -> Subscription | None:
    """The subscription to pause, when the case may still be paused instead of lost."""
    if rt.rules.retry.end_of_dunning != OFFER or case.status not in ACTIVE:
        return None
    sub = session.get(Subscription, case.subscription_id) if case.subscription_id else None
    if sub is None or sub.status not in PAUSABLE or sub.pause_behavior:
        return None
    return sub


def _choices(rt: Runtime, case: RecoveryCase) -> tuple[pause_terms.PauseChoice, ...]:
    """Counted from the end of the retry window, whenever the customer clicks: the dates the
    final notice names ("up to ...") are the dates the page offers."""
    window_end = case.opened_at + timedelta(days=rt.rules.retry.window_days)
    return pause_terms.choices(window_end, rt.rules.retry.pause_months)


def _offer(session: Session, rt: Runtime, case: RecoveryCase, now: datetime) -> PauseView:
    locales = _locales(session, case.customer_id)
    sub = _pausable(session, rt, case)
    if sub is None:
        return PauseView(status="unavailable", locales=locales)
    invoice = session.get(Invoice, case.invoice_id)
    unpaid = invoice.amount_remaining if invoice and invoice.amount_remaining else case.amount_due
    renewal, _currency = links.next_payment(sub)
    return PauseView(
        status="offered",
        currency=case.currency,
        unpaid=unpaid,
        unpaid_since=case.opened_at,
        renewal=renewal,
        choices=_choices(rt, case),
        locales=locales,
    )


def open_page(rt: Runtime, token: str) -> PauseView:
    now = rt.clock.now()
    with rt.db.transaction() as session:
        _link, case, pause = _open(session, token, now)
        if pause is None:
            return _offer(session, rt, case, now)
        if pause.status != "accepting":
            return _decided(pause, _locales(session, case.customer_id))
        months = pause.months
    return accept(rt, token, months)  # chosen, not carried out yet: finish it (same keys)


@dataclass(frozen=True)
class _Request:
    pause_id: int
    subscription_id: str
    invoice_id: str
    resumes_at: datetime


def _fix_request(
    session: Session, rt: Runtime, token: str, months: int, now: datetime
) -> _Request | PauseView:
    """The first click fixes the request on the case's row; later clicks find it."""
    _link, case, pause = _open(session, token, now, lock=True)
    locales = _locales(session, case.customer_id)
    if pause is None:
        sub = _pausable(session, rt, case)
        picked = next((c for c in _choices(rt, case) if c.months == months), None)
        if sub is None:
            return PauseView(status="unavailable", locales=locales)
        if picked is None:
            return _offer(session, rt, case, now)  # not a length offered: the page again
        invoice = session.get(Invoice, case.invoice_id)
        unpaid = (
            invoice.amount_remaining if invoice and invoice.amount_remaining else case.amount_due
        )
        insert_or_ignore(
            session,
            DunningPause,
            {
                "case_id": case.id,
                "customer_id": case.customer_id or "",
                "subscription_id": sub.id,
                "invoice_id": case.invoice_id,
                "currency": case.currency,
                "amount_voided": unpaid,
                "months": picked.months,
                "resumes_at": picked.resumes_at,
                "status": "accepting",
                "chosen_at": now,
            },
            ["case_id"],
        )
        pause = session.scalars(select(DunningPause).where(DunningPause.case_id == case.id)).one()
        due_actions.schedule(  # in case this click's Stripe calls do not finish
            session,
            kind=APPLY_KIND,
            subject=f"pause:{pause.id}",
            dedupe_key=f"dunning-pause:{pause.id}:apply",
            due_at=now + APPLY_AFTER,
            now=now,
            payload={"pause_id": pause.id},
        )
        case_log.record(
            session,
            case,
            now,
            "pause_chosen",
            f"the customer chose to pause for {picked.months} month(s), until "
            f"{picked.resumes_at:%Y-%m-%d}, instead of losing the subscription",
            {"months": picked.months, "resumes_at": picked.resumes_at.isoformat()},
            f"case:{case.id}:pause_chosen",
        )
    if pause.status != "accepting":
        return _decided(pause, locales)
    return _Request(pause.id, pause.subscription_id, pause.invoice_id, pause.resumes_at)


def accept(rt: Runtime, token: str, months: int) -> PauseView:
    """Pause collection until the chosen date and void the unpaid invoice (once)."""
    now = rt.clock.now()
    with rt.db.transaction() as session:
        fixed = _fix_request(session, rt, token, months, now)
    if isinstance(fixed, PauseView):
        return fixed
    outcome = _carry_out(rt.gateway, fixed)
    with rt.db.transaction() as session:
        return _record(session, rt, fixed, outcome, now)


@dataclass(frozen=True)
class _Outcome:
    invoice: dict[str, Any] | None  # as Stripe left it
    error: str | None  # Stripe refused the pause for good: nothing changed


def _carry_out(gateway: StripeGateway, fixed: _Request) -> _Outcome:
    """The Stripe calls, under the pause's keys: any number of runs make one change."""
    key = f"dunning-pause:{fixed.pause_id}"
    try:
        gateway.pause_subscription(
            fixed.subscription_id,
            behavior=BEHAVIOR,
            resumes_at=int(fixed.resumes_at.timestamp()),
            idempotency_key=f"{key}:pause",
        )
    except (InvalidRequest, NotFound) as exc:
        return _Outcome(None, str(exc)[:2000])
    try:
        invoice = gateway.void_invoice(fixed.invoice_id, idempotency_key=f"{key}:void")
    except InvalidRequest:  # paid or voided meanwhile: the invoice is as Stripe says
        invoice = gateway.retrieve_invoice(fixed.invoice_id)
    return _Outcome(invoice, None)


def _record(
    session: Session, rt: Runtime, fixed: _Request, outcome: _Outcome, now: datetime
) -> PauseView:
    pause = session.get(DunningPause, fixed.pause_id, with_for_update=True)
    assert pause is not None
    case = session.get(RecoveryCase, pause.case_id, with_for_update=True)
    assert case is not None
    locales = _locales(session, case.customer_id)
    if pause.status != "accepting":
        return _decided(pause, locales)
    if outcome.error is not None:
        pause.status, pause.error = "failed", outcome.error
        case_log.record(
            session,
            case,
            now,
            "pause_failed",
            f"Stripe refused the pause: {outcome.error}",
            dedupe_key=f"case:{case.id}:pause_failed",
        )
        return _decided(pause, locales)
    pause.status, pause.applied_at = "accepted", now
    paid = outcome.invoice is not None and so.invoice_state(outcome.invoice).status == "paid"
    mark_paused(session, case, now)
    until = f"collection paused in Stripe until {pause.resumes_at:%Y-%m-%d}"
    case_log.record(
        session,
        case,
        now,
        "paused",
        f"{until}; the invoice was paid meanwhile, so nothing was voided"
        if paid
        else f"{until}; the unpaid invoice voided",
        {"resumes_at": pause.resumes_at.isoformat(), "pause_id": pause.id},
        f"case:{case.id}:paused",
    )
    notices.plan_resume_notice(session, rt, pause, case, now)
    return _decided(pause, locales)


# ---- the same, as a due action: a click whose Stripe call did not finish is carried out ----


def decide_apply(ctx: ActionContext, action: Claimed) -> _Request | None:
    pause = ctx.session.get(DunningPause, int(action.payload["pause_id"]), with_for_update=True)
    if pause is None or pause.status != "accepting":
        return None  # carried out (or refused) by the page already
    return _Request(pause.id, pause.subscription_id, pause.invoice_id, pause.resumes_at)


def call_apply(providers: Providers, plan: _Request, deadline: Deadline) -> _Outcome:
    deadline.check("pausing collection")
    return _carry_out(providers.gateway, plan)


def record_apply(ctx: ActionContext, action: Claimed, plan: _Request, outcome: _Outcome) -> None:
    _record(ctx.session, ctx.runtime, plan, outcome, ctx.clock.now())


run_apply = ThreePhase(decide=decide_apply, call=call_apply, record=record_apply)


def mark_paused(session: Session, case: RecoveryCase, now: datetime) -> None:
    """Close the case as paused. Voiding the invoice may have closed it already (its webhook
    can beat our record): a pause the customer chose is what ended it, so say so."""
    if case.status in ACTIVE:
        case_state.mark_closed(session, case, CloseReason.PAUSED, now)
    elif case.status == CaseStatus.CLOSED and case.close_reason == CloseReason.VOIDED:
        case.close_reason = CloseReason.PAUSED.value


def pause_of(session: Session, case_id: int) -> DunningPause | None:
    return session.scalar(select(DunningPause).where(DunningPause.case_id == case_id))
