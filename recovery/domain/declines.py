"""What a failed card payment tells us about retrying it.

A Stripe decline carries up to five independent signals: Stripe's ``decline_code`` (or
``failure_code``), Stripe's own ``outcome.advice_code``, Radar's ``outcome.type``, and the card
network's raw ``network_advice_code`` / ``network_decline_code``. Each is read on its own and the
most restrictive reading wins, so a generic ``do_not_honor`` never hides a Mastercard "do not try
again". Sources: docs/card-networks.md and docs/stripe.md#decline-fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

__all__ = [
    "Classification",
    "Decline",
    "DeclineCategory",
    "classify",
    "is_insufficient_funds",
    "normalize_brand",
]


class DeclineCategory(StrEnum):
    """What has to happen before the same invoice can be paid."""

    SOFT = "soft"  # the issuer may approve later: retry
    NEEDS_NEW_CARD = "needs_new_card"  # the card data is wrong or dead: ask for a new card
    NEEDS_CUSTOMER = "needs_customer"  # authentication or a call to the bank: only they can fix it
    NEVER_RETRY = "never_retry"  # fraud, lost/stolen, revoked, network "do not try again"


# Restrictiveness, least first. needs_new_card outranks needs_customer because only a card
# change unblocks it, while a customer can clear needs_customer without one (3DS, a bank call).
_RANK = {
    DeclineCategory.SOFT: 0,
    DeclineCategory.NEEDS_CUSTOMER: 1,
    DeclineCategory.NEEDS_NEW_CARD: 2,
    DeclineCategory.NEVER_RETRY: 3,
}


@dataclass(frozen=True, slots=True)
class Decline:
    """The decline fields of a Stripe charge or API error (``charge.outcome`` and friends)."""

    failure_code: str | None = None
    decline_code: str | None = None
    advice_code: str | None = None  # charge.outcome.advice_code
    network_advice_code: str | None = None
    network_decline_code: str | None = None
    card_brand: str | None = None
    outcome_type: str | None = None
    outcome_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Classification:
    category: DeclineCategory
    # Earliest moment after the decline that a retry on this card is allowed (Mastercard 24-30).
    not_before: timedelta | None
    # Never charge THIS card again (fees per network rule); a different card may still be tried.
    stop_card: bool
    reason: str


def _c(
    category: DeclineCategory,
    reason: str,
    *,
    stop_card: bool = False,
    not_before: timedelta | None = None,
) -> Classification:
    return Classification(category, not_before, stop_card, reason)


_SOFT = DeclineCategory.SOFT
_NEW_CARD = DeclineCategory.NEEDS_NEW_CARD
_CUSTOMER = DeclineCategory.NEEDS_CUSTOMER
_NEVER = DeclineCategory.NEVER_RETRY

# ---- Mastercard Merchant Advice Codes --------------------------------------------------------
# Meanings: Braintree's MAC reference and PayPal's PaymentAdviceCode table (docs/card-networks.md).
# Fees: any retry on the same card within 30 days of MAC 03 or 21 (TabaPay, docs/card-networks.md).
_MASTERCARD_ADVICE: dict[str, Classification] = {
    "01": _c(_NEW_CARD, "Mastercard advice 01: new account information is available"),
    # PayPal's table adds "retry 72 hours later" to 02; the conservative reading costs little.
    "02": _c(_SOFT, "Mastercard advice 02: try again later", not_before=timedelta(hours=72)),
    "03": _c(_NEVER, "Mastercard advice 03: do not try again", stop_card=True),
    "04": _c(_NEW_CARD, "Mastercard advice 04: token requirements not met for this card"),
    "21": _c(_NEVER, "Mastercard advice 21: cardholder stopped recurring payments", stop_card=True),
    "22": _c(_NEW_CARD, "Mastercard advice 22: merchant does not qualify for this card product"),
}
# 24-30 come with Authorization Optimizer on recurring insufficient-funds (51) declines.
_MASTERCARD_WAIT: dict[str, tuple[timedelta, str]] = {
    "24": (timedelta(hours=1), "1 hour"),
    "25": (timedelta(hours=24), "24 hours"),
    "26": (timedelta(days=2), "2 days"),
    "27": (timedelta(days=4), "4 days"),
    "28": (timedelta(days=6), "6 days"),
    "29": (timedelta(days=8), "8 days"),
    "30": (timedelta(days=10), "10 days"),
}
_MASTERCARD_ADVICE.update(
    {
        code: _c(_SOFT, f"Mastercard advice {code}: retry after {label}", not_before=wait)
        for code, (wait, label) in _MASTERCARD_WAIT.items()
    }
)
# 40/41/43 (prepaid / virtual card) are informational and deliberately absent.

# ---- Visa advice codes: the same digits, other meanings --------------------------------------
# 02/03/21: PayPal's PaymentAdviceCode table (docs/card-networks.md), all cardholder stops;
# Visa's Stop Payment Service charges for the 4th and later retries after a stop (Checkout.com).
# 01: Peach Payments' MAC table lists "new account information" for Visa too (not in docs/).
_VISA_ADVICE: dict[str, Classification] = {
    "01": _c(_NEW_CARD, "Visa advice 01: new account information is available"),
    "02": _c(_NEVER, "Visa advice 02: cardholder stopped this payment", stop_card=True),
    "03": _c(
        _NEVER, "Visa advice 03: cardholder stopped all recurring payments to us", stop_card=True
    ),
    "21": _c(
        _NEVER, "Visa advice 21: all recurring payments on this card cancelled", stop_card=True
    ),
}

# ---- Visa response-code categories (network_decline_code) ------------------------------------
# Category 1, "issuer will never approve": Evolve's list (docs/card-networks.md), plus 03, 62, 78,
# 93, which Forte's copy of Visa's table also puts in category 1 - the stricter union costs nothing.
_VISA_CATEGORY_1 = frozenset(
    {"03", "04", "07", "12", "15", "41", "43", "46", "57", "62", "78", "93", "R0", "R1", "R3"}
)
# Category 2, "cannot approve now" (Forte; Cielo for 5C and 9G from 11 April 2025).
_VISA_CATEGORY_2 = frozenset(
    {"19", "51", "59", "61", "65", "75", "86", "91", "96", "N3", "N4", "5C", "9G"}
)
# Category 3, "fix the data first" (Forte). 1A asks for cardholder authentication (SCA).
_VISA_CATEGORY_3_DATA = frozenset({"54", "55", "N7", "82"})
_VISA_AUTHENTICATION = "1A"
# 14 (no such number) is category 1 per Evolve but 3 per Forte: never this card, ask for another.
_VISA_NO_SUCH_NUMBER = "14"

# ---- Mastercard response codes (network_decline_code) -----------------------------------------
# Only the unambiguous "the card is gone" codes. Not from docs/: Peach Payments' scheme table
# puts them in the never-reattempt category for both networks; Stripe usually also reports them
# as pickup_card, lost_card, stolen_card or incorrect_number, so this is belt and braces.
_MASTERCARD_RESPONSE: dict[str, Classification] = {
    "04": _c(_NEVER, "Mastercard response 04: capture card", stop_card=True),
    "14": _c(_NEW_CARD, "Mastercard response 14: invalid card number", stop_card=True),
    "41": _c(_NEVER, "Mastercard response 41: lost card", stop_card=True),
    "43": _c(_NEVER, "Mastercard response 43: stolen card", stop_card=True),
}

# ---- Stripe decline codes (https://docs.stripe.com/declines/codes, docs/card-networks.md) ----
_STRIPE_NEVER = {
    # Fraud: Stripe says show the customer generic_decline. Lost/stolen cards never come back.
    "fraudulent": "the issuer suspects fraud",
    "merchant_blacklist": "the payment matched the account's block list",
    "lost_card": "the card was reported lost",
    "stolen_card": "the card was reported stolen",
    "pickup_card": "the issuer asked for the card to be picked up",
    # Never auto-retried by Stripe (Smart Retries docs).
    "revocation_of_authorization": "the cardholder revoked this authorization",
    "revocation_of_all_authorizations": "the cardholder revoked all authorizations",
    "do_not_try_again": "the issuer said do not try again",  # deprecated; now in advice_code
    "testmode_decline": "a test card was used in live mode",
}
_STRIPE_NEW_CARD = {
    "expired_card": "the card has expired",
    "incorrect_number": "the card number is incorrect",
    "invalid_number": "the card number is invalid",
    "invalid_account": "the card or account is invalid",
    "new_account_information_available": "the bank has new details for this card",
    "card_not_supported": "the card does not support this kind of purchase",
    "currency_not_supported": "the card does not support this currency",
    "incorrect_cvc": "the CVC is incorrect",
    "invalid_cvc": "the CVC is invalid",
    "invalid_expiry_month": "the expiry month is invalid",
    "invalid_expiry_year": "the expiry year is invalid",
    "incorrect_zip": "the postal code is incorrect",
}
_STRIPE_CUSTOMER = {
    "authentication_required": "the bank requires the customer to authenticate (3D Secure)",
    # What Stripe answers an off-session /pay whose PaymentIntent needs 3D Secure: charging
    # again without the customer only asks again.
    "invoice_payment_intent_requires_action": "the bank asks the customer to confirm (3D Secure)",
    "call_issuer": "the customer must call their bank",
    "transaction_not_allowed": "the bank does not allow this payment; the customer must call it",
    "not_permitted": "the payment is not permitted; the customer must call their bank",
    "service_not_allowed": "the bank does not allow this service; the customer must call it",
    "restricted_card": "the card is restricted; the customer must call their bank",
    "security_violation": "the bank flagged a security violation; the customer must call it",
    "pin_try_exceeded": "too many PIN attempts; the customer must call their bank",
    "invalid_amount": "the bank rejects this amount; the customer must call their bank",
}
# incorrect_number is in Stripe's never-auto-retry list; only a different card number fixes it.
_STRIPE_STOP_CARD = frozenset({"incorrect_number", "invalid_number"})
_STRIPE_SOFT = {
    "insufficient_funds": "insufficient funds",
    "processing_error": "a processing error at the bank",
    "issuer_not_available": "the bank could not be reached",
    "reenter_transaction": "the bank asked for the payment to be re-entered",
    "approve_with_id": "the bank could not authorize the payment yet",
    "generic_decline": "a generic decline",
    "do_not_honor": "a do-not-honor decline",
    "card_velocity_exceeded": "the card's spending limit was reached",
    "withdrawal_count_limit_exceeded": "the card's withdrawal limit was reached",
    "try_again_later": "the bank asked to try again later",
    "card_declined": "a card decline with no further detail",
    "duplicate_transaction": "the bank saw an identical payment just before",
    "no_action_taken": "the bank took no action",
}

# ---- Stripe outcome.advice_code (https://docs.stripe.com/declines/card) ----------------------
_ADVICE: dict[str, Classification] = {
    "do_not_try_again": _c(_NEVER, "Stripe advice: do not try this card again", stop_card=True),
    "confirm_card_data": _c(_NEW_CARD, "Stripe advice: the card details need confirming"),
    "try_again_later": _c(_SOFT, "Stripe advice: try again later"),
}


def normalize_brand(brand: str | None) -> str | None:
    """Stripe's ``card.brand`` spelling: "Visa", "MasterCard", "master card" -> visa, mastercard."""
    if brand is None:
        return None
    cleaned = brand.strip().lower().replace(" ", "").replace("_", "")
    return cleaned or None


def _network_code(code: str | None) -> str | None:
    """Network codes are two characters: "r0" -> "R0", "3" -> "03"."""
    if code is None:
        return None
    cleaned = code.strip().upper()
    if not cleaned:
        return None
    return cleaned.zfill(2) if cleaned.isdigit() else cleaned


def _stripe_codes(decline: Decline) -> list[str]:
    """decline_code, then outcome.reason (which repeats it for issuer declines), then
    failure_code (often just "card_declined"); each is read, as any may be the only one set."""
    raw = (decline.decline_code, decline.outcome_reason, decline.failure_code)
    return [code.strip().lower() for code in raw if code and code.strip()]


def is_insufficient_funds(decline: Decline) -> bool:
    """Whether the decline is about money in the account, the case payday targeting is for."""
    if "insufficient_funds" in _stripe_codes(decline):
        return True
    brand = normalize_brand(decline.card_brand)
    ndc = _network_code(decline.network_decline_code)
    # 51 is "insufficient funds" in both Visa's and Mastercard's response-code tables.
    return brand in {"visa", "mastercard"} and ndc == "51"


def _from_network_advice(brand: str | None, code: str | None) -> Classification | None:
    if code is None:
        return None
    if brand == "mastercard":
        return _MASTERCARD_ADVICE.get(code)
    if brand == "visa":
        return _VISA_ADVICE.get(code)
    return None  # other networks publish no advice-code semantics we rely on


def _from_network_response(brand: str | None, code: str | None) -> Classification | None:
    if code is None:
        return None
    if brand == "mastercard":
        return _MASTERCARD_RESPONSE.get(code)
    if brand != "visa":
        return None
    if code in _VISA_CATEGORY_1:
        return _c(
            _NEVER,
            f"Visa response {code} is category 1: the issuer will never approve it",
            stop_card=True,
        )
    if code == _VISA_NO_SUCH_NUMBER:
        return _c(_NEW_CARD, "Visa response 14: no such card number", stop_card=True)
    if code == _VISA_AUTHENTICATION:
        return _c(_CUSTOMER, "Visa response 1A: the customer must authenticate")
    if code in _VISA_CATEGORY_3_DATA:
        return _c(_NEW_CARD, f"Visa response {code} is category 3: the card data must be fixed")
    if code in _VISA_CATEGORY_2:
        return _c(_SOFT, f"Visa response {code} is category 2: the issuer cannot approve now")
    return None  # category 4 (generic): let Stripe's code speak


def _from_stripe_code(code: str) -> Classification | None:
    if code in _STRIPE_NEVER:
        return _c(_NEVER, f"{code}: {_STRIPE_NEVER[code]}", stop_card=True)
    if code in _STRIPE_NEW_CARD:
        return _c(
            _NEW_CARD, f"{code}: {_STRIPE_NEW_CARD[code]}", stop_card=code in _STRIPE_STOP_CARD
        )
    if code == "stop_payment_order":
        # Stripe files it under "customer must act"; Visa puts R0 in category 1 and charges
        # under its Stop Payment Service, so the card is never retried while the order stands.
        return _c(
            _CUSTOMER,
            "stop_payment_order: the cardholder told their bank to stop this payment",
            stop_card=True,
        )
    if code in _STRIPE_CUSTOMER:
        return _c(_CUSTOMER, f"{code}: {_STRIPE_CUSTOMER[code]}")
    if code in _STRIPE_SOFT:
        return _c(_SOFT, f"{code}: {_STRIPE_SOFT[code]}")
    return None


def _from_outcome(outcome_type: str | None, outcome_reason: str | None) -> Classification | None:
    # Radar blocks never reach the issuer and would be blocked again; Stripe never retries
    # highest_risk_level (Smart Retries docs).
    if outcome_reason == "highest_risk_level" or outcome_type == "blocked":
        detail = outcome_reason or "blocked"
        return _c(_NEVER, f"Stripe Radar blocked the payment ({detail})", stop_card=True)
    return None


def classify(decline: Decline) -> Classification:
    """Read every signal on its own; the most restrictive one decides.

    ``not_before`` is the longest wait any signal asks for and ``stop_card`` is set if any signal
    sets it, so combining signals can only make retrying more careful, never less.
    """
    brand = normalize_brand(decline.card_brand)
    stripe_codes = _stripe_codes(decline)
    advice = decline.advice_code.strip().lower() if decline.advice_code else None
    signals = [
        _from_network_advice(brand, _network_code(decline.network_advice_code)),
        _from_network_response(brand, _network_code(decline.network_decline_code)),
        _from_outcome(decline.outcome_type, decline.outcome_reason),
        _ADVICE.get(advice) if advice else None,
        *(_from_stripe_code(code) for code in stripe_codes),
    ]
    found = [s for s in signals if s is not None]
    if not found:
        label = (
            f"{stripe_codes[0]}: not a code we know" if stripe_codes else "no decline code given"
        )
        return _c(_SOFT, f"{label}; treated as a soft decline and retried cautiously")
    # max() keeps the first of equals, so the order above (network first) breaks ties.
    decisive = max(found, key=lambda s: _RANK[s.category])
    waits = [s for s in found if s.not_before is not None]
    longest = max(waits, key=lambda s: s.not_before or timedelta(0)) if waits else None
    stopper = next((s for s in found if s.stop_card), None)
    reasons = [decisive.reason]
    for extra in (longest, stopper):
        if extra is not None and extra.reason not in reasons:
            reasons.append(extra.reason)
    return Classification(
        category=decisive.category,
        not_before=longest.not_before if longest is not None else None,
        stop_card=stopper is not None,
        reason="; ".join(reasons),
    )
