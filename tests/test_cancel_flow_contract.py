"""Contract: every Stripe request the cancel flow makes, sent by the real SDK gateway to a local
recording server, uses only parameters the pinned API's typed params declare, with the
idempotency key derived from the session and the decision (approach of test_stripe_gateway)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest

from recovery.domain.offer_terms import pause_until, terms_for
from recovery.domain.offers import (
    OfferKind,
    OfferRule,
    OfferRules,
    Plan,
    PriceSwitch,
    SubscriptionFacts,
)
from recovery.models import CancelSession
from recovery.services.cancel.decisions import SAVED_BY, apply_in_stripe, idempotency_key
from tests.test_stripe_gateway import (
    ENDPOINTS,
    ScriptedStripe,
    decode_form,
    gateway_for,
    unknown_params,
)

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
RULES = OfferRules(
    (
        OfferRule(OfferKind.PAUSE, pause_months=(1, 2, 3), pause_behavior="void"),
        OfferRule(OfferKind.DOWNGRADE, switches=(PriceSwitch("price_pro", "price_basic", 900),)),
        OfferRule(
            OfferKind.LONGER_TERM,
            proration_behavior="always_invoice",
            switches=(PriceSwitch("price_pro", "price_year", 19200),),
        ),
        OfferRule(OfferKind.DISCOUNT, coupon="STAY25", percent_off=25, duration_months=3),
    )
)
FACTS = SubscriptionFacts(
    id="sub_1",
    customer_id="cus_1",
    status="active",
    currency="usd",
    plans=(Plan("si_1", "price_pro", 2000, 2, "month"),),
    started_at=NOW - timedelta(days=100),
    current_period_start=NOW - timedelta(days=10),
    current_period_end=NOW + timedelta(days=20),
)


@pytest.fixture
def scripted() -> Iterator[ScriptedStripe]:
    server = ScriptedStripe()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def session(outcome: str, **values: object) -> CancelSession:
    return CancelSession(id="cxs_contract", subscription_id="sub_1", outcome=outcome, **values)


def decisions() -> list[tuple[str, CancelSession, str | None]]:
    made: list[tuple[str, CancelSession, str | None]] = []
    for kind in OfferKind:
        terms = terms_for(kind, RULES, FACTS, NOW)
        ends = pause_until(NOW, 2) if kind == OfferKind.PAUSE else None
        made.append(
            (
                f"offer:{kind.value}",
                session(SAVED_BY[kind].value, offer_terms=terms.to_json(), ends_at=ends),
                None,
            )
        )
    made.append(
        (
            "cancel",
            session("cancelled", cancel_at_period_end=True, reason_text="Too dear for us"),
            "too_expensive",
        )
    )
    made.append(("cancel", session("cancelled", cancel_at_period_end=False), "unused"))
    return made


@pytest.mark.parametrize(
    ("decision", "row", "feedback"), decisions(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_each_decision_sends_only_typed_parameters_with_its_key(
    scripted: ScriptedStripe, decision: str, row: CancelSession, feedback: str | None
) -> None:
    gateway, _ = gateway_for(scripted)
    apply_in_stripe(gateway, row, feedback)
    assert scripted.received, "nothing sent"
    for request in scripted.received:
        url = urlsplit(request.url)
        typed = next(
            td
            for m, pattern, td in ENDPOINTS
            if m == request.method and re.fullmatch(pattern, url.path)
        )
        params = decode_form(request.body or url.query)
        assert unknown_params(params, [typed]) == [], f"{request.method} {url.path}: {params}"
        if request.method == "POST":
            assert request.headers["Idempotency-Key"] == idempotency_key("cxs_contract", decision)


def sent(scripted: ScriptedStripe) -> dict[str, object]:
    (request,) = [r for r in scripted.received if r.method in ("POST", "DELETE")]
    return decode_form(request.body or urlsplit(request.url).query)


def test_the_stripe_parameters_say_what_the_subscriber_chose(scripted: ScriptedStripe) -> None:
    gateway, _ = gateway_for(scripted)
    rows = {d + (f or ""): r for d, r, f in decisions()}
    apply_in_stripe(gateway, rows["offer:pause"], None)
    assert sent(scripted) == {
        "pause_collection": {
            "behavior": "void",
            "resumes_at": str(int(pause_until(NOW, 2).timestamp())),
        }
    }
    scripted.received.clear()
    apply_in_stripe(gateway, rows["offer:longer_term"], None)
    assert sent(scripted) == {
        "items": [{"id": "si_1", "price": "price_year", "quantity": "2"}],
        "proration_behavior": "always_invoice",
    }
    scripted.received.clear()
    apply_in_stripe(gateway, rows["offer:discount"], None)
    assert sent(scripted) == {"discounts": [{"coupon": "STAY25"}]}
    scripted.received.clear()
    apply_in_stripe(gateway, rows["canceltoo_expensive"], "too_expensive")
    assert sent(scripted) == {
        "cancel_at_period_end": "true",
        "cancellation_details": {"feedback": "too_expensive", "comment": "Too dear for us"},
    }
    scripted.received.clear()
    apply_in_stripe(gateway, rows["cancelunused"], "unused")
    assert sent(scripted) == {"cancellation_details": {"feedback": "unused"}}
