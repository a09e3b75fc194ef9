"""GET /api/v1/customers/<id>: a customer as mirrored from Stripe."""

from __future__ import annotations

from typing import Any

from recovery.services.events import mirror_reads
from recovery.web import runtime
from recovery.web.api.blueprint import bp, with_json
from recovery.web.errors import ApiError


@bp.get("/customers/<customer_id>")
@with_json
def get_customer(customer_id: str) -> dict[str, Any]:
    found = mirror_reads.customer_detail(runtime(), customer_id)
    if found is None:
        raise ApiError(404, "not_found", f"no customer {customer_id} in the mirror")
    return found
