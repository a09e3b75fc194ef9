"""Login-free card-update links through the real app (Flask test client) and the Stripe fake."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from recovery.domain.cases import CaseStatus, RecoveredVia
from recovery.models import CardUpdateLink, CaseEvent, RecoveryCase
from recovery.runtime import Runtime
from recovery.services.card_update import links
from recovery.web import i18n as web_i18n
from tests.support.card_update import (
    Linked,
    csrf_from,
    failed_renewal_with_link,
    pay_requests,
    row_counts,
)
from tests.support.scenario import Story


@pytest.fixture
def story(runtime: Runtime, fake_gateway: Any, clock: Any) -> Story:
    return Story(runtime, fake_gateway, clock)


@pytest.fixture
def linked(story: Story, runtime: Runtime) -> Linked:
    return failed_renewal_with_link(story, runtime)


def _case(rt: Runtime, case_id: int) -> RecoveryCase:
    with rt.db.transaction() as s:
        case = s.get(RecoveryCase, case_id)
        assert case is not None
        return case


def _start_checkout(client: Any, token: str) -> str:
    page = client.get(f"/update/{token}")
    assert page.status_code == 200
    posted = client.post(f"/update/{token}", data={"csrf_token": csrf_from(page.text)})
    assert posted.status_code == 303
    location: str = posted.headers["Location"]
    assert location.startswith("https://checkout.stripe.com/")
    return location.rsplit("/", 1)[1]


def test_link_is_random_hashed_and_bound_to_case(runtime: Runtime, linked: Linked) -> None:
    assert linked.url == f"http://recovery.test/update/{linked.token}"
    assert len(linked.token) == 43  # 256 random bits
    with runtime.db.transaction() as s:
        digest = links.token_hash(linked.token)
        row = s.scalars(select(CardUpdateLink).where(CardUpdateLink.token_hash == digest)).one()
        assert linked.token not in repr(row.__dict__)
        assert row.case_id == linked.case_id and row.customer_id == linked.billing.customer
        assert row.expires_at - row.created_at == timedelta(days=30)


def test_page_shows_only_masked_data(client: Any, runtime: Runtime, linked: Linked) -> None:
    page = client.get(f"/update/{linked.token}")
    assert page.status_code == 200
    text = page.text
    assert runtime.rules.business.name in text
    assert "Visa ending in 4242" in text
    assert "20.00" in text
    assert "kim@example.com" not in text and "Kim" not in text
    assert "<script" not in text and len(page.data) < 10_000
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert "noindex" in page.headers["X-Robots-Tag"]
    with runtime.db.transaction() as s:
        digest = links.token_hash(linked.token)
        row = s.scalars(select(CardUpdateLink).where(CardUpdateLink.token_hash == digest)).one()
        assert row.opened_count == 1 and row.first_opened_at is not None
        kinds = s.scalars(select(CaseEvent.kind).where(CaseEvent.case_id == linked.case_id))
        assert "link_opened" in list(kinds)


def test_new_card_pays_at_once_and_refresh_pays_nothing_more(
    client: Any, runtime: Runtime, fake_gateway: Any, story: Story, linked: Linked
) -> None:
    cs = _start_checkout(client, linked.token)
    fake_gateway.complete_checkout_session(cs, brand="mastercard", last4="4444")
    done = client.get(f"/update/{linked.token}/done?session_id={cs}")
    assert done.status_code == 200 and "Thank you" in done.text
    again = client.get(f"/update/{linked.token}/done?session_id={cs}")
    assert again.status_code == 200 and "Thank you" in again.text
    story.deliver()  # Stripe's webhooks arrive too: the action they schedule does nothing
    story.run_due()
    assert len(pay_requests(fake_gateway, linked.case_id)) == 1
    case = _case(runtime, linked.case_id)
    assert case.status == CaseStatus.RECOVERED
    assert case.recovered_via == RecoveredVia.CARD_UPDATE_LINK
    assert story.pending(linked.case_id) == []
    assert fake_gateway.store["invoice"][linked.billing.invoice]["status"] == "paid"
    sub = fake_gateway.store["subscription"][linked.billing.subscription]
    customer = fake_gateway.store["customer"][linked.billing.customer]
    new_pm = sub["default_payment_method"]
    assert new_pm != linked.billing.payment_method
    assert customer["invoice_settings"]["default_payment_method"] == new_pm
    with runtime.db.transaction() as s:
        kinds = list(s.scalars(select(CaseEvent.kind).where(CaseEvent.case_id == case.id)))
    assert "card_updated" in kinds
    # A recovered case's link no longer opens the page.
    assert client.get(f"/update/{linked.token}").status_code == 410


def test_declined_new_card_offers_another_try(
    client: Any, runtime: Runtime, fake_gateway: Any, linked: Linked
) -> None:
    cs = _start_checkout(client, linked.token)
    fake_gateway.complete_checkout_session(cs, declines_with="insufficient_funds")
    done = client.get(f"/update/{linked.token}/done?session_id={cs}")
    assert done.status_code == 200 and "Try another card" in done.text
    assert _case(runtime, linked.case_id).status != CaseStatus.RECOVERED
    # The next attempt is a new Checkout Session, and it can pay.
    posted = client.post(f"/update/{linked.token}", data={"csrf_token": csrf_from(done.text)})
    cs2 = posted.headers["Location"].rsplit("/", 1)[1]
    assert cs2 != cs
    fake_gateway.complete_checkout_session(cs2)
    assert "Thank you" in client.get(f"/update/{linked.token}/done?session_id={cs2}").text
    assert _case(runtime, linked.case_id).recovered_via == RecoveredVia.CARD_UPDATE_LINK
    assert len(pay_requests(fake_gateway, linked.case_id)) == 2


def test_double_submit_reuses_one_checkout_session(
    client: Any, fake_gateway: Any, linked: Linked
) -> None:
    assert _start_checkout(client, linked.token) == _start_checkout(client, linked.token)


def test_closing_the_tab_is_finished_by_the_webhooks(
    client: Any, runtime: Runtime, fake_gateway: Any, story: Story, linked: Linked
) -> None:
    cs = _start_checkout(client, linked.token)
    fake_gateway.complete_checkout_session(cs)
    story.deliver()  # checkout.session.completed + setup_intent.succeeded: one due action
    story.run_due()
    case = _case(runtime, linked.case_id)
    assert case.status == CaseStatus.RECOVERED
    assert case.recovered_via == RecoveredVia.CARD_UPDATE_LINK
    assert story.pending(linked.case_id) == []
    # The customer comes back later after all: shown the result, charged nothing more.
    assert "Thank you" in client.get(f"/update/{linked.token}/done?session_id={cs}").text
    assert len(pay_requests(fake_gateway, linked.case_id)) == 1


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # tampered
        lambda t: "x" * 43,  # never issued
        lambda t: t + "extra",  # wrong shape
        lambda t: t + "/a/b",  # not a page of ours
    ],
)
def test_unknown_or_tampered_link_is_404_and_writes_nothing(
    client: Any, runtime: Runtime, linked: Linked, mangle: Any
) -> None:
    before = row_counts(runtime)
    response = client.get(f"/update/{mangle(linked.token)}")
    assert response.status_code == 404
    assert "doesn't work" in response.text and "Visa" not in response.text
    assert row_counts(runtime) == before


def test_expired_and_revoked_links_are_410_and_write_nothing(
    client: Any, runtime: Runtime, clock: Any, linked: Linked
) -> None:
    clock.set(clock.now() + timedelta(days=30, seconds=1))
    before = row_counts(runtime)
    assert client.get(f"/update/{linked.token}").status_code == 410
    assert client.post(f"/update/{linked.token}", data={}).status_code in (400, 410)
    assert row_counts(runtime) == before
    clock.set(clock.now() - timedelta(days=2))
    with runtime.db.transaction() as s:
        assert links.revoke_for_case(s, linked.case_id, clock.now()) >= 1
    before = row_counts(runtime)
    response = client.get(f"/update/{linked.token}")
    assert response.status_code == 410 and "no longer active" in response.text
    assert row_counts(runtime) == before


def test_post_without_csrf_token_is_refused(
    client: Any, runtime: Runtime, fake_gateway: Any, linked: Linked
) -> None:
    response = client.post(f"/update/{linked.token}", data={"csrf_token": "forged"})
    assert response.status_code == 400
    assert not [r for r in fake_gateway.requests if r.method == "create_checkout_setup_session"]


def test_each_call_issues_a_fresh_link_and_older_ones_keep_working(
    client: Any, runtime: Runtime, linked: Linked
) -> None:
    with runtime.db.transaction() as s:
        case = s.get(RecoveryCase, linked.case_id)
        assert case is not None
        second = links.link_for_case(
            s, case, runtime.clock.now(), settings=runtime.settings, rules=runtime.rules
        )
    assert second != linked.url
    assert client.get(f"/update/{linked.token}").status_code == 200
    assert client.get(second.removeprefix("http://recovery.test")).status_code == 200


def test_rate_limited_per_link_with_a_friendly_page(client: Any, linked: Linked) -> None:
    statuses = [client.get(f"/update/{linked.token}").status_code for _ in range(31)]
    assert statuses[:30] == [200] * 30
    assert statuses[30] == 429
    page = client.get(f"/update/{linked.token}")
    assert page.status_code == 429 and "Too many attempts" in page.text


def test_new_card_needing_3ds_sends_the_customer_to_confirm(
    client: Any, runtime: Runtime, fake_gateway: Any, linked: Linked
) -> None:
    cs = _start_checkout(client, linked.token)
    fake_gateway.complete_checkout_session(cs, requires_authentication=True)
    done = client.get(f"/update/{linked.token}/done?session_id={cs}")
    assert done.status_code == 200 and "confirm" in done.text
    hosted = fake_gateway.store["invoice"][linked.billing.invoice]["hosted_invoice_url"]
    assert hosted and hosted in done.text
    case = _case(runtime, linked.case_id)
    assert case.status == CaseStatus.AWAITING_CUSTOMER and case.awaiting == "authentication"


def test_stripe_outage_shows_a_friendly_page_and_a_retry_pays_once(
    client: Any, runtime: Runtime, fake_gateway: Any, linked: Linked
) -> None:
    page = client.get(f"/update/{linked.token}")
    fake_gateway.outage(1, "server_error", methods={"create_checkout_setup_session"})
    failed = client.post(f"/update/{linked.token}", data={"csrf_token": csrf_from(page.text)})
    assert failed.status_code == 503 and "Nothing was charged" in failed.text
    cs = _start_checkout(client, linked.token)
    fake_gateway.complete_checkout_session(cs)
    fake_gateway.outage(1, "server_error", methods={"pay_invoice"})
    assert client.get(f"/update/{linked.token}/done?session_id={cs}").status_code == 503
    assert "Thank you" in client.get(f"/update/{linked.token}/done?session_id={cs}").text
    keys = {r.idempotency_key for r in pay_requests(fake_gateway, linked.case_id)}
    assert len(keys) == 1  # the retry reused the key: Stripe charges at most once
    invoice = fake_gateway.store["invoice"][linked.billing.invoice]
    assert invoice["status"] == "paid"
    assert _case(runtime, linked.case_id).recovered_via == RecoveredVia.CARD_UPDATE_LINK


def test_paid_meanwhile_saves_the_card_and_charges_nothing(
    client: Any, runtime: Runtime, fake_gateway: Any, story: Story, linked: Linked
) -> None:
    cs = _start_checkout(client, linked.token)
    assert story.stripe_charges(linked.billing.invoice) == "paid"  # Stripe's retry got there
    fake_gateway.complete_checkout_session(cs, last4="5556")
    done = client.get(f"/update/{linked.token}/done?session_id={cs}")
    assert done.status_code == 200 and "nothing to pay" in done.text
    assert pay_requests(fake_gateway, linked.case_id) == []
    sub = fake_gateway.store["subscription"][linked.billing.subscription]
    assert sub["default_payment_method"] != linked.billing.payment_method


def test_a_session_of_another_link_is_not_accepted(
    client: Any, runtime: Runtime, fake_gateway: Any, story: Story, linked: Linked
) -> None:
    other = failed_renewal_with_link(story, runtime)
    cs_other = _start_checkout(client, other.token)
    fake_gateway.complete_checkout_session(cs_other)
    response = client.get(f"/update/{linked.token}/done?session_id={cs_other}")
    assert "wasn't saved yet" in response.text
    assert pay_requests(fake_gateway, linked.case_id) == []
    assert pay_requests(fake_gateway, other.case_id) == []


def test_an_expired_checkout_session_is_replaced(
    client: Any, fake_gateway: Any, clock: Any, linked: Linked
) -> None:
    first = _start_checkout(client, linked.token)
    clock.set(clock.now() + timedelta(hours=24, seconds=1))  # Checkout sessions last 24 h
    second = _start_checkout(client, linked.token)
    assert second != first
    assert fake_gateway.store["checkout.session"][second]["status"] == "open"


@pytest.mark.parametrize("locale", ["en", "es", "de", "fr", "pt_BR", "hi", "th", "ru"])
def test_every_page_in_every_locale_is_fully_translated(
    app: Any, fake_gateway: Any, linked: Linked, locale: str
) -> None:
    from recovery import i18n

    client = app.test_client()
    headers = {"Accept-Language": locale.replace("_", "-")}
    lang = f'<html lang="{i18n.html_lang(locale)}"'
    page = client.get(f"/update/{linked.token}", headers=headers)
    assert page.status_code == 200 and lang in page.text
    assert ("Amount due" in page.text) is (locale == "en")
    posted = client.post(
        f"/update/{linked.token}", data={"csrf_token": csrf_from(page.text)}, headers=headers
    )
    cs = posted.headers["Location"].rsplit("/", 1)[1]
    fake_gateway.complete_checkout_session(cs, declines_with="insufficient_funds")
    declined = client.get(f"/update/{linked.token}/done?session_id={cs}", headers=headers)
    assert declined.status_code == 200 and lang in declined.text
    assert ("Try another card" in declined.text) is (locale == "en")
    for url, status in (("/update/" + "x" * 43, 404), (f"/update/{linked.token}/nope", 404)):
        notice = client.get(url, headers=headers)
        assert notice.status_code == status and lang in notice.text
    assert web_i18n.missing(app) == set()


def test_the_page_speaks_the_customers_stripe_language(
    app: Any, runtime: Runtime, linked: Linked
) -> None:
    from recovery.models import Customer

    with runtime.db.transaction() as s:
        customer = s.get(Customer, linked.billing.customer)
        assert customer is not None
        customer.preferred_locales = ["de-DE"]
    page = app.test_client().get(f"/update/{linked.token}", headers={"Accept-Language": "fr"})
    assert '<html lang="de"' in page.text
    assert "Offener Betrag" in page.text and "20,00\xa0$" in page.text
    assert "Visa mit der Endung 4242" in page.text
