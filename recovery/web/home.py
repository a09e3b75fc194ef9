"""`GET /`: a small page saying what answers here and pointing to the dashboard (the README
says the service "serves on" this address), and `GET /favicon.ico`, which every browser asks
for. Both are static: no session, no database, nothing about any customer."""

from __future__ import annotations

from flask import Blueprint, Flask, Response, render_template

from recovery import i18n
from recovery.web import i18n as web_i18n
from recovery.web import runtime, security

bp = Blueprint("home", __name__)

# A rounded square with a check mark: the service's colour, readable at 16 px.
FAVICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
    '<rect width="32" height="32" rx="7" fill="#0b57d0"/>'
    '<path d="M9 16.5l4.5 4.5L23 11.5" fill="none" stroke="#fff" stroke-width="3.5"'
    ' stroke-linecap="round" stroke-linejoin="round"/></svg>'
)

security.protect(
    bp,
    csp="default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'none'",
    headers={"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"},
)


@bp.get("/")
def index() -> Response:
    web_i18n.use_locale(i18n.negotiate(web_i18n.accepted_languages()) or i18n.DEFAULT_LOCALE)
    html = render_template(
        "home/index.html",
        business=runtime().rules.business.name,
        dashboard="/dashboard",
    )
    return Response(html, mimetype="text/html")


@bp.get("/favicon.ico")
def favicon() -> Response:
    # SVG under the name browsers ask for; they go by the Content-Type, not the extension.
    response = Response(FAVICON, mimetype="image/svg+xml")
    response.headers["Cache-Control"] = "public, max-age=86400"
    return response


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
