"""The words of a case's timeline: Stripe's codes, our event kinds and message templates as
sentences a billing team reads, not field names (`stop: True`, `amount: 900`,
`cancel_subscription`, "Visa response 54 is category 3").

Decline codes as Stripe documents them (docs.stripe.com/declines/codes; docs/stripe.md), the
network codes as docs/card-networks.md explains them.
"""

from __future__ import annotations

import re

from recovery.i18n import major_units

DECLINES = {
    "insufficient_funds": "not enough money on the card",
    "generic_decline": "the bank declined without giving a reason",
    "do_not_honor": "the bank declined without giving a reason",
    "processing_error": "a processing error at the bank or network",
    "expired_card": "the card has expired",
    "incorrect_number": "the card number is wrong",
    "incorrect_cvc": "the security code is wrong",
    "invalid_expiry_year": "the expiry date is wrong",
    "invalid_expiry_month": "the expiry date is wrong",
    "lost_card": "the card was reported lost",
    "stolen_card": "the card was reported stolen",
    "pickup_card": "the bank wants the card taken out of use",
    "do_not_try_again": "the bank says never to charge this card again",
    "restricted_card": "the card is restricted",
    "authentication_required": "the bank wants the customer to confirm the payment (3-D Secure)",
    "call_issuer": "the bank wants the customer to call it",
    "card_velocity_exceeded": "the card's spending limit was reached",
    "withdrawal_count_limit_exceeded": "the card's spending limit was reached",
    "card_not_supported": "the card does not support this kind of payment",
    "currency_not_supported": "the card does not support this currency",
    "fraudulent": "the payment looked fraudulent to the bank",
    "transaction_not_allowed": "the bank does not allow this kind of payment on the card",
    "try_again_later": "the bank asked to try again later",
    "card_declined": "the card was declined",
}
CATEGORY_WHY = {
    "soft": "the bank may approve it later, so it is retried",
    "needs_new_card": "only a new card can pay it, so this card is not charged again",
    "needs_customer": "only the customer can clear it, with their bank",
    "never_retry": "this card must never be charged again",
}
TEMPLATES = {
    "soft_decline": "that the payment failed, with a link to update the card",
    "card_replace": "asking for a new card, with a link to add one",
    "authentication_needed": "asking them to confirm the payment with their bank",
    "final_notice": "a last notice before the subscription ends",
    "recovered": "confirming the payment went through",
    "subscription_ended": "that the subscription has ended",
    "card_expiring": "that their card expires before the next renewal",
    "cancel_confirmation": "confirming the cancellation",
    "pause_ending": "that their pause is about to end",
    "pause_resumes": "that billing resumes after their pause, with a card-update link",
}
SEQUENCES = {
    "soft": "the reminders for a declined payment",
    "new_card": "the reminders asking for a new card",
    "authentication": "the reminders asking to confirm the payment",
}
END_OF_DUNNING = {
    "cancel_subscription": "the subscription is cancelled",
    "mark_uncollectible": "the invoice is marked uncollectible",
    "leave_past_due": "the invoice is left open and the subscription past due",
    "offer_pause": "the pause offered in the final notice was not taken: the subscription ends",
}
VIA = {
    "our_retry": "by our retry",
    "card_update_link": "through the card-update link",
    "hosted_invoice_page": "on Stripe's hosted invoice page",
    "stripe_retry": "by Stripe's own retry",
    "out_of_band": "outside Stripe",
}
MESSAGE_STATUS = {
    "sent": "sent",
    "pending": "planned",
    "failed": "could not be sent",
    "cancelled": "not sent: no longer needed",
}
STRIPE_EVENTS = {  # what Stripe's event says, after "Stripe:" on the page
    "invoice.payment_failed": "the payment failed",
    "invoice.payment_action_required": "the bank wants the payment confirmed",
    "invoice.paid": "the invoice was paid",
    "invoice.payment_succeeded": "the payment succeeded",
    "invoice.updated": "the invoice changed",
    "invoice.finalized": "the invoice was finalized",
    "invoice.voided": "the invoice was voided",
    "invoice.marked_uncollectible": "the invoice was marked uncollectible",
    "invoice.deleted": "the invoice was deleted",
    "invoice.created": "the invoice was created",
    "charge.failed": "a charge was declined",
    "charge.succeeded": "a charge succeeded",
    "payment_intent.payment_failed": "a payment was declined",
    "payment_intent.succeeded": "a payment succeeded",
}
LINK_OUTCOMES = {
    "paid": "the customer saved a card and the invoice was paid",
    "nothing_due": "the customer saved a card; nothing was left to pay",
    "declined": "the customer saved a card, and it was declined",
    "authentication_required": "the customer saved a card; their bank wants the payment confirmed",
}
CAUSE_EVENTS = {
    "customer.updated": "the customer's default card changed",
    "payment_method.attached": "a card was added",
    "payment_method.updated": "the card's details changed",
    "payment_method.automatically_updated": "the card network updated the card",
    "setup_intent.succeeded": "a card was saved",
    "customer.subscription.updated": "the subscription's card changed",
    "charge.failed": "a charge was declined",
    "payment_intent.payment_failed": "a payment was declined",
    "invoice.updated": "Stripe updated the invoice",
}
ADMIN = {
    "retry_now": "asked for a retry now",
    "pause": "paused dunning",
    "resume": "resumed dunning",
    "close": "closed the case",
    "resend_link": "sent the customer a new card-update link",
}

# The retry policy's own explanation of a retry's timing, after its "next try <time> - ".
_TIMING = re.compile(r"next try [^-]+ - (?:attempt \d+ of \d+,?\s*)?(?P<why>.+)$")


def money(amount: int | None, currency: str) -> str:
    return f"{major_units(amount or 0, currency):,} {currency.upper()}"


def decline_words(code: str | None) -> str:
    """`insufficient_funds` -> "not enough money on the card (insufficient_funds)"."""
    if not code:
        return "the card was declined"
    words = DECLINES.get(code)
    return f"{words} ({code})" if words else f"declined ({code})"


def card_words(brand: str | None, last4: str | None) -> str:
    name = (brand or "card").replace("_", " ").title() if brand else "the card"
    if brand and brand.lower() == "amex":
        name = "American Express"
    return f"{name} ending {last4}" if last4 else name


def retry_timing(policy_text: str) -> str | None:
    """Why the retry is at that time, as the retry policy wrote it (without its own attempt
    numbering, which counts Stripe's first charge): "about a day after the failure"."""
    found = _TIMING.search(policy_text)
    if not found:
        return None
    why = found.group("why").strip().rstrip(".")
    return why or None


def cause_words(cause: str | None) -> str:
    if not cause:
        return ""
    if cause == "invoice.payment_failed":
        return "after the payment failed"
    if cause == "invoice.payment_action_required":
        return "after the bank asked for the payment to be confirmed"
    if cause.startswith("our attempt ") and cause.endswith(" declined"):
        return f"after our retry {cause.split()[2]} was declined"
    if cause in CAUSE_EVENTS:
        return f"after {CAUSE_EVENTS[cause]}"
    if "." in cause and " " not in cause:
        return f"after Stripe's {cause} event"
    return cause if cause.startswith(("after", "when")) else f"after {cause}"


def template_words(template: str) -> str:
    return TEMPLATES.get(template, template.replace("_", " "))
