"""Where a customer's billing stands, for the business's own app to show: the JSON of
`GET /api/v1/customers/<id>/billing-status` and the in-app banner (`/embed/v1`).

States, the first that applies:
- action_required: a recovery case waits for the customer to confirm a payment (3-D Secure);
  the link is Stripe's hosted invoice page, where that happens.
- past_due: a recovery case is open (a payment failed and is still owed), or a subscription is
  past due or unpaid without one; the link is a card-update link (or the invoice page).
- canceling: a live subscription is set to end (cancel_at_period_end or cancel_at).
- paused: a subscription's collection is paused.
- ok: nothing to say.

The card-update link is the case's own, issued for today (`link_for_message` with a per-day
key): the same link all day however often the status is asked, a fresh one tomorrow, each good
for `[card_update] link_days` - and, like every link of a case, dead once nothing is owed.
Every sentence is in the customer's language and true for the state it describes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from recovery import i18n
from recovery.config import Settings
from recovery.db import Database
from recovery.domain.cases import ACTIVE, AwaitingReason
from recovery.models import Customer, Invoice, RecoveryCase, Subscription
from recovery.rules import Rules
from recovery.services.card_update import links

LIVE = ("active", "trialing", "past_due", "unpaid", "paused")
OWING = ("past_due", "unpaid")


class BillingState(StrEnum):
    OK = "ok"
    PAST_DUE = "past_due"
    ACTION_REQUIRED = "action_required"
    CANCELING = "canceling"
    PAUSED = "paused"


@dataclass(frozen=True)
class BillingStatus:
    customer_id: str
    state: BillingState
    amount_due: int | None
    currency: str | None
    update_url: str | None
    message: str | None  # in `locale`; None when there is nothing to say (ok)
    action: str | None  # the label of the link's button, in `locale`
    locale: str

    def as_json(self) -> dict[str, Any]:
        return {
            "customer": self.customer_id,
            "state": self.state.value,
            "amount_due": self.amount_due,
            "currency": self.currency,
            "update_url": self.update_url,
            "message": self.message,
            "locale": self.locale,
        }


def banner_labels(locale: str) -> dict[str, str]:
    """The banner's own words (its landmark's name, the close button's), in `locale`."""
    gettext = i18n.translations(locale).gettext
    return {"region": gettext("Billing notice"), "dismiss": gettext("Dismiss")}


def billing_status(
    db: Database,
    customer_id: str,
    now: datetime,
    *,
    settings: Settings,
    rules: Rules,
    locales: Sequence[str | None] = (),
    fallback_locales: Sequence[str] = (),
) -> BillingStatus | None:
    """The customer's status, or None for a customer we do not know. Locale: the first of
    `locales` we ship, else the customer's Stripe `preferred_locales`, else `fallback_locales`
    (a browser's), else English."""
    for attempt in range(2):
        try:
            with db.transaction() as session:
                return _status(
                    session, customer_id, now, settings, rules, locales, fallback_locales
                )
        except IntegrityError:
            # Two requests issued today's link at once; the second finds it on the retry.
            if attempt:
                raise
    return None  # pragma: no cover


def _status(
    session: Session,
    customer_id: str,
    now: datetime,
    settings: Settings,
    rules: Rules,
    locales: Sequence[str | None],
    fallback_locales: Sequence[str],
) -> BillingStatus | None:
    customer = session.get(Customer, customer_id)
    if customer is None or customer.deleted:
        return None
    locale = (
        i18n.negotiate([*locales, *(customer.preferred_locales or ()), *fallback_locales])
        or i18n.DEFAULT_LOCALE
    )
    gettext = i18n.translations(locale).gettext

    def status(state: BillingState, **fields: Any) -> BillingStatus:
        values: dict[str, Any] = {
            "amount_due": None,
            "currency": None,
            "update_url": None,
            "message": None,
            "action": None,
            **fields,
        }
        return BillingStatus(customer_id, state, locale=locale, **values)

    cases = session.scalars(
        select(RecoveryCase)
        .where(
            RecoveryCase.customer_id == customer_id,
            RecoveryCase.status.in_([s.value for s in ACTIVE]),
        )
        .order_by(RecoveryCase.opened_at.desc(), RecoveryCase.id.desc())
    ).all()
    if cases:
        newest = cases[0]
        amount = sum(_owed(session, c) for c in cases if c.currency == newest.currency)
        money = i18n.format_money(amount, newest.currency, locale)
        authenticate = next(
            (
                c
                for c in cases
                if c.awaiting == AwaitingReason.AUTHENTICATION and c.hosted_invoice_url
            ),
            None,
        )
        if authenticate is not None:
            return status(
                BillingState.ACTION_REQUIRED,
                amount_due=amount,
                currency=newest.currency,
                update_url=authenticate.hosted_invoice_url,
                message=gettext("Your bank needs you to confirm your payment of %(amount)s.")
                % {"amount": money},
                action=gettext("Confirm payment"),
            )
        url = links.link_for_message(
            session,
            message_key=f"billing-status:case:{newest.id}:{now.date().isoformat()}",
            customer_id=customer_id,
            case_id=newest.id,
            now=now,
            settings=settings,
            rules=rules,
        )
        return status(
            BillingState.PAST_DUE,
            amount_due=amount,
            currency=newest.currency,
            update_url=url,
            message=gettext(
                "We could not collect your payment of %(amount)s. Please update your card."
            )
            % {"amount": money},
            action=gettext("Update card"),
        )
    subs = session.scalars(
        select(Subscription)
        .where(Subscription.customer_id == customer_id, Subscription.status.in_(LIVE))
        .order_by(Subscription.created.desc())
    ).all()
    owing = next((s for s in subs if s.status in OWING), None)
    if owing is not None:  # past due without a case of ours (e.g. one opened before we ran)
        invoice = session.get(Invoice, owing.latest_invoice_id) if owing.latest_invoice_id else None
        if invoice is not None and invoice.status == "open" and invoice.amount_remaining:
            return status(
                BillingState.PAST_DUE,
                amount_due=invoice.amount_remaining,
                currency=invoice.currency,
                update_url=invoice.hosted_invoice_url,
                message=gettext(
                    "We could not collect your payment of %(amount)s. Please update your card."
                )
                % {"amount": i18n.format_money(invoice.amount_remaining, invoice.currency, locale)},
                action=gettext("Update card") if invoice.hosted_invoice_url else None,
            )
    ending = next((s for s in subs if s.cancel_at_period_end or s.cancel_at), None)
    if ending is not None:
        end = ending.cancel_at or _period_end(ending)
        message = (
            gettext("Your subscription ends on %(date)s.") % {"date": i18n.format_day(end, locale)}
            if end is not None
            else gettext("Your subscription is set to end.")
        )
        return status(BillingState.CANCELING, message=message)
    paused = next((s for s in subs if s.pause_behavior or s.status == "paused"), None)
    if paused is not None:
        resumes = paused.pause_resumes_at
        message = (
            gettext("Your subscription is paused until %(date)s.")
            % {"date": i18n.format_day(resumes, locale)}
            if resumes is not None
            else gettext("Your subscription is paused.")
        )
        return status(BillingState.PAUSED, message=message)
    return status(BillingState.OK)


def _owed(session: Session, case: RecoveryCase) -> int:
    """What is still owed on the case's invoice (a partial payment counts), else the case's."""
    invoice = session.get(Invoice, case.invoice_id)
    if invoice is not None and invoice.status == "open" and invoice.amount_remaining:
        return invoice.amount_remaining
    return case.amount_due


def _period_end(sub: Subscription) -> datetime | None:
    ends = [i.current_period_end for i in sub.items if i.current_period_end is not None]
    return sub.current_period_end or (max(ends) if ends else None)
