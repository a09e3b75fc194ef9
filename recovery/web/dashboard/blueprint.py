"""The dashboard's blueprint, on its own so that the page modules can add routes to it without
importing the package that imports them. Every POST is CSRF-checked before any view runs."""

from __future__ import annotations

from flask import Blueprint

from recovery.web import security

bp = Blueprint("dashboard", __name__)

security.protect(
    bp,
    csp=(
        "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "script-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    headers={
        "Referrer-Policy": "same-origin",
        # Customer data: never kept by a shared cache or the browser's back-forward cache.
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
    },
)
