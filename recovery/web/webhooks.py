"""POST /webhooks/stripe: verify, store, acknowledge. A worker processes the event.

Order matters: nothing is written before the signature and the JSON check pass, and 2xx is sent
only after the raw event is committed - one INSERT ... ON CONFLICT DO NOTHING on a pooled
connection (services/events/inbox.py `ingest`), which also wakes the workers. Nothing else runs
here: no ORM session, no rate limiter (the blueprint is exempt), no template, no locale. A
database that cannot be reached is a 503 (recovery/web/errors.py), never a lost event: Stripe
retries what was not acknowledged.

With RECOVERY_PROCESS_INLINE=1 the request also processes the new event after its commit.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, request

from recovery.domain.signature import SignatureError, verify
from recovery.services.events import inbox
from recovery.web import runtime
from recovery.web.errors import error_response

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")

_DUPLICATE = b'{"received":true,"duplicate":true}'


def _answer(body: bytes) -> tuple[Response, int]:
    return Response(body, status=200, mimetype="application/json"), 200


@bp.post("/stripe")
def stripe_webhook() -> tuple[Response, int]:
    rt = runtime()
    body = request.get_data(cache=False)  # raw bytes; 413 past MAX_CONTENT_LENGTH
    now = rt.clock.now()
    try:
        verify(
            body,
            request.headers.get("Stripe-Signature"),
            rt.settings.stripe_webhook_secrets,
            now.timestamp(),
        )
    except SignatureError as exc:
        return error_response(400, "invalid_signature", str(exc))
    try:
        event, _ = inbox.parse_event(body)
    except ValueError as exc:
        return error_response(400, "invalid_event", str(exc))

    if not inbox.ingest(rt.db, event, body, now):
        return _answer(_DUPLICATE)
    status = "pending"
    if rt.settings.process_inline:
        status = inbox.process_stored_event(rt.db, event.id, rt.processing_context, rt.clock)
        if status == "failed":
            status = "pending"  # parked only after many tries; to Stripe it is stored
    return _answer(b'{"received":true,"duplicate":false,"status":"%s"}' % status.encode())
