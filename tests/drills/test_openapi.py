"""The JSON API against its own description (issue 7, drill 4): GET /api/v1/openapi.json names
every /api/v1 route, and schemathesis - driving the WSGI app in-process with inputs generated
from the document - finds no 500 and no answer that breaks the document (status codes, content
type, body schemas, the `{"error": {"code", "message"}}` shape).

Left out: schemathesis's "schema-valid request rejected" check - an unknown `starting_after` id
or customer is a valid string the schema cannot tell from a known one, and 400/404 is right.

Deterministic (derandomize, no example database) so CI sees the same inputs every run; the
number of examples per operation is RECOVERY_DRILL_API_EXAMPLES (default 60).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import positive_data_acceptance
from sqlalchemy import select

from recovery.adapters.clock import FrozenClock
from recovery.adapters.stripe_fake import FakeStripeGateway
from recovery.models import AccountContact, CancelSession, RecoveryCase
from tests.conftest import API_KEY
from tests.support.cancel_flow import Flow, make_flow
from tests.support.scenario import Story

EXAMPLES = int(os.environ.get("RECOVERY_DRILL_API_EXAMPLES", "60"))
AUTH = {"Authorization": f"Bearer {API_KEY}"}
START_BODY = {
    "customer": "cus_ada",
    "subscription": "sub_ada",
    "return_url": "https://shop.example/account",
}


@pytest.fixture
def flow(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: FakeStripeGateway
) -> Iterator[Flow]:
    """An app with data behind every route: a case (customer, invoice, events), a cancel
    session, so generated requests reach the 200 paths too, not only 400/404."""
    made = make_flow(database_url, tmp_path, clock, fake_gateway)
    story = Story(made.runtime, fake_gateway, clock)
    billing = story.customer()
    story.stripe_charges(billing.invoice, decline_code="insufficient_funds")
    made.start()
    yield made
    made.runtime.db.dispose()


def _flask_rule_to_openapi(rule: str) -> str:
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)


def test_every_api_route_is_in_the_document(flow: Flow) -> None:
    response = flow.client.get("/api/v1/openapi.json")  # public: no API key
    assert response.status_code == 200
    paths = response.get_json()["paths"]
    routes: dict[str, set[str]] = {}
    for rule in flow.app.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            methods = {m.lower() for m in rule.methods or ()} - {"head", "options"}
            routes.setdefault(_flask_rule_to_openapi(rule.rule), set()).update(methods)
    assert routes, "no /api routes found"
    for path, methods in routes.items():
        assert path in paths, f"{path} is not described"
        assert methods <= set(paths[path]), (path, methods, set(paths[path]))
    assert set(paths) == set(routes)  # and nothing described that does not exist


@pytest.mark.slow
def test_api_answers_conform_to_the_document_and_never_500(flow: Flow) -> None:
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", flow.app)
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results)  # the document parses: no invalid operation
    assert len(operations) >= 8  # every route (the document itself may be left out)
    statuses: dict[str, set[int]] = {}

    for operation in operations:

        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            response = case.call_and_validate(
                headers=AUTH, excluded_checks=[positive_data_acceptance]
            )
            statuses.setdefault(case.operation.label, set()).add(response.status_code)

        check()

    # The known objects, through the same checks: ids the generator cannot guess.
    by_label = {op.label: op for op in operations}
    with flow.runtime.db.transaction() as session:
        case_id, customer = session.execute(select(RecoveryCase.id, RecoveryCase.customer_id)).one()
        session_id = session.scalars(select(CancelSession.id)).first()
    known: list[tuple[str, Any]] = [
        ("GET /api/v1/cases/{case_id}", {"path_parameters": {"case_id": case_id}}),
        ("GET /api/v1/customers/{customer_id}", {"path_parameters": {"customer_id": customer}}),
        (
            "GET /api/v1/customers/{customer_id}/billing-status",
            {"path_parameters": {"customer_id": customer}, "query": {"locale": "de"}},
        ),
        (
            "GET /api/v1/cancel-sessions/{session_id}",
            {"path_parameters": {"session_id": session_id}},
        ),
        ("GET /api/v1/cases", {"query": {"customer": customer, "status": "retrying"}}),
        (
            "POST /api/v1/customers/{customer_id}/contacts",
            {
                "path_parameters": {"customer_id": customer},
                "body": {"role": "billing", "email": "ap@example.com", "locale": "de"},
            },
        ),
        (
            "GET /api/v1/customers/{customer_id}/contacts",
            {"path_parameters": {"customer_id": customer}},
        ),
        (
            "POST /api/v1/cancel-sessions",
            {"body": {**START_BODY, "locale": "de", "metadata": {"account": "42"}}},
        ),
    ]
    for label, parts in known:
        response = by_label[label].Case(**parts).call_and_validate(headers=AUTH)
        statuses.setdefault(label, set()).add(response.status_code)
    with flow.runtime.db.transaction() as session:
        contact_id = session.scalars(select(AccountContact.id)).one()
    label = "DELETE /api/v1/customers/{customer_id}/contacts/{contact_id}"
    path = {"customer_id": customer, "contact_id": contact_id}
    response = by_label[label].Case(path_parameters=path).call_and_validate(headers=AUTH)
    statuses.setdefault(label, set()).add(response.status_code)

    print({label: sorted(codes) for label, codes in statuses.items()})
    reached_ok = {label for label, codes in statuses.items() if codes & {200, 201}}
    assert reached_ok >= set(by_label) - {"GET /api/v1/openapi.json"}, statuses


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/cancel-sessions?starting_after=a%00b",
        "/api/v1/cancel-sessions/a%00b",
        "/api/v1/events?starting_after=evt_%00",
        "/api/v1/cases?customer=cus_%00",
        "/api/v1/customers/cus_%00",
        "/api/v1/cases/99999999999999999999",  # beyond the id column: 404, not 503
    ],
)
def test_a_nul_character_in_an_id_is_a_400_not_a_database_outage(flow: Flow, path: str) -> None:
    """Found by schemathesis: PostgreSQL refuses NUL in text, and that DataError answered 503
    ("database unavailable, retry") - a retry can never help, so it is the caller's 400."""
    response = flow.client.get(path, headers=AUTH)
    assert response.status_code in (200, 400, 404), response.get_data(as_text=True)
    if response.status_code != 200:  # SQLite stores NUL: an empty page or no such id
        assert set(response.get_json()["error"]) == {"code", "message"}
