"""Stripe's account-level reads on loopback, for `recovery doctor` through the real SDK: the
key is checked (401 for another), a restricted key's missing permissions answer 403 before any
look-up (as Stripe's do), unknown objects 404 `resource_missing`, and the webhook endpoints and
events lists answer from what the test configured. Neither localstripe nor the in-repo fake
serves webhook endpoints over HTTP."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass
class StripeAccount:
    key: str
    endpoints: list[dict[str, Any]] = field(default_factory=list)
    forbidden: set[str] = field(default_factory=set)  # path collections, e.g. "setup_intents"
    paths: list[str] = field(default_factory=list)
    url: str = ""


def endpoint(url: str, events: list[str], **fields: Any) -> dict[str, Any]:
    """A webhook endpoint as Stripe lists it."""
    return {
        "id": fields.pop("id", "we_1Doctor"),
        "object": "webhook_endpoint",
        "url": url,
        "enabled_events": events,
        "api_version": fields.pop("api_version", None),
        "status": fields.pop("status", "enabled"),
        "livemode": False,
        **fields,
    }


def _error(status: int, kind: str, message: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message, "code": code}}


def _handler(account: StripeAccount) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            account.paths.append(path)
            if self.headers.get("Authorization") != f"Bearer {account.key}":
                msg = "Invalid API Key provided"
                return self._reply(401, _error(401, "invalid_request_error", msg))
            parts = [p for p in path.split("/") if p][1:]  # without "v1"
            collection = parts[1] if parts[0] == "checkout" else parts[0]
            if collection in account.forbidden:
                msg = "The provided key does not have the required permissions for this endpoint"
                return self._reply(403, _error(403, "invalid_request_error", msg))
            if path == "/v1/webhook_endpoints":
                page = {"object": "list", "data": account.endpoints, "has_more": False}
                return self._reply(200, {**page, "url": path})
            if path == "/v1/events":
                return self._reply(200, {"object": "list", "data": [], "has_more": False})
            msg = f"No such object: '{parts[-1]}'"
            return self._reply(404, _error(404, "invalid_request_error", msg, "resource_missing"))

    return Handler


@contextmanager
def stripe_account(key: str, **fields: Any) -> Iterator[StripeAccount]:
    account = StripeAccount(key=key, **fields)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(account))
    account.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield account
    finally:
        server.shutdown()
        server.server_close()
