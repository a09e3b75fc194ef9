"""POST /webhooks/stripe: verify, store, acknowledge. A worker processes the event.

Order matters: nothing is written before the signature and the JSON check pass, and 2xx is sent
only after the raw event is committed - on PostgreSQL in one INSERT ... ON CONFLICT DO NOTHING
with the rows of the process's other requests waiting at that moment (group commit,
services/events/ingest.py), which also wakes the workers. Nothing else runs here: no ORM
session, no rate limiter, no session cookie, no template, no locale. A database that cannot be
reached is a 503, never a lost event: Stripe retries what was not acknowledged.

In the default mode the request never enters Flask: `WebhookFastPath`, a WSGI middleware in
front of the app, answers it (Flask's request context, session and limiter bookkeeping were
over half of the request's CPU). With RECOVERY_PROCESS_INLINE=1 the request goes through the
Flask view below, which also processes the new event after its commit (processing may render
messages, which needs the app context); so do other methods (405).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wsgi import get_input_stream

from recovery.domain.signature import SignatureError, verify
from recovery.services.events import inbox, ingest
from recovery.web import runtime
from recovery.web.errors import ApiError

if TYPE_CHECKING:
    from recovery.runtime import Runtime

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")
PATH = "/webhooks/stripe"

_DUPLICATE = b'{"received":true,"duplicate":true}'
_PENDING = b'{"received":true,"duplicate":false,"status":"pending"}'
_REASONS = {
    200: "200 OK",
    400: "400 BAD REQUEST",
    413: "413 REQUEST ENTITY TOO LARGE",
    500: "500 INTERNAL SERVER ERROR",
    503: "503 SERVICE UNAVAILABLE",
}


def _body(error: ApiError) -> bytes:
    """The JSON error body of recovery/web/errors.py, without Flask's app context."""
    return json.dumps({"error": {"code": error.code, "message": error.message}}).encode()


def accept(rt: Runtime, body: bytes, signature: str | None) -> tuple[bool, ingest.ParsedEvent]:
    """Verify and store one delivery. Returns (new, event); raises ApiError for a bad request
    (400) and for a database that did not store it (503: Stripe retries)."""
    now = rt.clock.now()
    try:
        verify(body, signature, rt.settings.stripe_webhook_secrets, now.timestamp())
    except SignatureError as exc:
        raise ApiError(400, "invalid_signature", str(exc)) from exc
    try:
        event, _ = ingest.parse_event(body)
    except ValueError as exc:
        raise ApiError(400, "invalid_event", str(exc)) from exc
    try:
        return ingest.ingest(rt.db, event, body, now), event
    except ingest.StoreRefused as exc:  # a value the database cannot hold: the sender's mistake
        raise ApiError(400, "invalid_parameter", "a parameter has a value not allowed") from exc
    except ingest.StoreUnavailable as exc:  # not stored means not acknowledged
        log.error("webhook not stored: %s", exc)
        raise ApiError(503, "database_unavailable", "the database is unavailable; retry") from exc


@bp.post("/stripe")
def stripe_webhook() -> tuple[Response, int]:
    """The Flask view: RECOVERY_PROCESS_INLINE=1 (or a test app without the middleware)."""
    rt = runtime()
    body = request.get_data(cache=False)  # raw bytes; 413 past MAX_CONTENT_LENGTH
    try:
        new, event = accept(rt, body, request.headers.get("Stripe-Signature"))
    except ApiError as refused:
        return Response(_body(refused), mimetype="application/json"), refused.status
    if not new:
        return Response(_DUPLICATE, mimetype="application/json"), 200
    status = "pending"
    if rt.settings.process_inline:
        status = inbox.process_stored_event(rt.db, event.id, rt.processing_context, rt.clock)
        if status == "failed":
            status = "pending"  # parked only after many tries; to Stripe it is stored
    answer = b'{"received":true,"duplicate":false,"status":"%s"}' % status.encode()
    return Response(answer, mimetype="application/json"), 200


def _read_body(environ: dict[str, Any], limit: int | None) -> bytes:
    """The request body; RequestEntityTooLarge past `limit`. With a Content-Length (Stripe
    sends one) it is read in one call; werkzeug's stream wrappers cost more than the read."""
    length = environ.get("CONTENT_LENGTH", "")
    if length.isdigit() and length.isascii():
        size = int(length)
        if limit is not None and size > limit:
            raise RequestEntityTooLarge()
        body: bytes = environ["wsgi.input"].read(size)
        return body
    return get_input_stream(environ, max_content_length=limit).read()  # chunked, and the rest


StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class WebhookFastPath:
    """WSGI middleware answering POST /webhooks/stripe without Flask (default mode)."""

    def __init__(self, app: Flask, wrapped: WsgiApp) -> None:
        self.app, self.wrapped = app, wrapped

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD") != "POST":
            return self.wrapped(environ, start_response)
        rt: Runtime = self.app.extensions["recovery"]
        if rt.settings.process_inline:
            return self.wrapped(environ, start_response)
        status, body = self._answer(rt, environ)
        start_response(
            _REASONS.get(status, f"{status} ERROR"),
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]

    def _answer(self, rt: Runtime, environ: dict[str, Any]) -> tuple[int, bytes]:
        try:
            limit = self.app.config.get("MAX_CONTENT_LENGTH")
            body = _read_body(environ, limit)
            new, _ = accept(rt, body, environ.get("HTTP_STRIPE_SIGNATURE"))
        except ApiError as refused:
            return refused.status, _body(refused)
        except RequestEntityTooLarge:
            message = f"the body is larger than the {limit} bytes allowed"
            return 413, _body(ApiError(413, "request_entity_too_large", message))
        except Exception:
            log.exception("unhandled error in the webhook")
            failed = ApiError(500, "internal_error", "unexpected error; it has been logged")
            return 500, _body(failed)
        return 200, _PENDING if new else _DUPLICATE
