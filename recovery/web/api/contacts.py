"""Account contacts of a customer (services/outreach/contacts.py):
POST   /api/v1/customers/<id>/contacts               JSON role, email, phone, locale, sms_consent
GET    /api/v1/customers/<id>/contacts               the active contacts
DELETE /api/v1/customers/<id>/contacts/<contact_id>  remove one: its links stop working
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request

from recovery.services.outreach import contacts
from recovery.web import runtime
from recovery.web.api.blueprint import bad, bp, with_json
from recovery.web.errors import ApiError


def _unknown(customer_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no customer {customer_id} in the mirror")


@bp.post("/customers/<customer_id>/contacts")
def add_contact(customer_id: str) -> tuple[Response, int]:
    data = request.get_json(silent=True)
    try:
        contact, created = contacts.add(runtime(), customer_id, data)
    except contacts.ContactError as exc:
        raise bad(str(exc)) from exc
    except contacts.UnknownCustomer as exc:
        raise _unknown(customer_id) from exc
    return jsonify(contact), 201 if created else 200


@bp.get("/customers/<customer_id>/contacts")
@with_json
def list_contacts(customer_id: str) -> dict[str, Any]:
    try:
        return {"data": contacts.listing(runtime(), customer_id), "has_more": False}
    except contacts.UnknownCustomer as exc:
        raise _unknown(customer_id) from exc


@bp.delete("/customers/<customer_id>/contacts/<int:contact_id>")
@with_json
def remove_contact(customer_id: str, contact_id: int) -> dict[str, Any]:
    # ids are 32-bit integers: anything larger names no contact (and must not reach the driver)
    if not 0 < contact_id < 2**31 or not contacts.remove(runtime(), customer_id, contact_id):
        raise ApiError(404, "not_found", f"no active contact {contact_id} of {customer_id}")
    return {"id": contact_id, "deleted": True}
