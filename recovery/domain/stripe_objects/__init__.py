"""Stripe objects of any API version -> the plain states we mirror. Pure: dicts in, dataclasses out.

Two shapes reach us: the pinned current version (2025-03-31 "basil" and later: the invoice names
its subscription under `parent.subscription_details`, periods live on subscription items, charges
and PaymentIntents no longer name their invoice) and older ones (localstripe speaks 2017-08-15:
`invoice.subscription`, `invoice.charge`, top-level `current_period_end`, `plan` instead of
`price`). Every reader accepts both, and an id where an expanded object could be.

The modules: `fields` (reading one field: ids or expanded objects, bounded numbers and
timestamps, strings, card brands), `states` (customers, cards, subscriptions with their items,
invoices) and `attempts` (payment attempts from charges and PaymentIntents, decline details
included).
"""

from recovery.domain.stripe_objects.attempts import (
    AttemptState,
    attempt_from_charge,
    attempt_from_payment_intent,
)
from recovery.domain.stripe_objects.fields import MAX_TIMESTAMP, MappingError, normalize_brand, ref
from recovery.domain.stripe_objects.states import (
    CardState,
    CustomerState,
    InvoiceState,
    ItemState,
    SubscriptionState,
    card_state,
    customer_state,
    invoice_state,
    invoice_subscription_id,
    subscription_state,
)

__all__ = [
    "MAX_TIMESTAMP",
    "AttemptState",
    "CardState",
    "CustomerState",
    "InvoiceState",
    "ItemState",
    "MappingError",
    "SubscriptionState",
    "attempt_from_charge",
    "attempt_from_payment_intent",
    "card_state",
    "customer_state",
    "invoice_state",
    "invoice_subscription_id",
    "normalize_brand",
    "ref",
    "subscription_state",
]
