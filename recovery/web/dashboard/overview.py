"""The Overview page at /dashboard (a placeholder until the metrics land)."""

from __future__ import annotations

from flask import render_template

from recovery.web.dashboard import bp, login_required


@bp.get("/dashboard")
@login_required
def overview() -> str:
    return render_template("dashboard/overview.html")
