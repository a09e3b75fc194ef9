"""GET /api/v1/metrics: the dashboard overview's numbers as JSON (services/reporting/metrics
computes both), for a period of calendar days (UTC, both ends included) in one currency."""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

from flask import request

from recovery.services.reporting import metrics
from recovery.web import runtime
from recovery.web.api.blueprint import bad, bp, with_json

DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
DEFAULT_DAYS = 30


def _day(name: str) -> date | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        if not DAY.fullmatch(raw):
            raise ValueError(raw)
        return date.fromisoformat(raw)
    except ValueError as exc:
        raise bad(f"{name} must be a date: YYYY-MM-DD") from exc


def period_from_args(today: date) -> tuple[date, date]:
    """`to` defaults to today, `from` to the 30 days ending at `to`."""
    day_to = _day("to") or today
    day_from = _day("from") or day_to - timedelta(days=DEFAULT_DAYS - 1)
    return day_from, day_to


@bp.get("/metrics")
@with_json
def get_metrics() -> dict[str, Any]:
    rt = runtime()
    now = rt.clock.now()
    day_from, day_to = period_from_args(now.date())
    raw_currency = request.args.get("currency")
    try:
        start, end = metrics.period_of(day_from, day_to)
        currency = metrics.check_currency(raw_currency) if raw_currency is not None else None
    except metrics.BadPeriod as exc:
        raise bad(str(exc)) from exc
    return metrics.overview(rt, start, end, currency, now).as_json()
