"""`GET /api/v1/customers/<id>/billing-status`: where a customer's billing stands, for the
business's backend to show its own notice (`recovery.services.card_update.billing_status`).
Bearer keys, like the rest of /api/v1."""

from __future__ import annotations

from flask import Response, jsonify, request

from recovery.services.card_update.billing_status import billing_status
from recovery.web import runtime
from recovery.web.api.blueprint import bp
from recovery.web.errors import ApiError

MAX_ID = 255  # the mirror's id column


@bp.get("/customers/<customer_id>/billing-status")
def customer_billing_status(customer_id: str) -> Response:
    rt = runtime()
    locale = request.args.get("locale")
    if locale is not None and len(locale) > 35:
        raise ApiError(
            400, "invalid_parameter", "locale must be a language tag such as de or pt-BR"
        )
    found = (
        billing_status(
            rt.db,
            customer_id,
            rt.clock.now(),
            settings=rt.settings,
            rules=rt.rules,
            locales=[locale],
        )
        if len(customer_id) <= MAX_ID
        else None
    )
    if found is None:
        raise ApiError(404, "not_found", f"no customer {customer_id[:MAX_ID]}")
    return jsonify(found.as_json())
