"""Decline classification: what each Stripe and network code means for retrying."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recovery.domain.declines import (
    Decline,
    DeclineCategory,
    classify,
    is_insufficient_funds,
)

SOFT = DeclineCategory.SOFT
NEW_CARD = DeclineCategory.NEEDS_NEW_CARD
CUSTOMER = DeclineCategory.NEEDS_CUSTOMER
NEVER = DeclineCategory.NEVER_RETRY

# Deterministic: the same 300 examples on every run and every machine.
PROPERTY = settings(max_examples=300, derandomize=True, deadline=None)


# Stripe decline codes, grouped as in docs/card-networks.md#stripe-decline-codes.
@pytest.mark.parametrize(
    ("code", "category", "stop_card"),
    [
        ("insufficient_funds", SOFT, False),
        ("processing_error", SOFT, False),
        ("issuer_not_available", SOFT, False),
        ("reenter_transaction", SOFT, False),
        ("approve_with_id", SOFT, False),
        ("generic_decline", SOFT, False),
        ("do_not_honor", SOFT, False),
        ("card_velocity_exceeded", SOFT, False),
        ("withdrawal_count_limit_exceeded", SOFT, False),
        ("try_again_later", SOFT, False),
        ("expired_card", NEW_CARD, False),
        ("incorrect_number", NEW_CARD, True),  # never auto-retried by Stripe either
        ("invalid_number", NEW_CARD, True),
        ("invalid_account", NEW_CARD, False),
        ("new_account_information_available", NEW_CARD, False),
        ("card_not_supported", NEW_CARD, False),
        ("currency_not_supported", NEW_CARD, False),
        ("incorrect_cvc", NEW_CARD, False),
        ("invalid_cvc", NEW_CARD, False),
        ("invalid_expiry_month", NEW_CARD, False),
        ("invalid_expiry_year", NEW_CARD, False),
        ("incorrect_zip", NEW_CARD, False),
        ("authentication_required", CUSTOMER, False),
        ("invoice_payment_intent_requires_action", CUSTOMER, False),
        ("call_issuer", CUSTOMER, False),
        ("transaction_not_allowed", CUSTOMER, False),
        ("not_permitted", CUSTOMER, False),
        ("service_not_allowed", CUSTOMER, False),
        ("restricted_card", CUSTOMER, False),
        ("security_violation", CUSTOMER, False),
        ("stop_payment_order", CUSTOMER, True),  # Visa R0 is category 1
        ("fraudulent", NEVER, True),
        ("merchant_blacklist", NEVER, True),
        ("lost_card", NEVER, True),
        ("stolen_card", NEVER, True),
        ("pickup_card", NEVER, True),
        ("revocation_of_authorization", NEVER, True),
        ("revocation_of_all_authorizations", NEVER, True),
    ],
)
def test_stripe_decline_codes(code: str, category: DeclineCategory, stop_card: bool) -> None:
    result = classify(Decline(failure_code="card_declined", decline_code=code))
    assert result.category is category
    assert result.stop_card is stop_card
    assert result.not_before is None
    assert code in result.reason


# Mastercard advice codes (docs/card-networks.md), under a decline code that alone says "retry".
@pytest.mark.parametrize(
    ("mac", "category", "stop_card", "not_before"),
    [
        ("01", NEW_CARD, False, None),
        ("02", SOFT, False, timedelta(hours=72)),
        ("03", NEVER, True, None),
        ("04", NEW_CARD, False, None),
        ("21", NEVER, True, None),
        ("24", SOFT, False, timedelta(hours=1)),
        ("25", SOFT, False, timedelta(hours=24)),
        ("26", SOFT, False, timedelta(days=2)),
        ("27", SOFT, False, timedelta(days=4)),
        ("28", SOFT, False, timedelta(days=6)),
        ("29", SOFT, False, timedelta(days=8)),
        ("30", SOFT, False, timedelta(days=10)),
        ("40", SOFT, False, None),  # prepaid: informational only
        ("43", SOFT, False, None),  # virtual card: informational only
    ],
)
def test_mastercard_advice_codes(
    mac: str, category: DeclineCategory, stop_card: bool, not_before: timedelta | None
) -> None:
    decline = Decline(decline_code="do_not_honor", network_advice_code=mac, card_brand="mastercard")
    result = classify(decline)
    assert (result.category, result.stop_card, result.not_before) == (
        category,
        stop_card,
        not_before,
    )


# The same digits from Visa: 02/03/21 are cardholder stop orders; 24-30 mean nothing.
@pytest.mark.parametrize(
    ("code", "visa", "mastercard"),
    [
        ("02", (NEVER, True, None), (SOFT, False, timedelta(hours=72))),
        ("03", (NEVER, True, None), (NEVER, True, None)),
        ("21", (NEVER, True, None), (NEVER, True, None)),
        ("24", (SOFT, False, None), (SOFT, False, timedelta(hours=1))),
        ("27", (SOFT, False, None), (SOFT, False, timedelta(days=4))),
        ("30", (SOFT, False, None), (SOFT, False, timedelta(days=10))),
        ("01", (NEW_CARD, False, None), (NEW_CARD, False, None)),
    ],
)
def test_advice_digits_are_read_per_brand(
    code: str,
    visa: tuple[DeclineCategory, bool, timedelta | None],
    mastercard: tuple[DeclineCategory, bool, timedelta | None],
) -> None:
    for brand, expected in (("visa", visa), ("mastercard", mastercard)):
        result = classify(
            Decline(decline_code="generic_decline", network_advice_code=code, card_brand=brand)
        )
        assert (result.category, result.stop_card, result.not_before) == expected, brand


def test_advice_code_from_an_unknown_network_is_ignored() -> None:
    result = classify(Decline(decline_code="generic_decline", network_advice_code="03"))
    assert result.category is SOFT
    result = classify(
        Decline(decline_code="generic_decline", network_advice_code="21", card_brand="amex")
    )
    assert result.category is SOFT


def test_mastercard_reason_reads_like_the_advice() -> None:
    result = classify(Decline(network_advice_code="24", card_brand="mastercard"))
    assert result.reason == "Mastercard advice 24: retry after 1 hour"


@pytest.mark.parametrize(
    "code", ["04", "07", "12", "15", "41", "43", "46", "57", "R0", "R1", "R3", "r1"]
)
def test_visa_category_1_is_never_retried(code: str) -> None:
    # Stripe often reports these as a plain do_not_honor: the network code must win.
    result = classify(
        Decline(decline_code="do_not_honor", network_decline_code=code, card_brand="visa")
    )
    assert result.category is NEVER
    assert result.stop_card
    assert "category 1" in result.reason


@pytest.mark.parametrize(
    ("code", "category", "stop_card"),
    [
        ("51", SOFT, False),  # category 2: not now
        ("61", SOFT, False),
        ("65", SOFT, False),
        ("91", SOFT, False),
        ("96", SOFT, False),
        ("5C", SOFT, False),
        ("9G", SOFT, False),
        ("54", NEW_CARD, False),  # category 3: fix the data
        ("N7", NEW_CARD, False),
        ("82", NEW_CARD, False),
        ("1A", CUSTOMER, False),  # additional authentication required
        ("14", NEW_CARD, True),  # category 1 or 3 depending on the source: never this card
        ("05", SOFT, False),  # category 4: generic
    ],
)
def test_visa_other_categories(code: str, category: DeclineCategory, stop_card: bool) -> None:
    result = classify(
        Decline(decline_code="generic_decline", network_decline_code=code, card_brand="visa")
    )
    assert (result.category, result.stop_card) == (category, stop_card)


def test_visa_response_codes_are_not_applied_to_mastercard() -> None:
    # 46 (closed account) and R0 are Visa category 1; on Mastercard they are not read at all.
    for code in ("46", "R0", "57"):
        result = classify(
            Decline(
                decline_code="generic_decline", network_decline_code=code, card_brand="mastercard"
            )
        )
        assert result.category is SOFT, code


@pytest.mark.parametrize(
    ("advice", "category", "stop_card"),
    [
        ("do_not_try_again", NEVER, True),
        ("confirm_card_data", NEW_CARD, False),
        ("try_again_later", SOFT, False),
    ],
)
def test_stripe_advice_code(advice: str, category: DeclineCategory, stop_card: bool) -> None:
    result = classify(Decline(decline_code="generic_decline", advice_code=advice))
    assert (result.category, result.stop_card) == (category, stop_card)


def test_radar_block_is_never_retried() -> None:
    result = classify(Decline(outcome_type="blocked", outcome_reason="highest_risk_level"))
    assert result.category is NEVER
    assert result.stop_card


def test_decline_code_found_only_in_outcome_reason() -> None:
    decline = Decline(
        failure_code="card_declined", outcome_type="issuer_declined", outcome_reason="lost_card"
    )
    assert classify(decline).category is NEVER


def test_unknown_code_is_soft_and_says_so() -> None:
    result = classify(Decline(decline_code="brand_new_code_2031"))
    assert result.category is SOFT
    assert not result.stop_card
    assert "brand_new_code_2031" in result.reason
    assert "not a code we know" in result.reason
    assert classify(Decline()).category is SOFT


def test_brand_spelling_does_not_matter() -> None:
    for brand in ("MasterCard", " mastercard ", "Master Card"):
        result = classify(Decline(network_advice_code="3", card_brand=brand))
        assert result.category is NEVER, brand


def test_insufficient_funds_with_a_wait_keeps_both() -> None:
    # Authorization Optimizer adds MAC 24-30 to recurring insufficient-funds declines.
    decline = Decline(
        decline_code="insufficient_funds",
        network_decline_code="51",
        network_advice_code="28",
        card_brand="mastercard",
    )
    result = classify(decline)
    assert result.category is SOFT
    assert result.not_before == timedelta(days=6)
    assert is_insufficient_funds(decline)


def test_insufficient_funds_detection() -> None:
    assert is_insufficient_funds(Decline(decline_code="insufficient_funds"))
    assert is_insufficient_funds(Decline(network_decline_code="51", card_brand="visa"))
    assert not is_insufficient_funds(Decline(network_decline_code="51", card_brand="amex"))
    assert not is_insufficient_funds(Decline(decline_code="do_not_honor"))


def test_most_restrictive_signal_wins() -> None:
    decline = Decline(
        decline_code="insufficient_funds",
        advice_code="try_again_later",
        network_advice_code="21",
        card_brand="mastercard",
    )
    result = classify(decline)
    assert result.category is NEVER
    assert result.reason.startswith("Mastercard advice 21")


_CODES = st.sampled_from(
    [
        None,
        "insufficient_funds",
        "do_not_honor",
        "generic_decline",
        "expired_card",
        "call_issuer",
        "authentication_required",
        "lost_card",
        "card_declined",
        "something_new",
    ]
)
_NETWORK = st.sampled_from([None, "01", "02", "03", "04", "21", "24", "27", "30", "40", "51"])
_DECLINES = st.builds(
    Decline,
    failure_code=_CODES,
    decline_code=_CODES,
    advice_code=st.sampled_from([None, "do_not_try_again", "confirm_card_data", "try_again_later"]),
    network_advice_code=_NETWORK,
    network_decline_code=st.sampled_from([None, "05", "14", "46", "51", "54", "R1", "1A"]),
    card_brand=st.sampled_from([None, "visa", "mastercard", "amex"]),
    outcome_type=st.sampled_from([None, "issuer_declined", "blocked"]),
    outcome_reason=st.sampled_from([None, "highest_risk_level", "insufficient_funds"]),
)


@PROPERTY
@given(_DECLINES)
def test_a_network_stop_is_never_hidden_by_other_signals(decline: Decline) -> None:
    stopped = classify(
        Decline(
            failure_code=decline.failure_code,
            decline_code=decline.decline_code,
            advice_code=decline.advice_code,
            network_advice_code="21",
            network_decline_code=decline.network_decline_code,
            card_brand="mastercard",
            outcome_type=decline.outcome_type,
            outcome_reason=decline.outcome_reason,
        )
    )
    assert stopped.category is NEVER
    assert stopped.stop_card


@PROPERTY
@given(_DECLINES)
def test_every_classification_explains_itself(decline: Decline) -> None:
    result = classify(decline)
    assert result.reason.strip()
    if result.stop_card:
        assert result.category is not SOFT
    if result.not_before is not None:
        assert timedelta(hours=1) <= result.not_before <= timedelta(days=10)
