"""Starting cancel sessions (API and signed links), listing them, and the business webhook."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from recovery.adapters.clock import FrozenClock
from recovery.domain.cancel_links import sign_link
from recovery.models import CancelSession
from recovery.worker import Worker
from tests.conftest import START
from tests.support.cancel_flow import (
    LINK_SECRET,
    WEBHOOK_SECRET,
    Flow,
    FlowClient,
    auth,
    make_flow,
    seed,
)


@pytest.fixture
def flow(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any
) -> Iterator[Flow]:
    made = make_flow(database_url, tmp_path, clock, fake_gateway)
    yield made
    made.runtime.db.dispose()


def create(flow: Flow, **changes: Any) -> Any:
    body = {
        "customer": "cus_ada",
        "subscription": "sub_ada",
        "return_url": "https://shop.example/account",
        **changes,
    }
    body = {k: v for k, v in body.items() if v is not None}
    return flow.client.post("/api/v1/cancel-sessions", json=body, headers=auth())


def test_create_answers_id_url_and_expiry(flow: Flow) -> None:
    response = create(flow, locale="pt-BR", metadata={"account": "42"})
    assert response.status_code == 201
    data = response.get_json()
    assert set(data) == {"id", "url", "expires_at"}
    assert data["url"].startswith("http://recovery.test/cancel/")
    assert len(data["url"].rsplit("/", 1)[1]) >= 43  # >= 128 bits, here 256
    assert data["expires_at"] == (START + timedelta(minutes=60)).isoformat()
    one = flow.client.get(f"/api/v1/cancel-sessions/{data['id']}", headers=auth()).get_json()
    assert (one["locale"], one["metadata"], one["variant"]) == (
        "pt-BR",
        {"account": "42"},
        "standard",
    )
    assert one["monthly_revenue"] == {
        "currency": "usd",
        "before": 2000,
        "after": None,
        "kept": None,
        "lost": None,
    }


def test_the_api_needs_a_key(flow: Flow) -> None:
    response = flow.client.post("/api/v1/cancel-sessions", json={})
    assert response.status_code == 401
    assert flow.client.get("/api/v1/cancel-sessions").status_code == 401


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        ({"customer": None}, 400),
        ({"customer": "ada"}, 400),
        ({"subscription": 12}, 400),
        ({"return_url": "javascript:alert(1)"}, 400),
        ({"return_url": "https://evil.example/"}, 400),  # not in return_url_hosts
        ({"return_url": "/relative"}, 400),
        ({"locale": "../../etc"}, 400),
        ({"metadata": {"a": 1}}, 400),
        ({"metadata": ["x"]}, 400),
        ({"coupon": "FREE"}, 400),
        ({"subscription": "sub_nobody"}, 404),
    ],
)
def test_create_rejects_bad_input(flow: Flow, changes: dict[str, Any], status: int) -> None:
    response = create(flow, **changes)
    assert response.status_code == status
    assert "error" in response.get_json()
    with flow.runtime.db.transaction() as s:
        assert s.query(CancelSession).count() == 0


def test_create_rejects_a_body_that_is_not_json(flow: Flow) -> None:
    response = flow.client.post("/api/v1/cancel-sessions", data="customer=cus_ada", headers=auth())
    assert response.status_code == 400


def test_a_subscription_of_another_customer_is_not_found(flow: Flow) -> None:
    seed(flow.gateway, customer="cus_bob", subscription="sub_bob")
    assert create(flow, subscription="sub_bob").status_code == 404


def test_stripe_down_at_start_uses_the_mirror_or_answers_503(flow: Flow) -> None:
    flow.gateway.outage(2, "server_error")
    assert create(flow).status_code == 503  # never mirrored: nothing to go on
    assert create(flow).status_code == 201  # Stripe is back
    flow.gateway.outage(2, "server_error")
    assert create(flow).status_code == 201  # mirrored by the previous call


def test_list_filters_by_time_and_outcome_and_pages(flow: Flow) -> None:
    def start(name: str) -> tuple[FlowClient, dict[str, Any]]:
        seeded = seed(flow.gateway, customer=f"cus_{name}", subscription=f"sub_{name}")
        page, data = FlowClient.start(flow.client, seeded)
        page.get()
        return page, data

    cancelled, c = start("cy")
    cancelled.post("/cancel")
    flow.clock.advance(timedelta(minutes=1))
    saved, s = start("sam")
    saved.post("", {"reason": "temporary"})
    saved.post("/offer", {"offer": "pause", "months": "1"})
    flow.clock.advance(timedelta(minutes=1))
    _idle, i = start("ida")
    flow.clock.advance(timedelta(minutes=61))  # the idle one is now abandoned (no worker yet)

    def ids(query: str) -> list[str]:
        response = flow.client.get(f"/api/v1/cancel-sessions?{query}", headers=auth())
        assert response.status_code == 200, response.get_json()
        return [row["id"] for row in response.get_json()["data"]]

    assert ids("") == [i["id"], s["id"], c["id"]]
    assert ids("outcome=cancelled") == [c["id"]]
    assert ids("outcome=saved_by_pause") == ids("outcome=saved") == [s["id"]]
    assert ids("outcome=abandoned") == [i["id"]]
    assert ids("since=2026-11-02T09:00:30Z") == [i["id"], s["id"]]
    assert ids("since=2026-11-02T09:00:30+00:00") == [i["id"], s["id"]]  # "+" sent unencoded
    assert ids(f"since={int(START.timestamp()) + 90}") == [i["id"]]
    assert ids("limit=1") == [i["id"]]
    assert ids(f"limit=1&starting_after={i['id']}") == [s["id"]]
    rows = flow.client.get("/api/v1/cancel-sessions?outcome=cancelled", headers=auth()).get_json()
    (row,) = rows["data"]
    assert row["monthly_revenue"] == {
        "currency": "usd",
        "before": 2000,
        "after": 0,
        "kept": 0,
        "lost": 2000,
    }
    assert row["stripe"] == {"status": "applied", "error": None}
    for bad in ("outcome=won", "since=yesterday", "limit=0", "starting_after=cxs_nope"):
        assert flow.client.get(f"/api/v1/cancel-sessions?{bad}", headers=auth()).status_code == 400
    assert flow.client.get("/api/v1/cancel-sessions/cxs_nope", headers=auth()).status_code == 404


# ---- signed links -------------------------------------------------------------------------------


def link_url(flow: Flow, *, age: int = 0, secret: str = LINK_SECRET, **changes: str) -> str:
    ts = int(flow.clock.now().timestamp()) - age
    params = {
        "customer": "cus_ada",
        "subscription": "sub_ada",
        "timestamp": str(ts),
        "return_url": "https://shop.example/account",
    }
    params["signature"] = sign_link(
        secret, "cus_ada", "sub_ada", ts, "https://shop.example/account"
    )
    params.update(changes)
    return "/cancel/start?" + urlencode(params)


def test_a_signed_link_opens_one_session_however_often_it_is_opened(flow: Flow) -> None:
    url = link_url(flow, locale="fr")
    first = flow.client.get(url)
    assert first.status_code == 303
    again = flow.client.get(url)
    assert again.headers["Location"] == first.headers["Location"]
    page = flow.client.get(first.headers["Location"])
    assert page.status_code == 200 and '<html lang="fr"' in page.get_data(as_text=True)
    with flow.runtime.db.transaction() as s:
        (row,) = s.query(CancelSession).all()
        assert (row.source, row.locale) == ("link", "fr")


@pytest.mark.parametrize(
    "changes",
    [
        {"customer": "cus_bob"},
        {"return_url": "https://evil.example/"},
        {"signature": "0" * 64},
        {"timestamp": "12"},
        {"secret": "another-secret-0123456789"},
    ],
)
def test_a_tampered_link_is_forbidden(flow: Flow, changes: dict[str, str]) -> None:
    response = flow.client.get(link_url(flow, **changes))
    assert response.status_code == 403
    assert "This link isn't valid" in response.get_data(as_text=True)


def test_an_old_link_gets_a_friendly_expired_page(flow: Flow) -> None:
    response = flow.client.get(link_url(flow, age=61 * 60))
    assert response.status_code == 410
    assert "This link has expired" in response.get_data(as_text=True)


def test_links_are_refused_when_no_secret_is_set(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any
) -> None:
    made = make_flow(
        database_url, tmp_path, clock, fake_gateway, env={"RECOVERY_CANCEL_LINK_SECRET": ""}
    )
    try:
        assert made.client.get(link_url(made)).status_code == 403
    finally:
        made.runtime.db.dispose()


# ---- the business webhook ---------------------------------------------------------------------


class Receiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Receive)
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.status = 200


class _Receive(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((dict(self.headers), body))
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_each_outcome_is_sent_signed_to_the_business(
    database_url: str,
    tmp_path: Path,
    clock: FrozenClock,
    fake_gateway: Any,
    receiver: Receiver,
) -> None:
    env = {
        "RECOVERY_CANCEL_WEBHOOK_URL": f"http://127.0.0.1:{receiver.server_address[1]}/hook",
        "RECOVERY_CANCEL_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    made = make_flow(database_url, tmp_path, clock, fake_gateway, env=env)
    try:
        page, data = made.start()
        page.get()
        page.post("/cancel", {"reason": "too_expensive"})
        receiver.status = 500  # the business is down: retried later
        worker = Worker(made.runtime)
        worker.run_until_idle()
        assert len(receiver.received) == 1
        receiver.status = 200
        clock.advance(timedelta(minutes=5))
        worker.run_until_idle()
        assert len(receiver.received) == 2
        headers, body = receiver.received[-1]
        t, v1 = (part.split("=", 1)[1] for part in headers["Recovery-Signature"].split(","))
        expected = hmac.new(WEBHOOK_SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256)
        assert hmac.compare_digest(v1, expected.hexdigest())
        event = json.loads(body)
        assert event["type"] == "cancel_session.cancelled"
        assert event["data"]["id"] == data["id"] and event["data"]["reason"] == "too_expensive"
        clock.advance(timedelta(days=1))
        worker.run_until_idle()
        assert len(receiver.received) == 2  # once per outcome
    finally:
        made.runtime.db.dispose()
