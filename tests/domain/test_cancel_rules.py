"""The cancel-flow rules format, variant assignment and signed links."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from recovery.domain.cancel_links import LinkError, sign_link, verify_link
from recovery.domain.cancel_rules import CancelRulesError, parse_cancel_flow_rules
from recovery.domain.offers import OfferKind
from recovery.rules import Rules, RulesError, load_rules_data

DEFAULTS = load_rules_data(None)


def test_the_shipped_defaults_parse_and_need_no_stripe_setup() -> None:
    rules = parse_cancel_flow_rules(DEFAULTS)
    assert [r.id for r in rules.reasons] == [
        "too_expensive",
        "not_using",
        "missing_feature",
        "switching",
        "technical",
        "temporary",
        "other",
    ]
    assert rules.cancel_at_period_end is True
    assert rules.reason("too_expensive").feedback == "too_expensive"  # type: ignore[union-attr]
    # Only the pause works out of the box; the rest need prices or a coupon named.
    assert rules.offers.get(OfferKind.PAUSE).pause_months == (1, 2, 3)
    assert rules.offers.get(OfferKind.DOWNGRADE).switches == ()
    assert rules.offers.get(OfferKind.DISCOUNT).coupon == ""


def test_a_business_file_replaces_lists_and_keeps_other_defaults(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        """
[cancel_flow]
cancel_at = "immediately"

[[cancel_flow.reasons]]
id = "too_slow"
feedback = "low_quality"
offers = ["discount"]
label = "It is too slow"
labels = { de = "Es ist zu langsam" }

[[cancel_flow.variants]]
name = "control"
weight = 1
offers = []

[[cancel_flow.variants]]
name = "offers"
weight = 3
offers = ["pause", "discount"]

[offers.downgrade]
prices = [{ from = "price_a", to = "price_b", to_unit_amount = 500 }]
"""
    )
    rules = parse_cancel_flow_rules(Rules.load(path).data)
    assert rules.cancel_at_period_end is False
    (reason,) = rules.reasons
    assert reason.custom_label("de") == "Es ist zu langsam"
    assert reason.custom_label("pt_BR") == "It is too slow"
    assert [v.name for v in rules.variants] == ["control", "offers"]
    assert rules.offers.get(OfferKind.DOWNGRADE).switch_for("price_a").to_price == "price_b"  # type: ignore[union-attr]
    assert rules.session_minutes == 60  # untouched keys keep their defaults


def with_change(path: list[Any], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(DEFAULTS)
    node: Any = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


BAD: list[tuple[list[Any], Any, str]] = [
    (["cancel_flow", "cancel_at"], "never", "cancel_flow.cancel_at"),
    (["cancel_flow", "reasons", 0, "feedback"], "bored", "cancel_flow.reasons[0].feedback"),
    (["cancel_flow", "reasons", 0, "offers"], ["gift"], "cancel_flow.reasons[0].offers[0]"),
    (["cancel_flow", "reasons", 0, "colour"], "red", "cancel_flow.reasons[0].colour"),
    (["cancel_flow", "reasons", 0, "id"], "mine", "label is required"),
    (["cancel_flow", "reasons"], [], "at least one reason"),
    (["cancel_flow", "variants"], [], "at least one variant"),
    (["cancel_flow", "variants", 0, "weight"], 0, "cancel_flow.variants[0].weight"),
    (["cancel_flow", "comment_max_chars"], 6000, "cancel_flow.comment_max_chars"),
    (["cancel_flow", "surprise"], 1, "cancel_flow.surprise"),
    (["offers", "pause", "months"], [6], "offers.pause.months"),
    (["offers", "pause", "behavior"], "forever", "offers.pause.behavior"),
    (["offers", "downgrade", "proration_behavior"], "maybe", "offers.downgrade.proration"),
    (["offers", "downgrade", "prices"], [{"from": "a", "to": "b"}], "to_unit_amount"),
    (["offers", "longer_term", "cadences"], ["fortnight"], "offers.longer_term.cadences[0]"),
    (["offers", "discount", "amount_off"], 500, "not both"),
    (["offers", "gift"], {}, "offers.gift"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD, ids=[b[2] for b in BAD])
def test_invalid_rules_name_the_key(path: list[Any], value: Any, message: str) -> None:
    with pytest.raises(CancelRulesError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_cancel_flow_rules(with_change(path, value))


def test_an_unknown_table_key_in_the_business_file_fails_at_load(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("[offers.pause]\nmonth = [1]\n")
    with pytest.raises(RulesError, match=r"offers\.pause\.month"):
        Rules.load(path)


def test_variants_split_by_weight_and_stay_put_per_customer() -> None:
    data = with_change(
        ["cancel_flow", "variants"],
        [
            {"name": "a", "weight": 1, "offers": []},
            {"name": "b", "weight": 3, "offers": ["pause"]},
        ],
    )
    rules = parse_cancel_flow_rules(data)
    counts = Counter(rules.assign_variant(f"cus_{i}").name for i in range(4000))
    assert 800 < counts["a"] < 1200 and counts["a"] + counts["b"] == 4000
    assert {rules.assign_variant("cus_42").name for _ in range(5)} == {
        rules.assign_variant("cus_42").name
    }


SECRET = "s3cret-for-links-0123456789"


def link(**changes: Any) -> dict[str, str]:
    params = {
        "customer": "cus_1",
        "subscription": "sub_1",
        "timestamp": "1000000",
        "return_url": "https://shop.example/account",
    }
    params["signature"] = sign_link(
        SECRET, "cus_1", "sub_1", 1_000_000, "https://shop.example/account"
    )
    params.update(changes)
    return params


def test_a_signed_link_verifies_and_carries_its_fields() -> None:
    verified = verify_link(SECRET, {**link(), "locale": "de"}, 1_000_100, 3600)
    assert (verified.customer, verified.subscription, verified.locale) == ("cus_1", "sub_1", "de")


@pytest.mark.parametrize(
    ("changes", "now", "expired"),
    [
        ({"customer": "cus_2"}, 1_000_100, False),
        ({"return_url": "https://evil.example/"}, 1_000_100, False),
        ({"timestamp": "1000001"}, 1_000_100, False),
        ({"signature": "0" * 64}, 1_000_100, False),
        ({"signature": "nope"}, 1_000_100, False),
        ({"customer": "cus_1\nsub_x"}, 1_000_100, False),
        ({}, 1_000_000 + 3601, True),
        ({}, 1_000_000 - 301, False),  # stamped too far in the future
    ],
)
def test_a_tampered_or_stale_link_is_refused(
    changes: dict[str, str], now: int, expired: bool
) -> None:
    with pytest.raises(LinkError) as caught:
        verify_link(SECRET, link(**changes), now, 3600)
    assert caught.value.expired is expired
