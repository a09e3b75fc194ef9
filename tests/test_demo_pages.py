"""The demo's own parts in process, on SQLite and PostgreSQL: the history seeder, the demo-only
pages (outbox, stand-in Checkout, cancel-flow starter), and that they exist only in demo mode."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from recovery.adapters.clock import FrozenClock
from recovery.adapters.stripe.errors import CardDeclined
from recovery.adapters.stripe_fake import FakeStripeGateway
from recovery.app import create_app
from recovery.config import ConfigError
from recovery.devtools import population
from recovery.devtools.history import History
from recovery.models import CancelSession, OutboxMessage, RecoveryCase, StripeEvent
from recovery.runtime import Runtime
from recovery.services.card_update import links as card_update_links
from recovery.services.events.sync import sync_from_stripe
from recovery.services.messaging import outbox
from recovery.services.registry import build_runtime
from tests.conftest import START, make_settings
from tests.support.dashboard import csrf_from

DEMO = {"RECOVERY_DEMO": "1"}


def _runtime(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake: Any, **extra: Any
) -> Runtime:
    rules = tmp_path / "demo-rules.toml"
    rules.write_text(population.RULES_TOML, encoding="utf-8")
    settings = make_settings(database_url, tmp_path, rules_path=rules, **extra)
    return build_runtime(settings, clock=clock, gateway=fake)


@pytest.fixture
def demo_runtime(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: FakeStripeGateway
) -> Iterator[Runtime]:
    rt = _runtime(database_url, tmp_path, clock, fake_gateway, extra=DEMO)
    yield rt
    rt.db.dispose()


@pytest.fixture
def demo_client(demo_runtime: Runtime) -> Any:
    app = create_app(runtime=demo_runtime, config={"RATELIMIT_ENABLED": False})
    return app.test_client()


# ---- only in demo mode --------------------------------------------------------------------------


def test_demo_pages_are_absent_without_demo_mode(client: Any) -> None:
    for path in ("/demo/outbox", "/demo/checkout/cs_test_1", "/demo/cancel/sub_1"):
        assert client.get(path).status_code == 404


def test_production_refuses_demo_mode(
    sqlite_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: FakeStripeGateway
) -> None:
    production = {
        "env": "production",
        "secret_key": "s" * 40,
        "stripe_api_key": "sk_test_production_like",
        "public_url": "https://billing.example.com",
        "extra": DEMO,
    }
    rt = build_runtime(
        make_settings(sqlite_url, tmp_path, **production), clock=clock, gateway=fake_gateway
    )
    with pytest.raises(ConfigError, match="RECOVERY_DEMO"):
        create_app(runtime=rt)
    del production["extra"]  # the same settings without it start
    rt = build_runtime(
        make_settings(sqlite_url, tmp_path, **production), clock=clock, gateway=fake_gateway
    )
    assert create_app(runtime=rt).test_client().get("/demo/outbox").status_code == 404


# ---- the pages ----------------------------------------------------------------------------------


def test_outbox_page_shows_messages_with_working_links(
    demo_runtime: Runtime, demo_client: Any
) -> None:
    rt = demo_runtime
    now = rt.clock.now()
    with rt.db.transaction() as session:
        key = "expiry:sub_1:pm_1:2026-12-01:0"
        url = card_update_links.link_for_message(
            session,
            message_key=key,
            customer_id="cus_1",
            subscription_id="sub_1",
            now=now,
            settings=rt.settings,
            rules=rt.rules,
        )
        body = f"Your card <ends> soon. Update it here:\n{url}\n"
        outbox.enqueue(
            session,
            about="expiry:sub_1:pm_1",
            case_id=None,
            customer_id="cus_1",
            channel="email",
            template="card_expiring",
            step="expiring.0",
            locale="de",
            recipient="kim@example.com",
            subject="Your card expires",
            body=card_update_links.stored_form(body, url),
            send_after=now,
            dedupe_key=key,
            now=now,
        )
    page = demo_client.get("/demo/outbox").get_data(as_text=True)
    assert "Your card expires" in page and "kim@example.com" in page
    assert "&lt;ends&gt;" in page  # the body is escaped...
    assert f'<a href="{url}">{url}</a>' in page  # ...and its link, token filled in, clickable
    with rt.db.transaction() as session:  # the very link the sender would have put in
        assert card_update_links.find(session, url.rsplit("/", 1)[1]) is not None
    assert "No messages" in demo_client.get("/demo/outbox?channel=sms").get_data(as_text=True)


def _card_update_checkout(fake: FakeStripeGateway) -> tuple[Any, Any]:
    """A customer and the setup-mode Checkout Session a card-update link starts for them."""
    customer = fake.add_customer(email="kim@example.com")
    session = fake.create_checkout_setup_session(
        customer_id=customer["id"],
        success_url="http://recovery.test/update/x/done?session_id={CHECKOUT_SESSION_ID}",
        cancel_url="http://recovery.test/update/x",
        metadata={"card_update_link": "1"},
        idempotency_key="k1",
    )
    return customer, session


def test_stand_in_checkout_completes_the_session_and_returns(
    demo_client: Any, fake_gateway: FakeStripeGateway
) -> None:
    _, session = _card_update_checkout(fake_gateway)
    path = f"/demo/checkout/{session['id']}"
    page = demo_client.get(path).get_data(as_text=True)
    assert "4242 4242 4242 4242" in page and "4000 0000 0000 0002" in page
    assert demo_client.post(path, data={"card": "4242"}).status_code == 400  # no CSRF token
    assert fake_gateway.retrieve_checkout_session(session["id"])["status"] == "open"
    saved = demo_client.post(
        path, data={"csrf_token": csrf_from(page), "card": "4242", "action": "save"}
    )
    assert saved.status_code == 303
    assert saved.headers["Location"] == (
        f"http://recovery.test/update/x/done?session_id={session['id']}"
    )
    done = fake_gateway.retrieve_checkout_session(session["id"])
    assert done["status"] == "complete"
    assert done["setup_intent"]["payment_method"]["card"]["last4"] == "4242"
    assert [e["type"] for e in fake_gateway.events][-1] == "checkout.session.completed"
    assert demo_client.get("/demo/checkout/cs_test_nope").status_code == 404


def test_stand_in_checkout_offers_stripes_expired_test_card(
    demo_client: Any, fake_gateway: FakeStripeGateway
) -> None:
    """A newcomer can try a card declined as expired, as Stripe's 4000 0000 0000 0069 is: the
    card is saved, and charging it is declined with expired_card (a case then asks for another
    card - a new reminder sequence)."""
    customer, session = _card_update_checkout(fake_gateway)
    path = f"/demo/checkout/{session['id']}"
    page = demo_client.get(path).get_data(as_text=True)
    assert "4000 0000 0000 0069 · is declined when charged: expired card" in page
    assert "4000 0000 0000 0002 · is declined when charged" in page
    demo_client.post(path, data={"csrf_token": csrf_from(page), "card": "0069", "action": "save"})
    card = fake_gateway.retrieve_checkout_session(session["id"])["setup_intent"]["payment_method"]
    assert card["card"]["last4"] == "0069"
    invoice = fake_gateway.add_invoice(customer["id"], amount_due=900, currency="usd")
    with pytest.raises(CardDeclined) as declined:
        fake_gateway.pay_invoice(invoice["id"], idempotency_key="p1", payment_method=card["id"])
    assert declined.value.decline_code == "expired_card"


def test_cancel_starter_opens_a_cancel_flow_session(
    demo_runtime: Runtime, demo_client: Any, fake_gateway: FakeStripeGateway
) -> None:
    customer = fake_gateway.add_customer(email="kim@example.com")
    price = fake_gateway.add_price("price_pro_monthly", unit_amount=2900)
    sub = fake_gateway.add_subscription(customer["id"], price_id=price["id"])
    sync_from_stripe(
        demo_runtime.db, fake_gateway, demo_runtime.clock, progress=False, requests_per_second=1e9
    )
    response = demo_client.get(f"/demo/cancel/{sub['id']}")
    assert response.status_code == 303
    assert "/cancel/" in response.headers["Location"]
    assert demo_client.get(response.headers["Location"]).status_code == 200
    with demo_runtime.db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(CancelSession)) == 1
    assert demo_client.get("/demo/cancel/sub_unknown").status_code == 404


# ---- the history --------------------------------------------------------------------------------


def _history(rt: Runtime, fake: FakeStripeGateway, clock: FrozenClock, seed: int) -> Any:
    history = History(rt, fake, clock, customers=16, seed=seed, end=START, days=75)
    return history.run()


def test_history_plays_renewals_failures_and_cancellations_through_the_service(
    demo_runtime: Runtime, fake_gateway: FakeStripeGateway, clock: FrozenClock
) -> None:
    report = _history(demo_runtime, fake_gateway, clock, seed=11)
    assert START <= clock.now() <= START + timedelta(minutes=1)  # the worker's last ticks
    assert report.customers == 16 and report.renewals > 16 and report.failed_renewals >= 1
    with demo_runtime.db.transaction() as session:
        cases = session.scalar(select(func.count()).select_from(RecoveryCase))
        # Every failed renewal opened a case through the real inbox, and nothing is stuck.
        assert cases == report.failed_renewals
        stuck = session.scalar(
            select(func.count()).select_from(StripeEvent).where(StripeEvent.status != "processed")
        )
        assert stuck == 0
        sent = session.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.status == "sent")
        )
        assert sent >= 1
        assert session.scalar(
            select(func.max(OutboxMessage.sent_at)).where(OutboxMessage.status == "sent")
        ) <= START + timedelta(minutes=1)
        sessions = session.scalar(select(func.count()).select_from(CancelSession))
        assert sessions == sum(report.cancel_sessions.values())


def test_history_is_the_same_for_a_seed(sqlite_template: Path, tmp_path: Path) -> None:
    summaries = []
    for run in range(2):
        path = tmp_path / f"run{run}.db"
        shutil.copy(sqlite_template, path)
        clock = FrozenClock(START)
        fake = FakeStripeGateway(clock=clock)
        rt = _runtime(f"sqlite:///{path}", tmp_path, clock, fake)
        report = _history(rt, fake, clock, seed=5)
        rt.db.dispose()
        report.seconds = 0
        summaries.append((report, len(fake.events), fake.events[-1]["created"]))
    assert summaries[0] == summaries[1]
    assert summaries[0][2] <= (START + timedelta(minutes=1)).timestamp()


@pytest.mark.parametrize("seed", [3, 5])
def test_every_history_tells_the_whole_story(
    sqlite_template: Path, tmp_path: Path, seed: int
) -> None:
    """Whatever the dice say: a few customers over five months still show a newcomer a case
    nobody answered (lost), recoveries by our retry and by the card-update link, and a
    reminder by SMS. Before the story floors, `recovery demo --customers 60` ending on
    2026-12-05 had 15 failures and not one lost; on 2026-12-14, no SMS; on 2027-02-13, no
    recovery by a link."""
    path = tmp_path / "history.db"
    shutil.copy(sqlite_template, path)
    clock = FrozenClock(START)
    fake = FakeStripeGateway(clock=clock)
    rt = _runtime(f"sqlite:///{path}", tmp_path, clock, fake)
    History(rt, fake, clock, customers=20, seed=seed, end=START, days=150).run()
    with rt.db.transaction() as session:
        statuses = dict(
            session.execute(
                select(RecoveryCase.status, func.count()).group_by(RecoveryCase.status)
            ).all()
        )
        via = set(session.scalars(select(RecoveryCase.recovered_via)))
        case_sms = session.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.channel == "sms", OutboxMessage.case_id.is_not(None))
        )
    rt.db.dispose()
    assert statuses.get("lost", 0) >= 1, statuses
    assert {"our_retry", "card_update_link"} <= via, (via, statuses)
    assert case_sms >= 1, statuses  # the outbox shows a newcomer a reminder by SMS


def test_every_renewal_reaches_the_service_even_one_the_end_cut_off(
    sqlite_template: Path, tmp_path: Path
) -> None:
    """A renewal's customer.subscription.updated waits for the renewal's charge an hour later
    and goes to the inbox with it (one batch, not two). None may be lost: every period event
    the account emitted is stored, and one still waiting when the history ends goes then, so
    the renewal dates the service shows are Stripe's."""
    path = tmp_path / "history.db"
    shutil.copy(sqlite_template, path)
    clock = FrozenClock(START)
    fake = FakeStripeGateway(clock=clock)
    rt = _runtime(f"sqlite:///{path}", tmp_path, clock, fake)
    history = History(rt, fake, clock, customers=12, seed=4, end=START, days=62)
    history.run()

    def stored() -> set[str]:
        with rt.db.transaction() as session:
            return set(
                session.scalars(
                    select(StripeEvent.id).where(
                        StripeEvent.type == "customer.subscription.updated"
                    )
                )
            )

    emitted = {e["id"] for e in fake.events if e["type"] == "customer.subscription.updated"}
    assert history.report.renewals > 0 and emitted <= stored()
    # A renewal whose charge the end cut off: held, then sent when the history ends.
    sub = fake.store["subscription"][history.subscribers[0].subscription_id]
    event = fake.add_event("customer.subscription.updated", sub)
    history.hold(event["id"])
    history.deliver()
    assert event["id"] not in stored()
    history.release_all()
    history.deliver()
    assert event["id"] in stored()
    rt.db.dispose()
