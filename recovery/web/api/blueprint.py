"""The JSON API's blueprint (/api/v1): the bearer-key check for every route but the ones
marked `public`, and the small helpers its views share."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Blueprint, Response, current_app, jsonify, request

from recovery.web import runtime
from recovery.web.errors import ApiError

bp = Blueprint("api", __name__, url_prefix="/api/v1")
F = TypeVar("F", bound=Callable[..., Any])


def public(view: F) -> F:
    """A route anyone may call, without an API key (the API's own description)."""
    view.api_public = True  # type: ignore[attr-defined]
    return view


@bp.before_request
def require_api_key() -> None:
    view = current_app.view_functions.get(request.endpoint or "")
    if getattr(view, "api_public", False):
        return
    keys = runtime().settings.api_keys
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <API key>")
    # compare with every key, without stopping early
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(token.encode(), key.encode())
    if not ok:
        raise ApiError(401, "unauthorized", "unknown API key")


def bad(message: str) -> ApiError:
    return ApiError(400, "invalid_parameter", message)


def int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise bad(f"{name} must be an integer from {low} to {high}")
    return int(raw)


def with_json(fn: F) -> F:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Response:
        return jsonify(fn(*args, **kwargs))

    return cast(F, wrapper)
