"""Twilio's callbacks: delivery status (POST /webhooks/twilio/status) and inbound texts
(POST /webhooks/twilio/inbound: STOP / START / HELP).

Both check X-Twilio-Signature with the SDK's RequestValidator over the URL Twilio called,
rebuilt from RECOVERY_PUBLIC_URL (behind a proxy request.url is not what Twilio signed).
Twilio itself answers STOP/START/HELP on long codes and Messaging Services; we mirror the
opt-out so we never even try (docs/messaging.md#sms-opt-out: keep our own record of opt-outs).
"""

from __future__ import annotations

import logging
from xml.sax.saxutils import escape

from flask import Blueprint, Response, request
from twilio.request_validator import RequestValidator

from recovery.domain import sms as sms_rules
from recovery.services.messaging import sms_replies
from recovery.web import runtime
from recovery.web.errors import error_response

log = logging.getLogger(__name__)
bp = Blueprint("twilio_webhooks", __name__, url_prefix="/webhooks/twilio")

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


def _verified() -> bool:
    settings = runtime().settings
    if not settings.twilio_auth_token:
        return False
    url = settings.public_url + request.full_path.rstrip("?")
    params = request.form.to_dict(flat=True)
    signature = request.headers.get("X-Twilio-Signature", "")
    return bool(RequestValidator(settings.twilio_auth_token).validate(url, params, signature))


def _twiml(message: str | None = None) -> Response:
    body = EMPTY_TWIML
    if message:
        body = EMPTY_TWIML.replace("<Response>", f"<Response><Message>{escape(message)}</Message>")
    return Response(body, status=200, mimetype="application/xml")


@bp.post("/inbound")
def inbound() -> Response | tuple[Response, int]:
    if not _verified():
        return error_response(403, "invalid_signature", "X-Twilio-Signature does not match")
    phone = sms_rules.e164(request.form.get("From"))
    word = sms_rules.keyword(request.form.get("Body", ""))
    rt = runtime()
    if phone is None or word is None:
        return _twiml()
    sms_replies.record_keyword(rt, phone, word)
    log.info("inbound %s from %s", word.upper(), sms_rules.mask_phone(phone))
    if word == "help":
        business = rt.rules.business
        return _twiml(
            f"{business.name}: billing reminders. Reply STOP to opt out. {business.reply_to}"
        )
    return _twiml()  # Twilio sends its own STOP/START confirmation


@bp.post("/status")
def status() -> Response | tuple[Response, int]:
    if not _verified():
        return error_response(403, "invalid_signature", "X-Twilio-Signature does not match")
    sms_replies.record_delivery(
        runtime(),
        sid=request.form.get("MessageSid", ""),
        state=request.form.get("MessageStatus", ""),
        code=request.form.get("ErrorCode", ""),
    )
    return Response("", status=204)
