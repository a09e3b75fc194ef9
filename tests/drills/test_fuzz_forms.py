"""Fuzzed form posts (issue 7, drill 4) to the subscriber pages: the cancel flow's steps and the
card-update page. Random fields, values and encodings (form, multipart, JSON, raw bytes in
any charset, with or without the CSRF token): the answer is a 4xx, or the normal 2xx/3xx when
the input happens to be valid - never a 500. A refused post writes nothing: every row of every
table is the same before and after it (not only the counts).

Deterministic (derandomize, no example database); RECOVERY_DRILL_FORM_EXAMPLES per page
(default 120).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from recovery.adapters.clock import FrozenClock
from recovery.adapters.stripe_fake import FakeStripeGateway
from recovery.app import create_app
from recovery.db import Base
from recovery.runtime import Runtime
from tests.support.cancel_flow import Flow, FlowClient, make_flow, seed
from tests.support.card_update import Linked, csrf_from, failed_renewal_with_link
from tests.support.scenario import Story

EXAMPLES = int(os.environ.get("RECOVERY_DRILL_FORM_EXAMPLES", "120"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)

# Field names the pages read, and some they do not.
FIELDS = ["csrf_token", "reason", "text", "offer", "months", "comment", "return_url", "x"]
# Values: what the forms offer, edges, and hostile text.
VALUES = st.one_of(
    st.sampled_from(
        ["too_expensive", "not_using", "other", "pause", "downgrade", "discount", "1", "3"]
    ),
    st.sampled_from(["", "0", "-1", "99999999999999999999", "1e9", "NaN", "null", "[]"]),
    st.text(max_size=60),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=20).map(
        lambda s: s + "\x00\r\n\u202e"
    ),
    st.just("A" * 5000),
)
CONTENT_TYPES = [
    "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=latin-1",
    "multipart/form-data; boundary=xyz",
    "multipart/form-data",
    "application/json",
    "text/plain",
    "application/octet-stream",
    "",
]


@dataclass(frozen=True)
class Post:
    form: dict[str, str] | None  # a form the client encodes, or None: `raw` as it is
    raw: bytes
    content_type: str
    csrf: str  # "valid", "missing" or "forged"


posts = st.builds(
    Post,
    form=st.one_of(st.none(), st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=5)),
    raw=st.one_of(
        st.binary(max_size=300),
        st.sampled_from(
            [
                b"reason=too_expensive&reason=other&csrf_token=",
                b"--xyz\r\nContent-Disposition: form-data; name=reason\r\n\r\nother\r\n--xyz--",
                b'{"reason": "other", "csrf_token": null}',
                b"reason=%ff%fe%00&text=%E2%80%AE",
                b"\xff\xfe\x00r\x00e\x00a",
            ]
        ),
    ),
    content_type=st.sampled_from(CONTENT_TYPES),
    csrf=st.sampled_from(["valid", "missing", "forged"]),
)


def table_digest(rt: Runtime) -> dict[str, str]:
    """Every table's rows, hashed: equal digests mean nothing was written."""
    out = {}
    with rt.db.transaction() as session:
        for table in Base.metadata.sorted_tables:
            rows = session.execute(select(table)).all()
            text = "\n".join(sorted(repr(tuple(r)) for r in rows))
            out[table.name] = f"{len(rows)}:{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    return out


def send(client: Any, path: str, post: Post, token: str) -> Any:
    form = dict(post.form) if post.form is not None else None
    if form is not None:
        form.pop("csrf_token", None)
        if post.csrf == "valid":
            form["csrf_token"] = token
        elif post.csrf == "forged":
            form["csrf_token"] = token[:-4] + "AAAA"
        return client.post(path, data=form)
    return client.post(path, data=post.raw, content_type=post.content_type or None)


def _changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return [name for name in before if before[name] != after[name]]


# ---- the cancel flow ----------------------------------------------------------------------------


@pytest.fixture
def flow(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: FakeStripeGateway
) -> Iterator[Flow]:
    made = make_flow(database_url, tmp_path, clock, fake_gateway)
    yield made
    made.runtime.db.dispose()


def test_fuzzed_posts_to_the_cancel_flow_are_4xx_and_write_nothing(flow: Flow) -> None:
    state: dict[str, Any] = {}
    outcomes: dict[int, int] = {}

    def fresh() -> None:
        # A subscriber of their own: a valid cancel ends the subscription it was about.
        n = state["n"] = state.get("n", 0) + 1
        seeded = seed(flow.gateway, customer=f"cus_fuzz{n}", subscription=f"sub_fuzz{n}")
        client, _ = FlowClient.start(flow.client, seeded)
        client.get()  # the survey page: its CSRF token
        state["client"] = client

    fresh()

    @FUZZ
    @given(post=posts, step=st.sampled_from(["", "/offer", "/cancel", "/keep"]))
    def check(post: Post, step: str) -> None:
        client: FlowClient = state["client"]
        before = table_digest(flow.runtime)
        response = send(client.client, client.path + step, post, client.csrf())
        status = response.status_code
        outcomes[status] = outcomes.get(status, 0) + 1
        assert status < 500, (status, post, step)
        after = table_digest(flow.runtime)
        if status >= 400:
            assert _changed(before, after) == [], (status, post, step)
        elif _changed(before, after):
            fresh()  # a valid post moved the session on: the next example gets a new one

    check()
    print(f"cancel flow posts by status: {dict(sorted(outcomes.items()))}")
    assert any(400 <= s < 500 for s in outcomes)


# ---- the card-update page -----------------------------------------------------------------------


@pytest.fixture
def card_page(
    runtime: Runtime, fake_gateway: FakeStripeGateway, clock: FrozenClock
) -> tuple[Any, Linked]:
    story = Story(runtime, fake_gateway, clock)
    linked = failed_renewal_with_link(story, runtime)
    # The page's rate limits would answer 429 after a few dozen posts; they have their own test.
    app = create_app(runtime=runtime, config={"RATELIMIT_ENABLED": False})
    return app.test_client(), linked


def test_fuzzed_posts_to_the_card_update_page_are_4xx_and_write_nothing(
    runtime: Runtime, card_page: tuple[Any, Linked]
) -> None:
    client, linked = card_page
    path = f"/update/{linked.token}"
    token = csrf_from(client.get(path).get_data(as_text=True))
    outcomes: dict[int, int] = {}

    @FUZZ
    @given(post=posts, suffix=st.sampled_from(["", "", "/done", "x", "/../" + linked.token]))
    def check(post: Post, suffix: str) -> None:
        before = table_digest(runtime)
        response = send(client, path + suffix, post, token)
        status = response.status_code
        outcomes[status] = outcomes.get(status, 0) + 1
        assert status < 500, (status, post, suffix)
        if status >= 400:
            assert _changed(before, table_digest(runtime)) == [], (status, post, suffix)

    check()
    print(f"card-update posts by status: {dict(sorted(outcomes.items()))}")
    assert any(400 <= s < 500 for s in outcomes) and any(s == 303 for s in outcomes)
