"""Smart-retry scheduling: when the next charge happens, and when it must not."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from time import perf_counter
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recovery.domain.declines import Decline, DeclineCategory, classify
from recovery.domain.retry_policy import (
    Attempt,
    CardInfo,
    RetryContext,
    RetryDecision,
    RetryRules,
    decide_next_retry,
)
from recovery.domain.timezones import COUNTRY_ZONES, customer_timezone

BERLIN = "Europe/Berlin"
# Monday 27 November 2023, 14:00 in Berlin. Thu 30 Nov is November's last business day.
T0 = datetime(2023, 11, 27, 13, 0, tzinfo=UTC)
VISA_DEBIT = CardInfo("visa", "debit", "fp_a")

# Deterministic: the same 300 examples on every run and every machine; no deadline because CI
# machines vary and speed has its own test below.
PROPERTY = settings(max_examples=300, derandomize=True, deadline=None)


def fail(
    at: datetime,
    code: str | None = "do_not_honor",
    *,
    fp: str | None = "fp_a",
    brand: str = "visa",
    by: str = "stripe",
    invoice: bool = True,
    **signals: str,
) -> Attempt:
    decline = Decline(failure_code="card_declined", decline_code=code, card_brand=brand, **signals)
    return Attempt(
        at, fp, brand, decline, False, "recovery" if by == "recovery" else "stripe", invoice
    )


def context(
    attempts: Sequence[Attempt],
    *,
    card: CardInfo | None = VISA_DEBIT,
    changed: bool = False,
    tz: str = BERLIN,
    opened: datetime = T0,
    past: Sequence[int] = (),
) -> RetryContext:
    return RetryContext(opened, attempts, card, changed, tz, 1500, "eur", past)


def decide(ctx: RetryContext, now: datetime, rules: RetryRules | None = None) -> RetryDecision:
    return decide_next_retry(ctx, rules or RetryRules(), now)


def local(at: datetime | None, tz: str = BERLIN) -> datetime:
    assert at is not None
    return at.astimezone(ZoneInfo(tz))


# ---- soft declines ----------------------------------------------------------------------------


def test_soft_decline_is_retried_about_a_day_later() -> None:
    decision = decide(context([fail(T0)]), T0 + timedelta(minutes=1))
    assert decision.at is not None
    assert timedelta(hours=20) <= decision.at - T0 <= timedelta(hours=24)
    assert not decision.stop
    assert "do_not_honor" in decision.reason
    # One numbering: the case timeline calls the charge this schedules "our retry 1".
    assert "our retry 1, about a day after the failure (1 of 8 charges on this card used)" in (
        decision.reason
    )


def test_soft_retries_reach_into_the_last_weeks_of_the_window() -> None:
    attempts = [fail(T0)]
    now = T0
    while (decision := decide(context(attempts), now)).at is not None:
        now = decision.at
        attempts.append(fail(now, by="recovery"))
    times = [a.at for a in attempts]
    assert len(times) == 8  # the whole budget, first charge included
    assert times[-1] - T0 > timedelta(days=21)  # Churn Buster: many recoveries come after day 14
    assert times[-1] < T0 + timedelta(days=28)
    assert min(b - a for a, b in pairwise(times)) >= timedelta(hours=20)
    assert decision.stop and decision.wait_for_new_card
    assert "all 8 charges allowed on this card are used" in decision.reason


def test_stripe_attempts_use_up_the_same_budget() -> None:
    attempts = [
        fail(T0 + timedelta(days=i), by="stripe" if i % 2 else "recovery") for i in range(8)
    ]
    decision = decide(context(attempts), T0 + timedelta(days=8))
    assert decision.at is None and decision.stop


# ---- insufficient funds: payday mornings -----------------------------------------------------


def test_insufficient_funds_waits_for_the_next_payday_morning() -> None:
    decision = decide(context([fail(T0, "insufficient_funds")]), T0)
    # Mon 27 Nov -> Thu 30 Nov, November's last business day, 08:00 in Berlin.
    assert decision.at == datetime(2023, 11, 30, 7, 0, tzinfo=UTC)
    assert decision.reason.startswith(
        "insufficient_funds on a debit card: next try Thu 30 Nov 08:00 Europe/Berlin - payday"
    )
    assert "last business day" in decision.reason


def test_after_a_missed_payday_the_next_one_is_tried_but_never_the_next_day() -> None:
    first = datetime(2023, 11, 30, 7, 0, tzinfo=UTC)
    attempts = [fail(T0, "insufficient_funds"), fail(first, "insufficient_funds", by="recovery")]
    decision = decide(context(attempts), first)
    # Fri 1 Dec is a payday too, but the day right after a decline for want of money.
    assert decision.at == datetime(2023, 12, 8, 7, 0, tzinfo=UTC)
    assert "Fri 8 Dec 08:00 Europe/Berlin - payday (Friday), our retry 2" in decision.reason


def test_the_customers_own_payment_day_comes_first() -> None:
    decision = decide(context([fail(T0, "insufficient_funds")], past=[5, 5]), T0)
    assert decision.at == datetime(2023, 12, 5, 7, 0, tzinfo=UTC)  # skips 30 Nov and 1 Dec
    assert "their usual payment day" in decision.reason


def test_a_far_own_payment_day_does_not_hold_back_a_nearer_payday() -> None:
    # Their day, 20 Dec, is three weeks out; 30 Nov and 1 Dec are tried first.
    attempts = [fail(T0, "insufficient_funds")]
    first = decide(context(attempts, past=[20, 20]), T0)
    assert first.at == datetime(2023, 11, 30, 7, 0, tzinfo=UTC)
    # On Wed 13 Dec their day is within a week of Fri 15 Dec, so it goes first.
    late = [fail(T0 + timedelta(days=i), "insufficient_funds") for i in (0, 13, 14, 15, 16)]
    decision = decide(context(late, past=[20, 20]), T0 + timedelta(days=16))
    assert decision.at == datetime(2023, 12, 20, 7, 0, tzinfo=UTC)
    assert "their usual payment day" in decision.reason


def test_own_payment_day_outside_the_window_falls_back_to_common_paydays() -> None:
    # The 26th is a day before the failure and 29 days after it: outside the 28-day window.
    decision = decide(context([fail(T0, "insufficient_funds")], past=[26, 26]), T0)
    assert decision.at == datetime(2023, 11, 30, 7, 0, tzinfo=UTC)


def test_payday_morning_is_the_customers_morning() -> None:
    ctx = context([fail(T0, "insufficient_funds")], tz="America/New_York")
    morning = local(decide(ctx, T0).at, "America/New_York")
    assert (morning.hour, morning.minute) == (8, 0)
    assert "America/New_York" in decide(ctx, T0).reason


def test_payday_morning_across_a_daylight_saving_change() -> None:
    # Berlin moves to summer time at 02:00 on Sunday 31 March 2024; the 1st is their payday.
    opened = datetime(2024, 3, 25, 9, 0, tzinfo=UTC)
    ctx = context([fail(opened, "insufficient_funds")], opened=opened, past=[1, 1])
    decision = decide(ctx, opened)
    assert decision.at == datetime(2024, 4, 1, 6, 0, tzinfo=UTC)  # 08:00 CEST
    assert local(decision.at).hour == 8


def test_a_payday_on_a_weekend_is_tried_the_business_day_before() -> None:
    # Their day, the 31st, is Sunday 31 March 2024: banks pay it on Friday the 29th.
    opened = datetime(2024, 3, 25, 9, 0, tzinfo=UTC)
    ctx = context([fail(opened, "insufficient_funds")], opened=opened, past=[31, 31])
    decision = decide(ctx, opened)
    assert decision.at == datetime(2024, 3, 29, 7, 0, tzinfo=UTC)  # 08:00 CET, Friday
    assert "their usual payment day (moved from Sun 31 Mar: a weekend)" in decision.reason


def test_day_31_means_the_last_day_of_a_shorter_month() -> None:
    decision = decide(context([fail(T0, "insufficient_funds")], past=[31, 31]), T0)
    assert local(decision.at).date().isoformat() == "2023-11-30"
    assert "their usual payment day" in decision.reason


def test_payday_targeting_can_be_switched_off() -> None:
    rules = RetryRules(payday_targeting=False)
    decision = decide(context([fail(T0, "insufficient_funds")]), T0, rules)
    assert decision.at == T0 + timedelta(hours=22)


def test_insufficient_funds_as_a_visa_response_code_is_payday_targeted() -> None:
    attempt = fail(T0, "generic_decline", network_decline_code="51")
    decision = decide(context([attempt]), T0)
    assert decision.at == datetime(2023, 11, 30, 7, 0, tzinfo=UTC)


# ---- cards that need replacing, customers who must act ---------------------------------------


def test_expired_card_waits_for_a_new_card_then_charges_it_at_once() -> None:
    attempts = [fail(T0, "expired_card")]
    waiting = decide(context(attempts), T0 + timedelta(days=1))
    assert (waiting.at, waiting.stop, waiting.wait_for_new_card) == (None, False, True)
    assert "expired" in waiting.reason
    now = T0 + timedelta(days=3, hours=5)
    new_card = CardInfo("mastercard", "credit", "fp_b")
    retry = decide(context(attempts, card=new_card, changed=True), now)
    assert retry.at == now
    assert "card changed" in retry.reason


def test_card_updater_refresh_of_the_same_number_is_tried_at_once() -> None:
    # Stripe's card updater keeps the fingerprint and changes the expiry date.
    now = T0 + timedelta(days=2)
    decision = decide(context([fail(T0, "expired_card")], changed=True), now)
    assert decision.at == now


def test_authentication_required_waits_for_the_customer() -> None:
    decision = decide(context([fail(T0, "authentication_required")]), T0 + timedelta(hours=1))
    assert (decision.at, decision.stop, decision.wait_for_new_card) == (None, False, False)
    assert "authenticate" in decision.reason


# ---- never retry ------------------------------------------------------------------------------


def test_visa_category_1_stops_this_card() -> None:
    attempts = [fail(T0, "do_not_honor", network_decline_code="46")]
    decision = decide(context(attempts), T0 + timedelta(days=1))
    assert (decision.at, decision.stop, decision.wait_for_new_card) == (None, True, True)
    assert "Visa response 46 is category 1" in decision.reason


def test_a_different_card_after_a_stop_is_tried_at_once() -> None:
    attempts = [fail(T0, "stolen_card")]
    now = T0 + timedelta(days=6)
    decision = decide(context(attempts, card=CardInfo("visa", "debit", "fp_b"), changed=True), now)
    assert decision.at == now


def test_the_same_card_number_re_added_stays_stopped() -> None:
    attempts = [
        fail(T0, "generic_decline", fp="fp_m", brand="mastercard", network_advice_code="21")
    ]
    same = CardInfo("mastercard", "credit", "fp_m")
    decision = decide(context(attempts, card=same, changed=True), T0 + timedelta(days=2))
    assert decision.at is None and decision.stop
    assert "same card number" in decision.reason
    assert "Mastercard advice 21" in decision.reason


def test_switching_back_to_a_stopped_card_is_not_charged() -> None:
    attempts = [
        fail(T0, "generic_decline", fp="fp_m", brand="mastercard", network_advice_code="03"),
        fail(T0 + timedelta(days=2), "do_not_honor", fp="fp_b", by="recovery"),
    ]
    back = CardInfo("mastercard", "credit", "fp_m")
    decision = decide(context(attempts, card=back, changed=True), T0 + timedelta(days=3))
    assert decision.at is None
    assert "Mastercard advice 03" in decision.reason


def test_stop_payment_order_is_never_charged_again_on_that_card() -> None:
    decision = decide(context([fail(T0, "stop_payment_order")]), T0 + timedelta(days=3))
    assert (decision.at, decision.stop, decision.wait_for_new_card) == (None, True, True)


# ---- network waits and caps -------------------------------------------------------------------


def test_advice_02_stops_a_visa_card_but_delays_a_mastercard() -> None:
    # Visa 02: the cardholder stopped this payment. Mastercard 02: try again later.
    visa = fail(T0, "generic_decline", network_advice_code="02")
    assert decide(context([visa]), T0).at is None
    mastercard = fail(T0, "generic_decline", brand="mastercard", network_advice_code="02")
    card = CardInfo("mastercard", "credit", "fp_a")
    decision = decide(context([mastercard], card=card), T0)
    assert decision.at == T0 + timedelta(hours=72)


@pytest.mark.parametrize(("mac", "wait"), [("25", timedelta(hours=24)), ("29", timedelta(days=8))])
def test_mastercard_retry_after_advice_is_respected(mac: str, wait: timedelta) -> None:
    card = CardInfo("mastercard", "debit", "fp_a")
    attempt = fail(T0, "insufficient_funds", brand="mastercard", network_advice_code=mac)
    decision = decide(context([attempt], card=card), T0)
    assert decision.at is not None
    assert decision.at >= T0 + wait
    assert 8 <= local(decision.at).hour < 10  # still a payday morning
    assert f"Mastercard advice {mac}" in decision.reason


def test_mastercard_wait_survives_a_card_updater_refresh() -> None:
    card = CardInfo("mastercard", "debit", "fp_a")
    attempt = fail(T0, "generic_decline", brand="mastercard", network_advice_code="26")
    decision = decide(context([attempt], card=card, changed=True), T0 + timedelta(hours=3))
    assert decision.at == T0 + timedelta(days=2)


@pytest.mark.parametrize(
    ("brand", "cap", "held"), [("visa", 20, True), ("amex", 15, True), ("mastercard", 35, False)]
)
def test_network_cap_counts_other_invoices_on_the_same_card(
    brand: str, cap: int, held: bool
) -> None:
    # 19 charges of the same card on other invoices 25 days ago, plus this invoice's failure.
    oldest = T0 - timedelta(days=25)
    others = [fail(oldest + timedelta(hours=i), brand=brand, invoice=False) for i in range(19)]
    card = CardInfo(brand, "credit", "fp_a")
    decision = decide(context([*others, fail(T0, brand=brand)], card=card), T0)
    assert decision.at is not None
    if held:
        assert decision.at >= oldest + timedelta(days=30)
        assert f"{brand} cap of {cap}" in decision.reason
    else:
        assert decision.at - T0 < timedelta(days=1)


# ---- ends of dunning --------------------------------------------------------------------------


def test_window_end_stops_with_the_configured_end_state() -> None:
    rules = RetryRules(end_of_dunning="leave_past_due")
    decision = decide(context([fail(T0)]), T0 + timedelta(days=28), rules)
    assert (decision.at, decision.stop, decision.wait_for_new_card) == (None, True, False)
    assert "leave_past_due" in decision.reason


def test_no_retry_is_scheduled_past_the_window() -> None:
    # MAC 30 asks for 10 days, but only 5 days of the window are left.
    opened = T0 - timedelta(days=23)
    attempt = fail(T0, "generic_decline", brand="mastercard", network_advice_code="30")
    ctx = context([attempt], card=CardInfo("mastercard", "credit", "fp_a"), opened=opened)
    decision = decide(ctx, T0)
    assert decision.at is None and decision.stop
    assert "no attempt fits" in decision.reason


def test_paid_invoice_stops() -> None:
    paid = Attempt(T0 + timedelta(days=1), "fp_a", "visa", None, True, "stripe")
    decision = decide(context([fail(T0), paid]), T0 + timedelta(days=2))
    assert decision.stop and decision.at is None
    assert "paid" in decision.reason


def test_stripe_owned_retries_schedule_nothing() -> None:
    decision = decide(context([fail(T0)]), T0, RetryRules(retry_owner="stripe"))
    assert (decision.at, decision.stop) == (None, False)
    assert "Stripe" in decision.reason


def test_no_card_on_file_asks_for_one() -> None:
    decision = decide(context([fail(T0)], card=None), T0)
    assert (decision.at, decision.wait_for_new_card) == (None, True)


def test_naive_now_is_rejected() -> None:
    with pytest.raises(ValueError, match="now"):
        decide(context([fail(T0)]), datetime(2023, 11, 28, 12, 0))


def test_unknown_time_zone_falls_back_to_utc() -> None:
    decision = decide(context([fail(T0, "insufficient_funds")], tz="Mars/Olympus_Mons"), T0)
    assert decision.at == datetime(2023, 11, 30, 8, 0, tzinfo=UTC)
    assert "UTC" in decision.reason


# ---- speed: a worker ticking hourly for the whole window ---------------------------------------


def test_four_weeks_of_hourly_ticks_run_well_under_a_second() -> None:
    attempts = [fail(T0, "insufficient_funds")]
    now, ticks = T0, 0
    started = perf_counter()
    while True:
        decision = decide(context(attempts), now)
        ticks += 1
        if decision.at is not None and decision.at <= now:
            attempts.append(fail(now, "insufficient_funds", by="recovery"))
        if decision.stop and not decision.wait_for_new_card:
            break
        now += timedelta(hours=1)
    elapsed = perf_counter() - started
    assert elapsed < 1.0, f"{ticks} decisions took {elapsed:.2f}s"
    assert ticks >= 28 * 24
    assert 2 <= len(attempts) <= 8
    assert all(8 <= local(a.at).hour < 10 for a in attempts[1:])  # charged on payday mornings
    assert "cancel_subscription" in decision.reason


# ---- properties --------------------------------------------------------------------------------

_DECLINES = [
    Decline(decline_code="do_not_honor"),
    Decline(decline_code="generic_decline"),
    Decline(decline_code="insufficient_funds"),
    Decline(decline_code="processing_error"),
    Decline(decline_code="something_new"),
    Decline(decline_code="insufficient_funds", network_advice_code="24"),
    Decline(decline_code="insufficient_funds", network_advice_code="27"),
    Decline(decline_code="generic_decline", network_advice_code="30"),
    Decline(decline_code="generic_decline", network_advice_code="02"),
    Decline(decline_code="generic_decline", network_advice_code="03"),
    Decline(decline_code="generic_decline", network_advice_code="21"),
    Decline(decline_code="do_not_honor", network_decline_code="46"),
    Decline(decline_code="do_not_honor", network_decline_code="R1"),
    Decline(decline_code="do_not_honor", network_decline_code="51"),
    Decline(decline_code="expired_card"),
    Decline(decline_code="authentication_required"),
    Decline(decline_code="lost_card"),
    Decline(advice_code="do_not_try_again"),
]
_ZONES = ["UTC", BERLIN, "America/New_York", "America/Sao_Paulo", "Australia/Sydney", "Asia/Tokyo"]
_CARD_BRANDS = {"fp_a": "visa", "fp_b": "mastercard", "fp_c": "amex"}
_MINUTE = timedelta(minutes=1)


@st.composite
def _attempt(draw: st.DrawFn, at: datetime, on_invoice: bool) -> Attempt:
    fp = draw(st.sampled_from(sorted(_CARD_BRANDS)))
    decline = draw(st.sampled_from(_DECLINES))
    by = draw(st.sampled_from(["recovery", "stripe"]))
    return Attempt(at, fp, _CARD_BRANDS[fp], decline, False, by, on_invoice)  # type: ignore[arg-type]


@st.composite
def _situations(draw: st.DrawFn) -> tuple[RetryContext, datetime]:
    opened = draw(
        st.datetimes(datetime(2023, 1, 1), datetime(2027, 12, 31), timezones=st.just(UTC))
    )
    window = 28 * 24 * 60
    offsets = draw(st.lists(st.integers(0, window), max_size=9, unique=True))
    attempts = [draw(_attempt(opened + m * _MINUTE, True)) for m in sorted(offsets)]
    other = draw(st.lists(st.integers(-30 * 24 * 60, window), max_size=36))
    attempts += [draw(_attempt(opened + m * _MINUTE, False)) for m in other]
    fp = draw(st.sampled_from(sorted(_CARD_BRANDS)))
    funding = draw(st.sampled_from(["credit", "debit", "prepaid", "unknown"]))
    card = CardInfo(_CARD_BRANDS[fp], funding, fp)  # type: ignore[arg-type]
    latest = max([opened, *(a.at for a in attempts)])
    now = latest + draw(st.integers(0, 20 * 24 * 60)) * _MINUTE
    ctx = RetryContext(
        case_opened_at=opened,
        attempts=draw(st.permutations(attempts)),
        card=card,
        card_changed_since_last_failure=draw(st.booleans()),
        customer_timezone=draw(st.sampled_from(_ZONES)),
        amount=draw(st.integers(50, 100_000)),
        currency="eur",
        past_success_days=draw(st.lists(st.integers(1, 31), max_size=3)),
    )
    return ctx, now


def _assert_lawful(ctx: RetryContext, rules: RetryRules, now: datetime, d: RetryDecision) -> None:
    """Everything a decision must respect, checked from the outside."""
    assert d.reason.strip()
    if d.at is None:
        return
    card = ctx.card
    assert card is not None and card.fingerprint is not None
    assert now <= d.at < ctx.case_opened_at + timedelta(days=rules.window_days)
    on_card = [a for a in ctx.attempts if a.card_fingerprint == card.fingerprint]
    # Network cap: with this charge, no 30 days hold more than the cap for the card's network.
    in_30_days = [a for a in on_card if d.at - timedelta(days=30) < a.at <= d.at]
    assert len(in_30_days) + 1 <= rules.network_caps.for_brand(card.brand)
    # Never a card that a network or issuer said to stop, whatever happened since.
    assert not any(
        classify(replace(a.decline or Decline(), card_brand=a.card_brand)).stop_card
        for a in on_card
    )
    # Budget per card on this invoice.
    assert sum(1 for a in on_card if a.on_this_invoice) < rules.max_attempts
    invoice = sorted((a for a in ctx.attempts if a.on_this_invoice), key=lambda a: a.at)
    if invoice and not ctx.card_changed_since_last_failure:
        last = invoice[-1]
        verdict = classify(replace(last.decline or Decline(), card_brand=last.card_brand))
        assert verdict.category is DeclineCategory.SOFT
        assert d.at - last.at >= timedelta(hours=rules.min_gap_hours)
    same_number = not ctx.card_changed_since_last_failure or (
        invoice and invoice[-1].card_fingerprint == card.fingerprint
    )
    if same_number:
        for a in on_card:
            wait = classify(replace(a.decline or Decline(), card_brand=a.card_brand)).not_before
            assert wait is None or d.at >= a.at + wait


@PROPERTY
@given(_situations())
def test_every_decision_respects_window_caps_stops_and_waits(
    situation: tuple[RetryContext, datetime],
) -> None:
    ctx, now = situation
    rules = RetryRules()
    decision = decide_next_retry(ctx, rules, now)
    _assert_lawful(ctx, rules, now, decision)
    # Deterministic, and blind to the order the attempts were loaded in.
    again = decide_next_retry(replace(ctx, attempts=list(reversed(ctx.attempts))), rules, now)
    assert again == decision


@PROPERTY
@given(
    first=st.sampled_from(_DECLINES),
    later=st.lists(st.sampled_from(_DECLINES[:9]), min_size=10, max_size=10),
    fp=st.sampled_from(sorted(_CARD_BRANDS)),
    prior=st.lists(st.integers(1, 30 * 24 * 60), max_size=34),
    zone=st.sampled_from(_ZONES),
    window_days=st.integers(7, 60),
    max_attempts=st.integers(1, 20),
)
def test_a_whole_dunning_run_stays_lawful(
    first: Decline,
    later: list[Decline],
    fp: str,
    prior: list[int],
    zone: str,
    window_days: int,
    max_attempts: int,
) -> None:
    """Follow every decision with a failed charge until the policy stops."""
    rules = RetryRules(window_days=window_days, max_attempts=max_attempts)
    brand = _CARD_BRANDS[fp]
    card = CardInfo(brand, "debit", fp)
    # The same card's charges on other invoices in the 30 days before this one failed.
    attempts = [
        Attempt(T0 - m * _MINUTE, fp, brand, later[0], False, "stripe", False) for m in prior
    ]
    attempts.append(Attempt(T0, fp, brand, first, False, "stripe"))
    now = T0
    for step in range(40):
        ctx = context(attempts, card=card, tz=zone)
        decision = decide_next_retry(ctx, rules, now)
        _assert_lawful(ctx, rules, now, decision)
        if decision.at is None:
            break
        now = decision.at
        attempts.append(Attempt(now, fp, brand, later[step % len(later)], False, "recovery"))
    else:
        pytest.fail("the policy never stopped")
    ours = [a for a in attempts if a.on_this_invoice]
    assert len(ours) <= max_attempts
    assert all(a.at < T0 + timedelta(days=window_days) for a in ours)


# ---- customer time zones -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("country", "locales", "zone"),
    [
        ("DE", [], "Europe/Berlin"),
        ("us", ["de-DE"], "America/Chicago"),  # the address beats the language
        (None, ["de-DE"], "Europe/Berlin"),
        (None, ["pt-BR"], "America/Sao_Paulo"),
        (None, ["pt"], "UTC"),  # a language alone names no place
        (None, ["en", "fr-CA"], "America/Toronto"),
        (None, ["zh-Hant-TW"], "Asia/Taipei"),
        (None, ["en_GB"], "Europe/London"),
        (None, ["es-419", "es-MX"], "America/Mexico_City"),
        ("XX", ["ja-JP"], "Asia/Tokyo"),
        ("", [], "UTC"),
        (None, [], "UTC"),
    ],
)
def test_customer_timezone(country: str | None, locales: list[str], zone: str) -> None:
    assert customer_timezone(country, locales) == zone


def test_every_country_zone_exists() -> None:
    for country, zone in COUNTRY_ZONES.items():
        assert ZoneInfo(zone), country
