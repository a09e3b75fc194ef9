"""The billing team's dashboard: sign-in, overview, cases, cancel sessions, experiments, CSV
exports.

Everything here is behind `login_required`; actions that change a case also need
`admin_required`. Every POST carries a CSRF token (Flask-WTF), checked before any view runs.
The blueprint lives in `blueprint.py`; each page module adds its routes to it, and importing
this package imports them all.
"""

from __future__ import annotations

from flask import Flask

from recovery.web.dashboard import (
    cancel_sessions,
    cases,
    customers,
    experiments,
    guards,
    login,
    ops_banner,
    overview,
    shadow,
)
from recovery.web.dashboard.auth import (
    CurrentUser,
    admin_required,
    current_user,
    login_required,
)
from recovery.web.dashboard.blueprint import bp

del cancel_sessions, cases, customers, experiments, guards, login, ops_banner, overview, shadow


def init_app(app: Flask) -> None:
    """Register the dashboard with the app."""
    app.register_blueprint(bp)


__all__ = ["CurrentUser", "admin_required", "bp", "current_user", "init_app", "login_required"]
