"""The words the dashboard uses for the service's keys (triggers, decline categories, reasons,
offers, statuses): one table each, shared by every page and chart."""

from __future__ import annotations

from recovery.rules import RulesError
from recovery.web import runtime

LOCALE = "en"

TRIGGERS = {
    "our_retry": "Our retry",
    "card_update_link": "Card-update link",
    "hosted_invoice_page": "Hosted invoice page",
    "stripe_retry": "Stripe's own retry",
    "out_of_band": "Paid outside Stripe",
}
CHANNELS = {"email": "After an email", "sms": "After an SMS", "none": "Before any reminder"}
CATEGORIES = {
    "soft": "Soft decline (retried)",
    "needs_new_card": "Needs a new card",
    "needs_customer": "Needs the customer",
    "never_retry": "Never retry",
    "unknown": "Not known",
}
LOST_REASONS = {
    "dunning_ended": "Dunning ended",
    "voided": "Invoice voided",
    "marked_uncollectible": "Marked uncollectible",
    "subscription_cancelled": "Subscription cancelled",
    "nothing_due": "Nothing due",
    "paused": "Paused instead of lost",
    "deleted": "Invoice deleted",
    "admin_paid_elsewhere": "Closed: paid elsewhere",
    "admin_written_off": "Closed: written off",
    "admin_customer_left": "Closed: customer left",
    "admin_duplicate": "Closed: duplicate",
    "admin_other": "Closed by an admin",
}
OFFERS = {
    "pause": "Pause",
    "downgrade": "Downgrade",
    "longer_term": "Longer term",
    "discount": "Discount",
}
CASE_STATUSES = {
    "open": "open",
    "retrying": "retrying",
    "awaiting_customer": "awaiting the customer",
    "recovered": "recovered",
    "lost": "lost",
    "closed": "closed",
}


def label(mapping: dict[str, str], key: str | None) -> str:
    if not key:
        return "—"
    return mapping.get(key) or key.replace("_", " ").capitalize()


def reason_label(key: str | None) -> str:
    """A cancel-flow reason as the business named it in its rules."""
    if not key or key == "none":
        return "No reason given"
    try:
        reason = runtime().rules.cancel_flow.reason(key)
    except RulesError:
        reason = None
    custom = reason.custom_label(LOCALE) if reason is not None else None
    return custom or key.replace("_", " ").capitalize()


MESSAGE_STATUSES = {
    "pending": "planned",
    "sent": "sent",
    "failed": "could not be sent",
    "cancelled": "not sent: no longer needed",
    "shadow": "not sent: shadow mode (would have gone out then)",
}
SUBSCRIPTION_STATUSES = {
    "active": "active",
    "trialing": "in a free trial",
    "past_due": "past due",
    "unpaid": "unpaid",
    "canceled": "cancelled",
    "incomplete": "incomplete",
    "incomplete_expired": "expired before its first payment",
    "paused": "paused",
}
