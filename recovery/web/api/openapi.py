"""GET /api/v1/openapi.json: an OpenAPI 3.1 description of the JSON API, written by hand.

Public (no API key), like the API's documentation would be: it names routes and shapes, never
data. Kept next to the routes it describes; tests/drills/test_openapi.py checks that every
/api/v1 route is in it and runs schemathesis against the app with it (no 500, conforming
answers), so a route or field added without describing it fails CI.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify

from recovery.domain.cases import CaseStatus
from recovery.services.cancel.records import OUTCOME_FILTERS
from recovery.services.events.listing import STATUSES as EVENT_STATUSES
from recovery.services.reporting.case_list import STATUS_FILTERS
from recovery.web.api import openapi_experiments as experiments
from recovery.web.api.blueprint import bp, public

JSON = "application/json"
STR = {"type": "string"}
INT = {"type": "integer"}
BOOL = {"type": "boolean"}
TIME = {"type": ["string", "null"], "format": "date-time"}


def _opt(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` or null."""
    kind = schema.get("type")
    if isinstance(kind, str):
        return {**schema, "type": [kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def _obj(required: dict[str, Any], extra: bool = True) -> dict[str, Any]:
    return {
        "type": "object",
        "required": list(required),
        "properties": required,
        "additionalProperties": extra,
    }


def _page(item: str) -> dict[str, Any]:
    return _obj({"data": {"type": "array", "items": {"$ref": item}}, "has_more": BOOL})


def _ok(schema: dict[str, Any], description: str, status: str = "200") -> dict[str, Any]:
    return {status: {"description": description, "content": {JSON: {"schema": schema}}}}


def _errors(*statuses: str) -> dict[str, Any]:
    texts = {
        "400": "invalid parameter",
        "401": "missing or unknown API key",
        "404": "no such object",
        "409": "conflicts with the object's state",
        "503": "the database is unavailable; retry",
    }
    err = {"$ref": "#/components/responses/Error"}
    return {s: {**err, "description": texts.get(s, "error")} for s in ("401", *statuses, "503")}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


LIMIT = _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "page size (100)")

CASE = _obj(
    {
        "id": INT,
        "status": {"enum": [s.value for s in CaseStatus]},
        "awaiting": _opt(STR),
        "invoice": STR,
        "customer": _opt(STR),
        "subscription": _opt(STR),
        "currency": STR,
        "amount_due": INT,
        "amount_recovered": _opt(INT),
        "recovered_via": _opt(STR),
        "close_reason": _opt(STR),
        "decline": {"type": "object"},
        "opened_at": TIME,
        "closed_at": TIME,
        "our_attempts": INT,
        "next_step": _obj({"at": TIME, "reason": _opt(STR)}),
    }
)
CASE_DETAIL = {
    "allOf": [
        {"$ref": "#/components/schemas/Case"},
        _obj(
            {
                "hosted_invoice_url": _opt(STR),
                "invoice_status": _opt(STR),
                "experiment": experiments.PLACEMENT,
                "timeline": {"type": "array", "items": {"type": "object"}},
                "attempts": {"type": "array", "items": {"type": "object"}},
                "messages": {"type": "array", "items": {"type": "object"}},
                "scheduled": {"type": "array", "items": {"type": "object"}},
            }
        ),
    ]
}
EVENT = _obj(
    {
        "id": STR,
        "type": STR,
        "created": INT,
        "object_id": _opt(STR),
        "status": {"enum": list(EVENT_STATUSES)},
        "attempts": INT,
        "received_at": TIME,
        "processed_at": TIME,
        "next_attempt_at": TIME,
        "last_error": _opt(STR),
    }
)
CUSTOMER = _obj(
    {
        "id": STR,
        "email": _opt(STR),
        "name": _opt(STR),
        "phone": _opt(STR),
        "preferred_locales": _opt({"type": "array", "items": STR}),
        "address_country": _opt(STR),
        "deleted": BOOL,
        "default_payment_method": _opt(STR),
        "cards": {"type": "array", "items": {"type": "object"}},
        "subscriptions": {"type": "array", "items": {"type": "object"}},
        "invoices": {"type": "array", "items": {"type": "object"}},
        "payment_attempts": {"type": "array", "items": {"type": "object"}},
    }
)
CANCEL_SESSION = _obj(
    {
        "id": STR,
        "customer": STR,
        "subscription": STR,
        "source": STR,
        "variant": _opt(STR),
        "experiment": experiments.PLACEMENT,
        "locale": _opt(STR),
        "display_locale": _opt(STR),
        "metadata": {"type": "object", "additionalProperties": STR},
        "created_at": TIME,
        "expires_at": TIME,
        "steps": {"type": "object"},
        "reason": _opt(STR),
        "reason_text": _opt(STR),
        "offer_shown": _opt({"type": "object"}),
        "outcome": _opt(STR),
        "cancel_at_period_end": _opt(BOOL),
        "ends_at": TIME,
        "stripe": {"type": "object"},
        "monthly_revenue": {},
        "messages": {"type": "array", "items": {"type": "object"}},
    }
)
NEW_CANCEL_SESSION = {
    "type": "object",
    "required": ["customer", "subscription", "return_url"],
    "additionalProperties": False,
    "properties": {
        "customer": {"type": "string", "pattern": "^cus_[A-Za-z0-9_]{1,250}$"},
        "subscription": {"type": "string", "pattern": "^sub_[A-Za-z0-9_]{1,250}$"},
        "return_url": {"type": "string", "format": "uri"},
        "locale": {"type": "string", "examples": ["de", "pt-BR"]},
        "metadata": {"type": "object", "maxProperties": 20, "additionalProperties": STR},
    },
}
BILLING_STATUS = _obj(
    {
        "customer": STR,
        "state": {"enum": ["ok", "past_due", "action_required", "canceling", "paused"]},
        "amount_due": _opt(INT),
        "currency": _opt(STR),
        "update_url": _opt(STR),
        "message": _opt(STR),
        "locale": STR,
    }
)
CONTACT = _obj(
    {
        "id": INT,
        "customer": STR,
        "role": {"enum": ["billing", "owner", "admin"]},
        "email": _opt(STR),
        "phone": _opt(STR),
        "locale": _opt(STR),
        "sms_consent": BOOL,
        "source": {"enum": ["api", "metadata"]},
        "created_at": STR,
    }
)
NEW_CONTACT = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"enum": ["billing", "owner", "admin"]},
        "email": {"type": "string", "description": "an email and/or a phone is required"},
        "phone": {"type": "string", "description": "E.164, e.g. +14155550123"},
        "locale": {"type": "string", "description": "en, es, de, fr, pt_BR, hi, th or ru"},
        "sms_consent": BOOL,
    },
    "additionalProperties": False,
}
METRICS = {"type": "object", "description": "the dashboard overview's numbers for the period"}
ARRAY = {"type": "array", "items": {"type": "object"}}
SHADOW_INVOICE = _obj(
    {
        "invoice": STR,
        "amount_due": INT,
        "currency": STR,
        "first_failure_at": STR,
        "stripe": _obj({"attempts": ARRAY, "retries": INT, "outcome": STR}),
        "ours": _obj({"retries": ARRAY, "reminders": ARRAY, "stopped": STR}),
        "stripe_retries_we_would_not_make": ARRAY,
        "lost_with_attempts_left": INT,
        "case": _opt({"type": "object"}),
    }
)
SHADOW_REPORT = _obj(
    {
        "period": _obj({"from": STR, "to": STR}),
        "mode": {"enum": ["live", "shadow"]},
        "stripe_emails": STR,
        "totals": {"type": "object"},
        "invoices": {"type": "array", "items": SHADOW_INVOICE},
        "truncated": BOOL,
    }
)
ERROR = _obj({"error": _obj({"code": STR, "message": STR}, extra=False)}, extra=False)


def document() -> dict[str, Any]:
    since = _query("since", STR, "ISO 8601 time with a zone (cancel sessions: or unix seconds)")
    after = _query("starting_after", STR, "the last id of the previous page")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "recovery JSON API",
            "version": "1",
            "description": "Failed-payment recovery and cancel flow. Amounts in minor units.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": _ok({"type": "object"}, "the OpenAPI description"),
                }
            },
            "/api/v1/events": {
                "get": {
                    "summary": "Received Stripe events, newest first",
                    "parameters": [
                        _query("status", {"enum": list(EVENT_STATUSES)}, "filter"),
                        LIMIT,
                        after,
                    ],
                    "responses": {
                        **_ok(_page("#/components/schemas/Event"), "a page of events"),
                        **_errors("400"),
                    },
                }
            },
            "/api/v1/customers/{customer_id}": {
                "get": {
                    "summary": "A customer as mirrored from Stripe: cards, subscriptions, ...",
                    "parameters": [
                        {"name": "customer_id", "in": "path", "required": True, "schema": STR}
                    ],
                    "responses": {
                        **_ok({"$ref": "#/components/schemas/Customer"}, "the customer"),
                        **_errors("404"),
                    },
                }
            },
            "/api/v1/customers/{customer_id}/billing-status": {
                "get": {
                    "summary": "Where the customer's billing stands, for an in-app notice",
                    "parameters": [
                        {"name": "customer_id", "in": "path", "required": True, "schema": STR},
                        _query("locale", {"type": "string", "maxLength": 35}, "e.g. de, pt-BR"),
                    ],
                    "responses": {
                        **_ok(BILLING_STATUS, "the state, what is owed, a link and a message"),
                        **_errors("400", "404"),
                    },
                }
            },
            "/api/v1/cases": {
                "get": {
                    "summary": "Recovery cases, newest first",
                    "parameters": [
                        _query(
                            "status",
                            {"enum": list(STATUS_FILTERS)},
                            "filter; open: every case still in progress (open, retrying or "
                            "awaiting the customer)",
                        ),
                        since,
                        _query("customer", STR, "a Stripe customer id"),
                        LIMIT,
                        after,
                    ],
                    "responses": {
                        **_ok(_page("#/components/schemas/Case"), "a page of cases"),
                        **_errors("400"),
                    },
                }
            },
            "/api/v1/cases/{case_id}": {
                "get": {
                    "summary": "One case with its timeline, attempts, messages and plan",
                    "parameters": [
                        {
                            "name": "case_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "integer", "minimum": 0},
                        }
                    ],
                    "responses": {
                        **_ok({"$ref": "#/components/schemas/CaseDetail"}, "the case"),
                        **_errors("404"),
                    },
                }
            },
            "/api/v1/cancel-sessions": {
                "post": {
                    "summary": "Start a hosted cancel flow; redirect the subscriber to `url`",
                    "requestBody": {
                        "required": True,
                        "content": {
                            JSON: {"schema": {"$ref": "#/components/schemas/NewCancelSession"}}
                        },
                    },
                    "responses": {
                        **_ok(
                            _obj({"id": STR, "url": STR, "expires_at": TIME}),
                            "the session",
                            "201",
                        ),
                        **_errors("400", "404", "409"),
                    },
                },
                "get": {
                    "summary": "Cancel sessions, newest first",
                    "parameters": [
                        since,
                        _query("outcome", {"enum": sorted(OUTCOME_FILTERS)}, "filter"),
                        LIMIT,
                        after,
                    ],
                    "responses": {
                        **_ok(_page("#/components/schemas/CancelSession"), "a page"),
                        **_errors("400"),
                    },
                },
            },
            "/api/v1/cancel-sessions/{session_id}": {
                "get": {
                    "summary": "One cancel session",
                    "parameters": [
                        {"name": "session_id", "in": "path", "required": True, "schema": STR}
                    ],
                    "responses": {
                        **_ok({"$ref": "#/components/schemas/CancelSession"}, "the session"),
                        **_errors("404"),
                    },
                }
            },
            "/api/v1/customers/{customer_id}/contacts": {
                "post": {
                    "summary": "Add an account contact (idempotent on role and email)",
                    "parameters": [
                        {"name": "customer_id", "in": "path", "required": True, "schema": STR}
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {JSON: {"schema": {"$ref": "#/components/schemas/NewContact"}}},
                    },
                    "responses": {
                        **_ok({"$ref": "#/components/schemas/Contact"}, "already there"),
                        **_ok({"$ref": "#/components/schemas/Contact"}, "added", "201"),
                        **_errors("400", "404"),
                    },
                },
                "get": {
                    "summary": "The customer's active account contacts",
                    "parameters": [
                        {"name": "customer_id", "in": "path", "required": True, "schema": STR}
                    ],
                    "responses": {
                        **_ok(_page("#/components/schemas/Contact"), "the contacts"),
                        **_errors("404"),
                    },
                },
            },
            "/api/v1/customers/{customer_id}/contacts/{contact_id}": {
                "delete": {
                    "summary": "Remove a contact: its links stop working, its pending mail stops",
                    "parameters": [
                        {"name": "customer_id", "in": "path", "required": True, "schema": STR},
                        {"name": "contact_id", "in": "path", "required": True, "schema": INT},
                    ],
                    "responses": {
                        **_ok(_obj({"id": INT, "deleted": BOOL}), "removed"),
                        **_errors("404"),
                    },
                }
            },
            "/api/v1/metrics": {
                "get": {
                    "summary": "The overview's numbers for calendar days (UTC) in one currency",
                    "parameters": [
                        _query("from", {"type": "string", "format": "date"}, "first day"),
                        _query("to", {"type": "string", "format": "date"}, "last day (today)"),
                        _query("currency", STR, "ISO 4217, lower case (the most used one)"),
                    ],
                    "responses": {**_ok(METRICS, "the numbers"), **_errors("400")},
                }
            },
            "/api/v1/experiments": experiments.PATH,
            "/api/v1/shadow-report": {
                "get": {
                    "summary": "Stripe's own retries beside what we would have done, for the "
                    "invoices that first failed in the period (shadow mode, or history)",
                    "parameters": [
                        _query("from", {"type": "string", "format": "date"}, "first day"),
                        _query("to", {"type": "string", "format": "date"}, "last day (today)"),
                        _query(
                            "limit",
                            {"type": "integer", "minimum": 1, "maximum": 5000},
                            "rows (500)",
                        ),
                    ],
                    "responses": {**_ok(SHADOW_REPORT, "the report"), **_errors("400")},
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an API key from RECOVERY_API_KEYS",
                }
            },
            "responses": {
                "Error": {
                    "description": "an error",
                    "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
                }
            },
            "schemas": {
                "Case": CASE,
                "CaseDetail": CASE_DETAIL,
                "Event": EVENT,
                "Customer": CUSTOMER,
                "CancelSession": CANCEL_SESSION,
                "NewCancelSession": NEW_CANCEL_SESSION,
                "Contact": CONTACT,
                "NewContact": NEW_CONTACT,
                "Error": ERROR,
                "Experiment": experiments.EXPERIMENT,
            },
        },
    }


@bp.get("/openapi.json")
@public
def openapi_json() -> Response:
    return jsonify(document())
