"""Unsubscribing from marketing mail: `/unsubscribe/<token>`, from the link in the email or its
`List-Unsubscribe` header (RFC 8058: the mail client POSTs `List-Unsubscribe=One-Click`, without
cookies - docs/messaging.md#one-click-unsubscribe). The opt-out is per address at the customer
and holds for every later win-back and annual offer; reminders about money owed still go out.
A GET only shows the page (link scanners open links); the POST unsubscribes, and again is a
no-op."""

from __future__ import annotations

from dataclasses import dataclass

from recovery.domain.sms import mask_email
from recovery.models import Customer
from recovery.runtime import Runtime
from recovery.services.outreach import links


class Refused(Exception):
    """Not one of our links: 404."""


@dataclass(frozen=True)
class Standing:
    address: str  # masked: the page may be forwarded
    unsubscribed: bool
    locales: tuple[str, ...]


def _standing(rt: Runtime, token: str, *, act: str | None) -> Standing:
    now = rt.clock.now()
    with rt.db.transaction() as session:
        link = links.find(session, token, now, any_state=True)
        if link is None:
            raise Refused(token)
        if act is not None:
            links.opt_out(session, link.customer_id, link.recipient, act, now)
        customer = session.get(Customer, link.customer_id)
        return Standing(
            address=mask_email(link.recipient),
            unsubscribed=links.opted_out(session, link.customer_id, link.recipient),
            locales=tuple(customer.preferred_locales or []) if customer else (),
        )


def page(rt: Runtime, token: str) -> Standing:
    return _standing(rt, token, act=None)


def unsubscribe(rt: Runtime, token: str, *, one_click: bool) -> Standing:
    return _standing(rt, token, act="one_click" if one_click else "page")
