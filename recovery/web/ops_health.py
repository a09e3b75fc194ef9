"""GET /dashboard/health: `recovery doctor`'s checks as a page, for admins only (it names the
providers, hosts and DNS records the service depends on)."""

from __future__ import annotations

from flask import Blueprint, Response, render_template
from flask_wtf.csrf import generate_csrf
from werkzeug.exceptions import HTTPException

from recovery.services.ops.doctor import Probes, run
from recovery.web import runtime
from recovery.web.dashboard import admin_required, current_user

bp = Blueprint("ops_health", __name__)

PAGE_TIMEOUT = 5.0  # seconds per network check: the page answers within a browser's patience


@bp.get("/dashboard/health")
@admin_required
def health() -> str:
    report = run(runtime(), Probes(timeout=PAGE_TIMEOUT))
    return render_template(
        "ops/health.html", report=report, user=current_user(), csrf_token=generate_csrf
    )


@bp.after_request
def headers(response: Response) -> Response:
    # The dashboard's policy: nothing from elsewhere, never cached (it lists hosts and records).
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'"
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


@bp.errorhandler(HTTPException)
def refused(exc: HTTPException) -> tuple[str, int]:
    message = "Only admins may see this page." if exc.code == 403 else exc.description
    page = render_template("dashboard/error.html", status=exc.code, message=message)
    return page, exc.code or 400
