"""What the cancel flow refuses: unknown or altered sessions, forged or missing CSRF tokens,
garbage form values and oversized posts - each a 4xx page that writes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recovery.adapters.clock import FrozenClock
from recovery.models import CancelSession
from tests.support.cancel_flow import Flow, due, make_flow, session_row


@pytest.fixture
def flow(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any
) -> Iterator[Flow]:
    made = make_flow(database_url, tmp_path, clock, fake_gateway)
    yield made
    made.runtime.db.dispose()


@pytest.mark.parametrize(
    "path",
    ["/cancel/" + "A" * 43, "/cancel/short", "/cancel/" + "A" * 43 + "/offer", "/cancel/%00x"],
)
def test_an_unknown_or_tampered_session_is_forbidden(flow: Flow, path: str) -> None:
    flow.start()
    response = flow.client.get(path)
    assert response.status_code == 403
    assert "This link isn't valid" in response.get_data(as_text=True)


def test_a_tampered_token_is_forbidden(flow: Flow) -> None:
    page, _ = flow.start()
    page.get()
    token = page.path.rsplit("/", 1)[-1]
    page.path = page.path[: -len(token)] + ("B" if token[0] != "B" else "C") + token[1:]
    assert page.get().status_code == 403


def rows_unchanged(flow: Flow, session_id: str) -> None:
    row = session_row(flow, session_id)
    assert (row.reason, row.reason_text, row.outcome, row.survey_at) == (None, None, None, None)
    assert flow.writes() == []
    assert [a.kind for a in due(flow)] == ["cancel_flow.expire"]


@pytest.mark.parametrize(
    ("suffix", "form", "status"),
    [
        ("", {"reason": "<script>alert(1)</script>"}, 422),
        ("", {"reason": "too_expensive", "text": "x" * 2001}, 422),
        ("/cancel", {"reason": "nope"}, 422),
        ("/cancel", {"text": "y" * 10_000}, 422),
        ("/offer", {"offer": "pause", "months": "1"}, 422),  # no offer was shown yet
        ("/offer", {"offer": "gift"}, 422),
        ("/keep", {"csrf_token": ""}, 400),
        ("/cancel", {"csrf_token": "forged"}, 400),
    ],
)
def test_garbage_posts_get_4xx_and_write_nothing(
    flow: Flow, suffix: str, form: dict[str, str], status: int
) -> None:
    page, started = flow.start()
    page.get()
    response = page.post(suffix, form)
    assert response.status_code == status
    assert "<h1>" in page.text()  # a page, not a stack trace
    rows_unchanged(flow, started["id"])


def test_bad_pause_lengths_are_refused(flow: Flow) -> None:
    page, started = flow.start()
    page.get()
    page.post("", {"reason": "temporary"})
    page.get("/offer")
    for months in ("7", "", "-1", "1; DROP TABLE", None):
        form = {"offer": "pause", **({"months": months} if months is not None else {})}
        assert page.post("/offer", form).status_code == 422
        assert "Please choose how long to pause." in page.text()
    assert flow.writes() == []
    assert session_row(flow, started["id"]).outcome is None


def test_an_oversized_post_is_refused(flow: Flow) -> None:
    page, _ = flow.start()
    page.get()
    response = page.post("/cancel", {"text": "z" * (2 * 1024 * 1024)})
    assert response.status_code == 413
    assert flow.writes() == []


def test_pages_send_protective_headers(flow: Flow) -> None:
    page, _ = flow.start()
    response = page.get()
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "form-action 'self' https://shop.example" in csp
    assert "<script" not in page.text()


def test_session_rows_hold_no_usable_token(flow: Flow) -> None:
    page, started = flow.start()
    token = page.path.rsplit("/", 1)[-1]
    assert len(token) >= 43  # 256 random bits
    with flow.runtime.db.transaction() as s:
        row = s.get(CancelSession, started["id"])
        assert row is not None and token not in (row.token_hash, row.id)


def test_control_characters_in_the_free_text_are_dropped_not_a_500(flow: Flow) -> None:
    page, started = flow.start()
    page.get()
    response = page.post("/cancel", {"reason": "other", "text": "nul\x00 here\x07\nbye"})
    assert response.status_code == 303
    assert session_row(flow, started["id"]).reason_text == "nul here\nbye"
    (write,) = flow.writes()
    assert write.params["comment"] == "nul here\nbye"


def test_a_return_url_with_control_characters_is_refused(flow: Flow) -> None:
    from tests.support.cancel_flow import auth

    body = {
        "customer": "cus_ada",
        "subscription": "sub_ada",
        "return_url": "https://shop.example/\x00",
    }
    response = flow.client.post("/api/v1/cancel-sessions", json=body, headers=auth())
    assert response.status_code == 400
