"""What a message to a subscriber says: its locale, zone and calendar, the card-update link,
the words every template may use, and the rendered email or text. Shared by the reminders
planner (`reminders`, which re-exports these names) and the other messages."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from recovery import i18n
from recovery.config import Settings
from recovery.domain import sms as sms_rules
from recovery.domain.business_days import BusinessCalendar, calendar_for, customer_country
from recovery.domain.timezones import customer_timezone
from recovery.models import Customer, PaymentMethod, RecoveryCase
from recovery.rules import Rules
from recovery.services.card_update import links as card_update_links

# ---- what a message says --------------------------------------------------------------------


# Templates that carry a card-update link (SMS texts always do; they follow these steps).
LINKED = frozenset(
    {"soft_decline", "card_replace", "authentication_needed", "card_expiring", "final_notice"}
)


def card_update_link(
    session: Session,
    case: RecoveryCase,
    rules: Rules,
    settings: Settings,
    now: datetime,
    message_key: str,
    sent_at: datetime | None = None,
) -> str:
    """The card-update link of the message with this dedupe key (its token is derived from the
    key; the stored body keeps a placeholder, see card_update_links)."""
    assert case.customer_id is not None
    return card_update_links.link_for_message(
        session,
        message_key=message_key,
        customer_id=case.customer_id,
        case_id=case.id,
        now=now,
        settings=settings,
        rules=rules,
        sent_at=sent_at,
    )


def locale_of(customer: Customer | None) -> str:
    return i18n.negotiate(customer.preferred_locales if customer else []) or i18n.DEFAULT_LOCALE


def calendar_of(customer: Customer | None) -> BusinessCalendar:
    """The customer's business days: reminders avoid their weekends and public holidays."""
    return calendar_for(
        customer_country(
            customer.address_country if customer else None,
            customer.preferred_locales if customer else (),
        )
    )


def zone_of(customer: Customer | None) -> str:
    return customer_timezone(
        customer.address_country if customer else None,
        customer.preferred_locales if customer else (),
    )


def card_label(pm: PaymentMethod | None, locale: str) -> str:
    if pm is None or not pm.last4:
        return ""
    brand = {"amex": "American Express", "mastercard": "Mastercard", "visa": "Visa"}.get(
        (pm.brand or "").lower(), (pm.brand or "card").title()
    )
    text: str = i18n.translations(locale).gettext("%(brand)s card ending in %(last4)s")
    return text % {"brand": brand, "last4": pm.last4}


def message_context(
    *,
    rules: Rules,
    customer: Customer | None,
    locale: str,
    amount: int,
    currency: str,
    card: PaymentMethod | None,
    link: str,
    deadline: datetime,
) -> dict[str, Any]:
    """Everything every template may use; StrictUndefined catches anything else."""
    business = rules.business
    return {
        "business": business.name,
        "sender": business.sender_name,
        "product": business.name,
        "name": ((customer.name or "").split() or [""])[0] if customer else "",
        "amount": i18n.format_money(amount, currency, locale),
        "card": card_label(card, locale),
        "link": link,
        "deadline": i18n.format_day(deadline, locale),
    }


def render_email(template: str, locale: str, context: Mapping[str, Any]) -> i18n.Message:
    return i18n.render_message(f"emails/{template}.txt", locale, **context)


def render_sms(
    template: str, locale: str, context: Mapping[str, Any], max_segments: int
) -> str | None:
    """The text, or its short form when too long; None when even that exceeds the limit."""
    env = i18n.text_environment(i18n.negotiate([locale]) or i18n.DEFAULT_LOCALE)
    for name in ("emails/sms.txt", "emails/sms_short.txt"):
        body = " ".join(env.get_template(name).render(template=template, **context).split())
        if sms_rules.segments(body).count <= max_segments:
            return body
    return None
