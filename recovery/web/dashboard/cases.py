"""/dashboard/cases: the case list, a case's page and its admin actions."""

from __future__ import annotations

from flask import render_template

from recovery.web.dashboard import bp, login_required


@bp.get("/dashboard/cases")
@login_required
def cases() -> str:
    return render_template("dashboard/overview.html")


@bp.get("/dashboard/cases/<int:case_id>")
@login_required
def case_page(case_id: int) -> str:
    return render_template("dashboard/overview.html")
