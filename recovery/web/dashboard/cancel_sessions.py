"""/dashboard/cancel-sessions: the cancel-flow sessions, filtered and paged."""

from __future__ import annotations

from flask import render_template

from recovery.web.dashboard import bp, login_required


@bp.get("/dashboard/cancel-sessions")
@login_required
def cancel_sessions() -> str:
    return render_template("dashboard/overview.html")
