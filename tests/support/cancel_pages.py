"""Put cancel sessions into every state a page exists for, so each page can be rendered in each
locale (by Flask's test client and by Chromium alike)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from recovery.models import OfferAcceptance
from recovery.services.cancel import decisions
from recovery.services.cancel.flow import StartRequest, session_url, start_session, submit_survey
from tests.conftest import START
from tests.support.cancel_flow import Flow, seed

# reason -> the offer the test rules show for it (longer term: after a recent downgrade)
OFFER_REASONS = {
    "pause": "temporary",
    "downgrade": "too_expensive",
    "longer_term": "too_expensive",
    "discount": "switching",
}


@dataclass(frozen=True)
class Prepared:
    name: str  # which page, e.g. "offer-pause", "done-cancelled"
    url: str  # where to GET it
    status: int
    expect: str  # an English text the page shows (translated in other locales)


def _start(flow: Flow, key: str, locale: str, *, history: bool = False) -> tuple[str, str]:
    seeded = seed(flow.gateway, customer=f"cus_{key}", subscription=f"sub_{key}")
    if history:
        with flow.runtime.db.transaction() as s:
            s.add(
                OfferAcceptance(
                    session_id=f"cxs_old_{key}",
                    customer_id=seeded.customer,
                    subscription_id=seeded.subscription,
                    kind="downgrade",
                    terms={},
                    idempotency_key=f"old-{key}",
                    accepted_at=START - timedelta(days=40),
                )
            )
    request = StartRequest(
        seeded.customer, seeded.subscription, "https://shop.example/account", locale=locale
    )
    _row, token = start_session(flow.runtime, request)
    return token, session_url(flow.runtime.settings, token).split("://", 1)[1].split("/", 1)[1]


def prepare_pages(flow: Flow, locale: str) -> list[Prepared]:
    """Sessions in every state, for `locale`; returns each page's URL path."""
    rt, tag = flow.runtime, locale.lower().replace("_", "")
    pages: list[Prepared] = []
    token, path = _start(flow, f"{tag}_survey", locale)
    pages.append(Prepared("survey", f"/{path}", 200, "Why are you leaving?"))
    for kind, reason in OFFER_REASONS.items():
        key = f"{tag}_{kind}"
        token, path = _start(flow, key, locale, history=kind == "longer_term")
        submit_survey(rt, token, reason, None)
        expect = {
            "pause": "Pause your subscription instead",
            "downgrade": "Switch to a lower-priced plan",
            "longer_term": "with yearly billing",
            "discount": "A discount if you stay",
        }[kind]
        pages.append(Prepared(f"offer-{kind}", f"/{path}/offer", 200, expect))
        token2, path2 = _start(flow, f"{key}_done", locale, history=kind == "longer_term")
        submit_survey(rt, token2, reason, None)
        decisions.accept_offer(rt, token2, locale, kind, "2" if kind == "pause" else None)
        done = {
            "pause": "Your subscription is paused",
            "downgrade": "Your plan has changed",
            "longer_term": "You're now on yearly billing",
            "discount": "Your discount is applied",
        }[kind]
        pages.append(Prepared(f"done-{kind}", f"/{path2}/done", 200, done))
    token, path = _start(flow, f"{tag}_none", locale)
    submit_survey(rt, token, "technical", None)
    pages.append(Prepared("offer-none", f"/{path}/offer", 200, "Confirm your cancellation"))
    token, path = _start(flow, f"{tag}_cancel", locale)
    decisions.cancel(rt, token, locale, "other", None)
    pages.append(Prepared("done-cancelled", f"/{path}/done", 200, "Your subscription is cancelled"))
    flow.gateway.outage(1, "server_error", methods={"cancel_subscription"})
    token, path = _start(flow, f"{tag}_pending", locale)
    decisions.cancel(rt, token, locale, None, None)
    pages.append(Prepared("done-pending", f"/{path}/done", 200, "still confirming"))
    key = f"{tag}_already"
    token, path = _start(flow, key, locale)
    flow.gateway.store["subscription"][f"sub_{key}"]["cancel_at_period_end"] = True
    _refresh(flow, f"sub_{key}")
    pages.append(Prepared("already", f"/{path}", 200, "already cancelled"))
    return pages


def _refresh(flow: Flow, subscription_id: str) -> None:
    from recovery.domain.stripe_objects.states import subscription_state
    from recovery.services.events import mirror

    obj = flow.gateway.retrieve_subscription(subscription_id)
    with flow.runtime.db.transaction() as s:
        ts = int(flow.clock.now().timestamp()) + 1
        mirror.apply_subscription(s, subscription_state(obj), ts)


def expired_path(flow: Flow, locale: str) -> str:
    """A session whose time ran out (the clock is moved back after creating it)."""
    tag = locale.lower().replace("_", "")
    flow.clock.advance(timedelta(hours=-2))
    try:
        _token, path = _start(flow, f"{tag}_expired", locale)
    finally:
        flow.clock.advance(timedelta(hours=2))
    return f"/{path}"


def languages_header(locale: str) -> dict[str, Any]:
    return {"Accept-Language": locale.replace("_", "-")}
