"""/dashboard/shadow: the shadow report as a page - for the failed invoices of a period, what
Stripe's own retries did beside what we would have done (`services.ops.shadow_report`)."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta

from flask import render_template, request

from recovery.services.ops import shadow_report
from recovery.web import runtime
from recovery.web.dashboard.auth import login_required
from recovery.web.dashboard.blueprint import bp

DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
DEFAULT_DAYS = 30
PAGE_LIMIT = 100  # invoices compared on the page (the API and the replay take more)


class BadDay(ValueError):
    pass


def _day(name: str, default: date) -> date:
    raw = request.args.get(name) or ""
    if not raw:
        return default
    if not DAY.fullmatch(raw):
        raise BadDay(f"{name} must be a date: YYYY-MM-DD")
    try:
        return date.fromisoformat(raw)
    except ValueError as exc:
        raise BadDay(f"{name} must be a date: YYYY-MM-DD") from exc


def _shown(iso: str | None) -> str:
    return iso[:16].replace("T", " ") + " UTC" if iso else ""


@bp.get("/dashboard/shadow")
@login_required
def shadow_page() -> tuple[str, int]:
    rt = runtime()
    today = rt.clock.now().date()
    try:
        day_to = _day("to", today)
        day_from = _day("from", day_to - timedelta(days=DEFAULT_DAYS - 1))
        start, end = shadow_report.period_of(day_from, day_to)
    except (BadDay, shadow_report.BadPeriod) as exc:
        day_from, day_to = today - timedelta(days=DEFAULT_DAYS - 1), today
        page = render_template(
            "dashboard/shadow.html", r=None, error=str(exc), day_from=day_from, day_to=day_to
        )
        return page, 400
    report = shadow_report.report(rt, start, end, PAGE_LIMIT)
    page = render_template(
        "dashboard/shadow.html",
        r=report,
        error=None,
        day_from=day_from,
        day_to=day_to,
        shown=_shown,
        in_shadow=rt.settings.is_shadow,
        generated=datetime.fromisoformat(report["generated_at"].replace("Z", "+00:00")),
    )
    return page, 200
