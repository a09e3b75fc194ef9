"""POST /webhooks/stripe: verify, store, acknowledge - then process.

Order matters: nothing is written before the signature and the JSON check pass, and 2xx is sent
only after the raw event is committed. Processing runs in that transaction, in a savepoint (see
services/inbox.py); if it fails the event is committed pending and the worker re-drives it.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify, request

from recovery.domain.signature import SignatureError, verify
from recovery.services.events import inbox
from recovery.web import runtime
from recovery.web.errors import error_response

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")


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
        event, data = inbox.parse_event(body)
    except ValueError as exc:
        return error_response(400, "invalid_event", str(exc))

    status = inbox.receive_event(
        rt.db,
        event,
        data,
        body,
        rt.processing_context,
        rt.clock,
        process=rt.settings.process_inline,
    )
    if status == "duplicate":
        return jsonify(received=True, duplicate=True), 200
    return jsonify(received=True, duplicate=False, status=status), 200
