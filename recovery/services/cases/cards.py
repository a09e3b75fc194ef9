"""The card Stripe will charge for a case, with the case's customer: read for every decision,
every plan of reminders and every message written.

A decision reads the card with the customer (services/cases/evidence.py) and the reminders
planner, which runs next in the same event, needs the same three facts: what the decision
read is remembered for it (`remember`), once, and forgotten whenever the mirror is written
(a later event, or a due action's own mirror write, may change the card or the customer)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from recovery.db import dialect_of, in_list
from recovery.models import AccountContact, Customer, PaymentMethod, RecoveryCase, Subscription

# The case's current card (None: none), its customer (None: not in the mirror) and whether the
# customer has account contacts.
CardAndCustomer = tuple[PaymentMethod | None, Customer | None, bool]

_REMEMBERED = "recovery.cards_read"


def current_card(session: Session, case: RecoveryCase) -> PaymentMethod | None:
    """The card Stripe will charge: the subscription's default, else the customer's."""
    if not case.subscription_id and not case.customer_id:
        return None
    # The first of the four candidates and its card, in one prepared statement, rather than
    # loading the subscription and the customer (a statement each) and then the card: this
    # runs on every decision and every reminder written.
    pm_id, pm = session.execute(
        _CURRENT_CARD, {"subscription_id": case.subscription_id, "customer_id": case.customer_id}
    ).one()
    return card_of(pm_id, pm)


def card_of(pm_id: str | None, pm: PaymentMethod | None) -> PaymentMethod | None:
    """The current card from its id and its mirrored row: a card known by id only is a card
    still (no row yet: its webhook is on its way)."""
    if not pm_id:
        return None
    return pm if pm is not None else PaymentMethod(id=pm_id)


def read_as(pm_id: str | None, pm: Any, customer: Any, has_contacts: Any) -> CardAndCustomer:
    """A row of `_CARD_WITH_CUSTOMER`'s columns as `card_and_customer` returns it. A deleted
    customer's contacts get nothing (services/outreach/contacts.py's rule)."""
    contacts = bool(has_contacts) and customer is not None and not customer.deleted
    return card_of(pm_id, pm), customer, contacts


def card_and_customer(session: Session, case: RecoveryCase) -> CardAndCustomer:
    """`current_card`, the case's customer and whether the customer has account contacts (most
    have none), in one statement: the reminders planner needs all three for every plan and
    every confirmation (the contacts were a statement of their own, built anew each time) -
    none when the case's decision has just read them (`remember`)."""
    remembered = session.info.get(_REMEMBERED)
    if remembered and case.id in remembered:
        return remembered.pop(case.id)  # type: ignore[no-any-return]
    if not case.subscription_id and not case.customer_id:
        return None, None, False
    row = session.execute(
        CARD_WITH_CUSTOMER,
        {"subscription_id": case.subscription_id, "customer_id": case.customer_id},
    ).one()
    return read_as(*row)


def remember(session: Session, case_id: int, found: CardAndCustomer) -> None:
    """What a decision read of the case's card and customer, for the next `card_and_customer`
    of the case in this unit of work - unless the mirror is written first (`forget`)."""
    session.info.setdefault(_REMEMBERED, {})[case_id] = found


def forget(session: Session) -> None:
    """The mirror was written (or an event's processing ended): what was remembered may be
    stale."""
    session.info.pop(_REMEMBERED, None)


def _card_id(column: Any, model: Any, key: str) -> Any:
    # '' is no card, as NULL is (the first truthy candidate counts).
    return func.nullif(select(column).where(model.id == bindparam(key)).scalar_subquery(), "")


# Stripe's order: the subscription's default card, its default source, then the customer's.
_CARD_ID = select(
    func.coalesce(
        _card_id(Subscription.default_payment_method_id, Subscription, "subscription_id"),
        _card_id(Subscription.default_source_id, Subscription, "subscription_id"),
        _card_id(Customer.default_payment_method_id, Customer, "customer_id"),
        _card_id(Customer.default_source_id, Customer, "customer_id"),
    ).label("pm_id")
).subquery("candidate")
_CURRENT_CARD = (
    select(_CARD_ID.c.pm_id, PaymentMethod)
    .select_from(_CARD_ID)
    .outerjoin(PaymentMethod, PaymentMethod.id == _CARD_ID.c.pm_id)
)
# The card, the customer and whether it has contacts: `card_and_customer`'s one statement, and
# the start of a decision's (evidence.py adds the case's experiment arm).
CARD_WITH_CUSTOMER = _CURRENT_CARD.add_columns(
    Customer,
    select(AccountContact.id)
    .where(
        AccountContact.customer_id == bindparam("customer_id"),
        AccountContact.removed_at.is_(None),
    )
    .exists()
    .label("has_contacts"),
).outerjoin(Customer, Customer.id == bindparam("customer_id"))


def cases_cards(*columns: Any) -> Any:
    """Each case's row with its current card (`pm_id` and the PaymentMethod, as `_CARD_ID`:
    the subscription's default card, its default source, then the customer's; '' is no card,
    as NULL is), its customer and whether the customer has contacts, then `columns`."""
    pm_id = func.coalesce(
        func.nullif(Subscription.default_payment_method_id, ""),
        func.nullif(Subscription.default_source_id, ""),
        func.nullif(Customer.default_payment_method_id, ""),
        func.nullif(Customer.default_source_id, ""),
    )
    contacts = (
        select(AccountContact.id)
        .where(
            AccountContact.customer_id == RecoveryCase.customer_id,
            AccountContact.removed_at.is_(None),
        )
        .exists()
    )
    return (
        select(
            RecoveryCase.id,
            pm_id.label("pm_id"),
            PaymentMethod,
            Customer,
            contacts.label("has_contacts"),
            *columns,
        )
        .select_from(RecoveryCase)
        .outerjoin(Subscription, Subscription.id == RecoveryCase.subscription_id)
        .outerjoin(Customer, Customer.id == RecoveryCase.customer_id)
        .outerjoin(PaymentMethod, PaymentMethod.id == pm_id)
    )


def cards_and_customers(
    session: Session, cases: Sequence[RecoveryCase]
) -> dict[int, CardAndCustomer]:
    """`card_and_customer` for many cases in one statement: a round's messages (the thank-you
    notes of the cases its payments recovered) read them together."""
    found: dict[int, CardAndCustomer] = {case.id: (None, None, False) for case in cases}
    ids = sorted({case.id for case in cases if case.subscription_id or case.customer_id})
    if not ids:
        return found
    statement = _cards_for_messages_statement(dialect_of(session))
    for case_id, *row in session.execute(statement, {"ids": ids}):
        found[case_id] = read_as(*row)
    return found


@functools.cache
def _cards_for_messages_statement(dialect: str) -> Any:
    return cases_cards().where(in_list(RecoveryCase.id, "ids", dialect))
