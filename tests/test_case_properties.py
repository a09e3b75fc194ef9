"""Properties of recovery cases under arbitrary billing stories (hypothesis).

Whatever happens - declines of any kind, card changes, customers paying, time passing - a case
never charges a card after a never-retry decline, never exceeds the attempts allowed, never
charges outside its window, uses one idempotency key per attempt, and once it is recovered,
lost or closed nothing is left scheduled for it.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recovery.adapters.clock import FrozenClock
from recovery.adapters.stripe_fake import FakeStripeGateway
from recovery.domain.cases import TERMINAL
from recovery.services.registry import build_runtime
from tests.conftest import START, make_settings
from tests.support.scenario import Story

DECLINES = [
    {"decline_code": "insufficient_funds"},
    {"decline_code": "generic_decline"},
    {"decline_code": "do_not_honor", "network_advice_code": "24", "brand": "mastercard"},
    {"decline_code": "do_not_honor", "network_advice_code": "03", "brand": "mastercard"},
    {"decline_code": "expired_card"},
    {"decline_code": "stolen_card"},
    {"decline_code": "card_velocity_exceeded"},
    {"decline_code": "generic_decline", "network_decline_code": "05"},
]
NEVER_AGAIN = {"stolen_card"}

step = st.one_of(
    st.tuples(st.just("advance"), st.integers(min_value=1, max_value=12 * 24)),
    st.tuples(st.just("decline_next"), st.sampled_from(range(len(DECLINES)))),
    st.tuples(st.just("new_card"), st.booleans()),
    st.tuples(st.just("customer_pays"), st.just(0)),
)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Path:
    return sqlite_template


@settings(
    max_examples=15,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(first=st.sampled_from(range(len(DECLINES))), steps=st.lists(step, max_size=6))
def test_cases_keep_their_promises(
    template: Path, tmp_path_factory: pytest.TempPathFactory, first: int, steps: list[Any]
) -> None:
    folder = tmp_path_factory.mktemp("prop")
    shutil.copy(template, folder / "db.sqlite")
    clock = FrozenClock(START)
    fake = FakeStripeGateway(clock=clock)
    rt = build_runtime(
        make_settings(f"sqlite:///{folder / 'db.sqlite'}", folder), clock=clock, gateway=fake
    )
    try:
        story = Story(rt, fake, clock)
        b = story.customer()
        story.deliver()
        story.stripe_charges(b.invoice, **DECLINES[first])
        never_again_cards: set[str] = set()
        if DECLINES[first]["decline_code"] in NEVER_AGAIN:
            never_again_cards.add(b.payment_method)
        window_end = story.case(b.invoice).opened_at + timedelta(days=rt.rules.retry.window_days)

        def our_pays() -> int:
            return sum(
                1
                for r in fake.requests
                if r.method == "pay_invoice" and (r.idempotency_key or "").startswith("case:")
            )

        for action, arg in steps:
            before, started = our_pays(), clock.now()
            if action == "advance":
                deadline = clock.now() + timedelta(hours=arg)
                while (due := story.next_due()) is not None and due <= deadline:
                    story.advance_to_next_due()
                clock.set(max(clock.now(), deadline))
            elif action == "decline_next":
                fake.fail_next_payment(b.invoice, **DECLINES[arg])
            elif action == "new_card":
                pm = fake.add_payment_method(
                    b.customer, declines_with="stolen_card" if arg else None
                )
                fake.add_event("payment_method.attached", pm)
                fake.set_subscription_default_payment_method(
                    b.subscription, pm["id"], idempotency_key=f"portal:{pm['id']}"
                )
                fake.add_event(
                    "customer.subscription.updated", fake.retrieve_subscription(b.subscription)
                )
                story.deliver()
            elif action == "customer_pays" and fake.retrieve_invoice(b.invoice)["status"] == "open":
                story.stripe_charges(b.invoice)
            if started > window_end:
                assert our_pays() == before, "charged after the retry window ended"
        case = story.case(b.invoice)
        pays = [r for r in fake.requests if r.method == "pay_invoice"]
        ours = [r for r in pays if (r.idempotency_key or "").startswith(f"case:{case.id}:")]
        keys = [r.idempotency_key for r in ours]
        assert len(keys) == len(set(keys)), "one idempotency key per attempt"
        assert len(ours) <= rt.rules.retry.max_attempts * 4  # at most 8 per card, 4 cards max
        if case.status in TERMINAL:
            left = [(a.kind, a.dedupe_key) for a in story.pending(case.id)]
            assert left == [], f"{case.status} case still has work scheduled: {left}"
        # never again on a card after a never-retry decline on it
        charged_after_stop = [
            r for r in ours if r.params.get("payment_method") in never_again_cards
        ]
        assert charged_after_stop == []
    finally:
        rt.db.dispose()
