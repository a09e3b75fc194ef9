"""The in-app notice for a front end with no backend work: `/embed/v1/banner.js` shows a
dismissible banner from a short-lived token the business's backend signs
(`recovery.domain.embed_token`; README, "In-app notice").

- `GET /embed/v1/banner.js`: the script, static and cacheable, under 5 KB, no dependencies.
- `GET /embed/v1/status?token=...[&locale=...]`: the banner's content for the token's customer.
  Any origin may ask (CORS `*`, no cookies): the token is the credential. A forged, expired or
  malformed token gets 401 and the banner shows nothing.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, jsonify, request

from recovery.domain import embed_token
from recovery.i18n import html_lang
from recovery.services.card_update.billing_status import banner_labels, billing_status
from recovery.web import runtime
from recovery.web.errors import ApiError
from recovery.web.i18n import accepted_languages

bp = Blueprint("embed", __name__, url_prefix="/embed/v1")

BANNER_JS = (Path(__file__).resolve().parent / "static" / "banner.js").read_bytes()


@bp.get("/banner.js")
def banner_js() -> Response:
    response = Response(BANNER_JS, mimetype="text/javascript")
    response.headers["Cache-Control"] = "public, max-age=3600"
    # Loaded by other sites' pages: allowed even where they isolate themselves (COEP).
    response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
    return response


@bp.get("/status")
def status() -> Response:
    rt = runtime()
    if not rt.settings.embed_secret:
        raise ApiError(404, "not_configured", "set RECOVERY_EMBED_SECRET to use the banner")
    token = request.args.get("token", "")
    customer = embed_token.verify(rt.settings.embed_secret, token, int(rt.clock.now().timestamp()))
    if customer is None:
        raise ApiError(401, "invalid_token", "the token is malformed, forged or expired")
    found = billing_status(
        rt.db,
        customer,
        rt.clock.now(),
        settings=rt.settings,
        rules=rt.rules,
        locales=[request.args.get("locale")],
        fallback_locales=accepted_languages(),
    )
    if found is None:
        raise ApiError(404, "unknown_customer", "no such customer")
    body = {
        "state": found.state.value,
        "message": found.message,
        "action": found.action,
        "update_url": found.update_url,
        "lang": html_lang(found.locale),
        "labels": banner_labels(found.locale),
    }
    return jsonify(body)


@bp.after_request
def cross_origin(response: Response) -> Response:
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["X-Content-Type-Options"] = "nosniff"
    if request.endpoint != "embed.banner_js":
        response.headers["Cache-Control"] = "no-store"  # a fresh link, one customer's state
    return response
