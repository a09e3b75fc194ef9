"""The web layer's shape: views never open a database session (services do, and hand back plain
data); the JSON API is one blueprint whose key check covers every route but its description;
security headers and CSRF come from one place (recovery/web/security.py) with each audience's
own values.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recovery.adapters.clock import FrozenClock
from recovery.app import create_app
from recovery.runtime import Runtime
from recovery.services.registry import build_runtime
from tests.conftest import make_settings

WEB = Path(__file__).resolve().parents[1] / "recovery" / "web"
# What opening or driving a unit of work looks like: Database.transaction()/reading(), or
# reaching past it to the engine or a sessionmaker.
SESSION_ATTRIBUTES = {"transaction", "reading", "engine", "sessionmaker", "read_sessionmaker"}
BOGUS_TOKEN = "A" * 43


@pytest.fixture
def web(sqlite_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any) -> Iterator[Any]:
    settings = make_settings(sqlite_url, tmp_path, extra={"RECOVERY_DEMO": "1"})
    rt: Runtime = build_runtime(settings, clock=clock, gateway=fake_gateway)
    app = create_app(runtime=rt, config={"RATELIMIT_ENABLED": False})
    yield app
    rt.db.dispose()


def test_views_open_no_database_session() -> None:
    offenders = []
    for path in sorted(WEB.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in SESSION_ATTRIBUTES:
                offenders.append(f"{path.relative_to(WEB.parent.parent)}:{node.lineno} {node.attr}")
    assert offenders == []


def test_the_session_check_sees_a_session_opened_in_a_view() -> None:
    """The check above would pass on code it cannot read: show it flags a real one."""
    view = "def page():\n    with runtime().db.reading() as session:\n        return 1\n"
    found = [
        n.attr
        for n in ast.walk(ast.parse(view))
        if isinstance(n, ast.Attribute) and n.attr in SESSION_ATTRIBUTES
    ]
    assert found == ["reading"]


def _example(rule: str) -> str:
    return re.sub(r"<(?:int:)?([a-z_]+)>", lambda m: "1" if "int:" in m.group(0) else "x_1", rule)


def test_the_api_is_one_blueprint_that_asks_every_caller_for_a_key(web: Any) -> None:
    client = web.test_client()
    routes = [r for r in web.url_map.iter_rules() if r.rule.startswith("/api/v1/")]
    assert {r.endpoint.split(".")[0] for r in routes} == {"api"}
    assert len(routes) >= 8  # events, customer, cases x2, metrics, cancel sessions x3, openapi
    for rule in routes:
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            path = _example(rule.rule)
            response = client.open(path, method=method, headers={"Authorization": "Bearer no"})
            if rule.rule == "/api/v1/openapi.json":
                assert response.status_code == 200, path  # public: the API's own description
            else:
                assert response.status_code == 401, f"{method} {path}"
                assert response.json == {
                    "error": {"code": "unauthorized", "message": "unknown API key"}
                }


SUBSCRIBER = {
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
HEADERS = {
    # The card-update form is redirected to Stripe Checkout: form-action allows it.
    f"/update/{BOGUS_TOKEN}": {
        **SUBSCRIBER,
        "X-Robots-Tag": "noindex, nofollow",
        "Content-Security-Policy": PAGE_CSP + " https://checkout.stripe.com",
    },
    f"/cancel/{BOGUS_TOKEN}": {**SUBSCRIBER, "Content-Security-Policy": PAGE_CSP},
    "/login": {
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": (
            "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "script-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
        ),
    },
    "/demo/checkout/cs_test_1": {
        "Cache-Control": "no-store",
        "X-Robots-Tag": "noindex, nofollow",
        "Referrer-Policy": "no-referrer",
    },
}


@pytest.mark.parametrize("path", sorted(HEADERS))
def test_each_audience_gets_its_own_headers_on_pages_and_refusals(web: Any, path: str) -> None:
    client = web.test_client()
    for response in (client.get(path), client.post(path, data={"csrf_token": "forged"})):
        for name, value in HEADERS[path].items():
            assert response.headers.get(name) == value, (path, response.status_code, name)


CSRF_REFUSED = {
    f"/update/{BOGUS_TOKEN}": "Please try again",
    f"/cancel/{BOGUS_TOKEN}": "try again",
    "/logout": "The form had expired",
    "/demo/checkout/cs_test_1": "the form expired",
}


@pytest.mark.parametrize("path", sorted(CSRF_REFUSED))
def test_a_post_without_a_valid_csrf_token_is_refused_before_any_view(web: Any, path: str) -> None:
    client = web.test_client()
    for data in ({}, {"csrf_token": "forged"}):
        response = client.post(path, data=data)
        assert response.status_code == 400, path
        assert CSRF_REFUSED[path].lower() in response.get_data(as_text=True).lower(), path
