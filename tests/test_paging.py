"""Keyset paging (services/reporting/paging.py), the one helper behind every list: the API's
events, cases and cancel sessions, the dashboard's cases and cancel sessions, the demo outbox.

Walking the pages must show every row exactly once, newest first, even when many rows share a
timestamp (a burst of webhooks in one instant), on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from recovery.models import EventStatus, StripeEvent
from recovery.runtime import Runtime
from recovery.services.reporting import paging
from tests.conftest import API_KEY, START

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def _events(runtime: Runtime) -> list[str]:
    """Seven events: four received in the same instant, three at other times. Returns their
    ids in the order the API must list them (newest first, ties by id, highest first)."""
    received = [START, START, START, START, START - timedelta(seconds=1), START + timedelta(1)]
    received.append(START - timedelta(days=1))
    ids = [f"evt_{n}" for n in ("b", "d", "a", "c", "e", "f", "g")]
    with runtime.db.transaction() as session:
        for event_id, at in zip(ids, received, strict=True):
            session.add(
                StripeEvent(
                    id=event_id,
                    type="customer.created",
                    created=1_700_000_000,
                    livemode=False,
                    payload="{}",
                    received_at=at,
                    status=EventStatus.PROCESSED,
                    attempts=1,
                    next_attempt_at=at,
                )
            )
    ordered = sorted(zip(received, ids, strict=True), reverse=True)
    return [event_id for _, event_id in ordered]


def test_paging_through_events_shows_each_once_even_when_they_share_an_instant(
    runtime: Runtime, client: Any
) -> None:
    expected = _events(runtime)
    assert expected[:5] == ["evt_f", "evt_d", "evt_c", "evt_b", "evt_a"]
    seen: list[str] = []
    query = "/api/v1/events?limit=2"
    pages = 0
    while True:
        body = client.get(query, headers=AUTH).json
        pages += 1
        seen += [e["id"] for e in body["data"]]
        if not body["has_more"]:
            break
        query = f"/api/v1/events?limit=2&starting_after={seen[-1]}"
    assert seen == expected
    assert pages == 4  # 2 + 2 + 2 + 1: has_more is false on the last page, not one page later


def test_exactly_a_full_last_page_says_there_is_no_more(runtime: Runtime) -> None:
    expected = _events(runtime)
    keys = (StripeEvent.received_at, StripeEvent.id)
    with runtime.db.reading() as session:
        after = paging.anchor_of(session, keys, expected[0])
        page = paging.newest_first(
            session,
            select(StripeEvent),
            keys,
            after=after,
            limit=6,
            row=lambda r: r[0].id,
        )
    assert page.rows == expected[1:] and not page.has_more


def test_an_unknown_anchor_is_the_callers_mistake(runtime: Runtime, client: Any) -> None:
    _events(runtime)
    with runtime.db.reading() as session, pytest.raises(paging.UnknownAnchor):
        paging.anchor_of(session, (StripeEvent.received_at, StripeEvent.id), "evt_nope")
    for path in (
        "/api/v1/events?starting_after=evt_nope",
        "/api/v1/cases?starting_after=12",
        "/api/v1/cases?starting_after=99999999999999999999999",  # past the id column
        "/api/v1/cases?starting_after=case_1",
        "/api/v1/cancel-sessions?starting_after=cs_nope",
    ):
        response = client.get(path, headers=AUTH)
        assert response.status_code == 400, path
        assert "starting_after is not a known" in response.json["error"]["message"]


def test_a_cursor_carries_its_keys_and_a_forged_one_is_refused() -> None:
    at = START + timedelta(microseconds=123)
    assert paging.decode_cursor(paging.encode_cursor(at, 42), int) == (at, 42)
    assert paging.decode_cursor(paging.encode_cursor(at, "cxs_1:2"), str) == (at, "cxs_1:2")
    for forged in ("", "not-base64!", paging.encode_cursor(at, "x"), "MTIzOg"):
        with pytest.raises(paging.BadCursor):
            paging.decode_cursor(forged, int)
