"""The overview's numbers from a known history equal the hand-computed ones, on both engines;
GET /api/v1/metrics returns the same numbers; the query count does not grow with the data."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import event

from recovery.runtime import Runtime
from recovery.services.reporting import metrics
from recovery.services.reporting.metrics import (
    Answer,
    Breakdown,
    CancelFlowStats,
    ExpiringCards,
    Keyed,
    Overview,
    Tally,
    Week,
)
from tests.conftest import API_KEY, START
from tests.support.metrics_data import PERIOD, add_case, at, seed_all

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def seeded(runtime: Runtime) -> Runtime:
    with runtime.db.transaction() as session:
        seed_all(session)
    return runtime


def overview(rt: Runtime, day_from: date, day_to: date, currency: str = "usd") -> Overview:
    start, end = metrics.period_of(day_from, day_to)
    with rt.db.transaction() as session:
        return metrics.compute_overview(session, start, end, currency, START)


def test_every_number_equals_the_hand_computation(seeded: Runtime) -> None:
    o = overview(seeded, *PERIOD)
    assert (o.period_from, o.period_to) == (at(10, 1), at(11, 1))
    assert (o.currency, o.exponent) == ("usd", 2)

    # USD cases opened in [Oct 1, Nov 1): c1..c8 and c12 (c9 opened Sep 30, c10 is EUR,
    # c11 opened Nov 1, c13 is JPY).
    # amounts 1000+2000+3000+1500+2500+1200+4000+800+900 = 16900
    assert o.failed == Tally(9, 16900)
    # recovered: c1, c2, c3, c4, c12 = 1000+2000+3000+1500+900 = 8400; 8400/16900 = 0.49704
    assert o.recovered == Tally(5, 8400)
    assert o.recovered_share == 0.497
    # in progress: c5 (retrying) 2500 + c6 (awaiting customer) 1200
    assert o.in_progress == Tally(2, 3700)
    # lost: c7 (dunning ended) 4000 + c8 (voided) 800; 5 + 2 + 2 = 9 and 8400+3700+4800 = 16900
    assert o.lost == Tally(2, 4800)
    assert o.lost_reasons == (Keyed("dunning_ended", 1, 4000), Keyed("voided", 1, 800))
    # distinct subscriptions recovered: sub_1 (c1 and c4: counted once), sub_2, sub_3, sub_4.
    # sub_1 1000/month = 1000; sub_2 12000/year = 1000; sub_3 500 x 2 per week = 1000 * 52/12
    # = 4333.33 -> 4333; sub_4 3000 per 3 months = 1000. Total 7333.
    assert o.recovered_monthly_revenue == 7333
    # days to recover: c1 2.0, c2 4.5, c3 1.0, c4 7.0, c12 1.0 -> sorted 1, 1, 2, 4.5, 7
    assert o.median_days_to_recover == 2.0

    # by category (biggest failed amount first):
    # soft: c1 c3 c5 c12 = 4 / 7400, recovered c1 c3 c12 = 3 / 4900 -> 0.66216
    # never_retry: c7 1 / 4000; needs_new_card: c2 c6 = 2 / 3200, recovered c2 1 / 2000
    # needs_customer: c4 1 / 1500 all recovered; unknown: c8 1 / 800
    assert o.by_decline_category == (
        Breakdown("soft", 4, 7400, 3, 4900, 0.6622),
        Breakdown("never_retry", 1, 4000, 0, 0, 0.0),
        Breakdown("needs_new_card", 2, 3200, 1, 2000, 0.625),
        Breakdown("needs_customer", 1, 1500, 1, 1500, 1.0),
        Breakdown("unknown", 1, 800, 0, 0, 0.0),
    )
    # visa: c1 c3 c4 c5 c7 c12 = 6 / 12900, recovered c1 c3 c4 c12 = 4 / 6400 -> 0.49612
    assert o.by_card_brand == (
        Breakdown("visa", 6, 12900, 4, 6400, 0.4961),
        Breakdown("mastercard", 1, 2000, 1, 2000, 1.0),
        Breakdown("amex", 1, 1200, 0, 0, 0.0),
        Breakdown("unknown", 1, 800, 0, 0, 0.0),
    )
    assert o.by_trigger == (
        Keyed("our_retry", 1, 1000),  # c1
        Keyed("card_update_link", 1, 2000),  # c2
        Keyed("hosted_invoice_page", 2, 4500),  # c3 + c4
        Keyed("stripe_retry", 1, 900),  # c12
        Keyed("out_of_band", 0, 0),
    )
    # customer-made recoveries c2, c3, c4: c2's last reminder sent before its payment was the
    # SMS (the email of Oct 11 came after), c3's the email, c4 had none.
    assert o.by_reminder_channel == (
        Keyed("email", 1, 3000),
        Keyed("sms", 1, 2000),
        Keyed("none", 1, 1500),
    )
    # ISO weeks touching October: W40 (from Sep 28) .. W44 (to Nov 1)
    assert o.weekly == (
        Week("2026-W40", date(2026, 9, 28), 0, 0, 0, 0),
        Week("2026-W41", date(2026, 10, 5), 2, 3000, 2, 3000),  # c1, c2
        Week("2026-W42", date(2026, 10, 12), 2, 4500, 2, 4500),  # c3, c4
        Week("2026-W43", date(2026, 10, 19), 3, 7700, 0, 0),  # c5, c6, c7
        Week("2026-W44", date(2026, 10, 26), 2, 1700, 1, 900),  # c8, c12
    )

    # Now 2026-11-02. Live USD subscriptions not cancelling: sub_1/sub_8 (pm_a, 11/2026, works
    # until Dec 1: within 30 days), sub_2 (customer default pm_b, 12/2026: within 60),
    # sub_10 (pm_i, 12/2026: within 60; USD only by its item), sub_3 (pm_c 1/2027: later),
    # sub_6 (pm_f 10/2026: already expired), sub_9 (2029).
    # sub_4 cancels at period end, sub_5 is cancelled, sub_7 is EUR.
    # Notices sent in October (USD): sub_3:pm_old3 (two messages, one pair), sub_2:pm_old2,
    # sub_6:pm_f, sub_9:pm_h -> 4 pairs. Replaced in time: sub_3 (pm_c added Oct 20, before
    # pm_old3 stopped on Nov 1) and sub_9 (pm_h's expiry moved to 2029 by the network).
    # Not: sub_2 (pm_b added Nov 1 12:00, after pm_old2 stopped) and sub_6 (same card).
    assert o.expiring_cards == ExpiringCards(
        within_30_days=1, within_60_days=3, notified=4, replaced_in_time=2
    )

    # Cancel sessions created in October, USD: s1..s7 (s8 in September, s9 EUR).
    # saved s1 (pause) s2 (discount); cancelled s3 s4 s5; abandoned s6; open s7.
    # save rate = 2 / (2 + 3) = 0.4
    # reasons: too_expensive s1 s2 s4 = 3 (2000+3000+1500); missing_features s3 s7 = 2
    # (1000+700); none s5 s6 = 2 (500+800)
    # kept: pause 2000, discount 2400 -> 4400; conceded 0 + (3000-2400) = 600
    assert o.cancel_flow == CancelFlowStats(
        sessions=7,
        saved=2,
        saves_reversed=0,
        cancelled=3,
        abandoned=1,
        undecided=1,
        save_rate=0.4,
        saves_by_offer=(
            Keyed("pause", 1, 2000),
            Keyed("downgrade", 0, 0),
            Keyed("longer_term", 0, 0),
            Keyed("discount", 1, 2400),
        ),
        reasons=(
            Keyed("too_expensive", 3, 6500),
            Keyed("missing_features", 2, 1700),
            Keyed("none", 2, 1300),
        ),
        recent_answers=(
            Answer(at(10, 25, 1), "missing_features", "Still thinking"),
            Answer(at(10, 10, 1), "missing_features", "No API"),
            Answer(at(10, 3, 1), "too_expensive", "Money is tight"),
        ),
        revenue_saved=4400,
        revenue_conceded=600,
    )


def test_the_median_of_an_even_count_is_the_mean_of_the_middle_two(seeded: Runtime) -> None:
    # Oct 1-11: recovered c1 (2.0 days) and c2 (4.5 days) -> 3.25
    assert overview(seeded, date(2026, 10, 1), date(2026, 10, 11)).median_days_to_recover == 3.25


def test_an_empty_period_has_zeros_and_no_ratios(seeded: Runtime) -> None:
    o = overview(seeded, date(2025, 1, 1), date(2025, 1, 1))
    assert (o.failed, o.recovered, o.recovered_share) == (Tally(), Tally(), None)
    assert o.median_days_to_recover is None
    assert o.cancel_flow.save_rate is None
    assert o.by_reminder_channel == (
        Keyed("email", 0, 0),
        Keyed("sms", 0, 0),
        Keyed("none", 0, 0),
    )


def test_zero_decimal_currency_keeps_whole_units(seeded: Runtime) -> None:
    o = overview(seeded, *PERIOD, currency="jpy")
    assert (o.exponent, o.failed) == (0, Tally(1, 5000))  # c13: 5000 yen, not 50.00
    assert overview(seeded, *PERIOD, currency="kwd").exponent == 3


# ---- the API ------------------------------------------------------------------------------------


def test_api_returns_the_overviews_numbers(seeded: Runtime, client: Any) -> None:
    response = client.get(
        "/api/v1/metrics?from=2026-10-01&to=2026-10-31&currency=USD", headers=AUTH
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body == overview(seeded, *PERIOD).as_json()
    assert body["failed"] == {"count": 9, "amount": 16900}
    assert body["weekly"][1] == {
        "week": "2026-W41",
        "starts": "2026-10-05",
        "failed_count": 2,
        "failed_amount": 3000,
        "recovered_count": 2,
        "recovered_amount": 3000,
    }


def test_api_defaults_to_the_last_30_days_in_the_most_common_currency(
    seeded: Runtime, client: Any
) -> None:
    body = client.get("/api/v1/metrics", headers=AUTH).get_json()
    # today is 2026-11-02: Oct 4 .. Nov 2, both included; USD has the most cases
    assert (body["period_from"], body["period_to"], body["currency"]) == (
        "2026-10-04T00:00:00+00:00",
        "2026-11-03T00:00:00+00:00",
        "usd",
    )
    assert body == overview(seeded, date(2026, 10, 4), date(2026, 11, 2)).as_json()


def test_api_needs_a_key(seeded: Runtime, client: Any) -> None:
    assert client.get("/api/v1/metrics").status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert client.get("/api/v1/metrics", headers=wrong).status_code == 401


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("from=2026-10-31&to=2026-10-01", "from must be on or before to"),
        ("from=2026-13-01&to=2026-12-31", "from must be a date"),
        ("from=yesterday", "from must be a date"),
        ("to=2026-1-5", "to must be a date"),
        ("from=2020-01-01&to=2026-10-31", "at most 3 years"),
        ("currency=us", "three-letter"),
        ("currency=usdollar", "three-letter"),
        ("currency=xyz", "unknown currency"),
        ("currency=%E2%82%AC%E2%82%AC%E2%82%AC", "three-letter"),
    ],
)
def test_api_rejects_bad_parameters_with_a_reason(
    seeded: Runtime, client: Any, query: str, reason: str
) -> None:
    response = client.get(f"/api/v1/metrics?{query}", headers=AUTH)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_parameter"
    assert reason in response.get_json()["error"]["message"]


# ---- no query per row ---------------------------------------------------------------------------


@contextmanager
def counted(rt: Runtime) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(rt.db.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(rt.db.engine, "before_cursor_execute", count)


def _grow(rt: Runtime, n: int, offset: int) -> None:
    with rt.db.transaction() as session:
        for i in range(n):
            add_case(
                session,
                f"x{offset + i}",
                status=("recovered", "lost", "retrying")[i % 3],
                recovered_via="our_retry" if i % 3 == 0 else None,
                amount_due=100 + i,
                amount_recovered=100 + i if i % 3 == 0 else 0,
                opened_at=datetime(2026, 10, 1 + i % 28, 12, tzinfo=UTC),
                closed_at=datetime(2026, 10, 1 + i % 28, 18, tzinfo=UTC),
                decline_category=("soft", "needs_new_card")[i % 2],
                card_brand=("visa", "amex", "discover")[i % 3],
                subscription_id=f"sub_x{i}",
            )


def test_query_count_does_not_grow_with_the_number_of_cases(seeded: Runtime) -> None:
    with counted(seeded) as few:
        overview(seeded, *PERIOD)
    _grow(seeded, 150, 0)
    with counted(seeded) as many:
        grown = overview(seeded, *PERIOD)
    assert grown.failed.count == 9 + 150
    assert len(many) == len(few)
    # BEGIN etc., recovery by month, the currencies side by side (2), outreach, the validated
    # outcomes and the pauses instead of losses included; with the rollups, the dirty days, and
    # for each additive figure its rolled-up days' sums beside the direct query of the others;
    # the currency without one asked for (rollup + dirty days), the median's histogram and
    # its middle day's read, the windows ending today by the hour
    assert len(few) <= 27


def test_every_currency_side_by_side_matches_its_own_overview(seeded: Runtime) -> None:
    """The side-by-side table is the tiles of each currency's own overview."""
    o = overview(seeded, *PERIOD)
    assert [c.currency for c in o.by_currency] and o.by_currency[0].currency == "usd"
    for column in o.by_currency:
        own = overview(seeded, *PERIOD, currency=column.currency)
        assert (column.failed, column.recovered, column.in_progress, column.lost) == (
            own.failed,
            own.recovered,
            own.in_progress,
            own.lost,
        )
        assert column.recovered_share == own.recovered_share
        assert column.recovered_monthly_revenue == own.recovered_monthly_revenue
