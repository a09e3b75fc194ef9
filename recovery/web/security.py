"""Security headers and CSRF for the HTML blueprints, in one place.

`protect(bp, ...)` gives a blueprint:
- a CSRF check before any view runs on a POST (Flask-WTF's csrf module, used on these pages
  only, so the JSON API and the webhooks are untouched): a missing or wrong token raises
  `CsrfFailed`, which each blueprint answers with its own page;
- `csrf_token()` in its templates;
- the same response headers on every answer, errors included; a Content-Security-Policy that
  differs per page (Stripe Checkout on the card-update page, the business's site on the
  cancel flow) is passed in, or made per request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flask import Blueprint, Response, request
from flask_wtf.csrf import generate_csrf, validate_csrf
from wtforms.validators import ValidationError

# Pages a subscriber opens from a message: the URL is their key, so it is never sent on
# (no-referrer), kept (no-store) or sniffed into something else.
SUBSCRIBER_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
NOT_INDEXED = {"X-Robots-Tag": "noindex, nofollow"}


class CsrfFailed(Exception):
    """A POST without a valid CSRF token: nothing ran."""


def subscriber_csp(form_action: Sequence[str]) -> str:
    """The subscriber pages' policy: nothing loads from anywhere (inline styles, data: images
    only), no framing, and forms post only to `form_action` - where a redirect after the POST
    goes too, since Chromium checks redirects of a form submission against form-action."""
    return (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
        f"frame-ancestors 'none'; form-action {' '.join(form_action)}"
    )


def protect(
    bp: Blueprint,
    *,
    headers: Mapping[str, str],
    csp: str | Callable[[], str] | None = None,
) -> None:
    """CSRF on every POST to `bp`, `csrf_token` in its templates, and `headers` (with `csp` as
    Content-Security-Policy, a string or made per request) on every response."""

    @bp.before_request
    def check_csrf() -> None:
        if request.method == "POST":
            try:
                validate_csrf(request.form.get("csrf_token"))
            except ValidationError as exc:
                raise CsrfFailed(str(exc)) from exc

    @bp.context_processor
    def csrf_helper() -> dict[str, Any]:
        return {"csrf_token": generate_csrf}

    @bp.after_request
    def security_headers(response: Response) -> Response:
        if csp is not None:
            response.headers["Content-Security-Policy"] = csp if isinstance(csp, str) else csp()
        for name, value in headers.items():
            response.headers[name] = value
        return response
