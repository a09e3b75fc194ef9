"""The billing team's dashboard: sign-in, overview, cases, cancel sessions, CSV exports.

Everything here is behind `login_required`; actions that change a case also need
`admin_required`. Every POST carries a CSRF token (Flask-WTF), checked before any view runs.
Other modules add their pages to `bp` (the overview lives in `overview.py`).
"""

from __future__ import annotations

from flask import Blueprint, Flask

bp = Blueprint("dashboard", __name__)

from recovery.web.dashboard.auth import (  # noqa: E402  (bp must exist before the views import it)
    CurrentUser,
    admin_required,
    current_user,
    login_required,
)


def init_app(app: Flask) -> None:
    """Register the dashboard with the app."""
    app.register_blueprint(bp)


# The pages: each module adds its routes to `bp` when imported.
from recovery.web.dashboard import (  # noqa: E402
    cancel_sessions,
    cases,
    guards,
    login,
    overview,
)

del cancel_sessions, cases, guards, login, overview

__all__ = ["CurrentUser", "admin_required", "bp", "current_user", "init_app", "login_required"]
