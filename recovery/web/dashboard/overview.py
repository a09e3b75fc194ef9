"""The Overview page at /dashboard: recovery and cancel-flow numbers for a period and currency.

The numbers come from services/reporting/metrics, the same code as GET /api/v1/metrics.
The pickers are a GET form (nothing changes, so no CSRF token): presets of the last 7, 30 or 90
days ending today, or a custom range of calendar days (UTC, both ends included).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from flask import render_template, request
from markupsafe import Markup

from recovery.i18n import format_money
from recovery.services.reporting import metrics
from recovery.services.reporting.metrics import Overview
from recovery.web import charts, runtime
from recovery.web.dashboard.auth import login_required
from recovery.web.dashboard.blueprint import bp
from recovery.web.dashboard.labels import (
    CATEGORIES,
    CHANNELS,
    LOCALE,
    LOST_REASONS,
    OFFERS,
    TRIGGERS,
    label,
    reason_label,
)

PRESETS = (7, 30, 90)
DEFAULT_PRESET = 30


@dataclass(frozen=True)
class Choice:
    preset: str  # "7" | "30" | "90" | "custom"
    day_from: date
    day_to: date
    currency: str | None  # None: the most used one


class BadChoice(ValueError):
    pass


def _parse_day(raw: str, name: str) -> date:
    try:
        if len(raw) != 10:
            raise ValueError(raw)
        return date.fromisoformat(raw)
    except ValueError as exc:
        raise BadChoice(f"{name} must be a date (YYYY-MM-DD)") from exc


def parse_choice(args: Any, today: date) -> Choice:
    preset = args.get("period", str(DEFAULT_PRESET))
    raw_currency = (args.get("currency") or "").strip()
    try:
        currency = metrics.check_currency(raw_currency) if raw_currency else None
    except metrics.BadPeriod as exc:
        raise BadChoice(str(exc)) from exc
    if preset == "custom":
        day_from = _parse_day(args.get("from", ""), "From")
        day_to = _parse_day(args.get("to", ""), "To")
        return Choice(preset, day_from, day_to, currency)
    if not preset.isdigit() or int(preset) not in PRESETS:
        raise BadChoice("choose a period of 7, 30 or 90 days, or a custom range")
    days = int(preset)
    return Choice(preset, today - timedelta(days=days - 1), today, currency)


def build_charts(o: Overview) -> dict[str, Markup]:
    cur = o.currency
    return {
        "weekly": charts.weekly_trend(
            [(w.week.split("-")[1], w.failed_amount, w.recovered_amount) for w in o.weekly], cur
        ),
        "triggers": charts.horizontal_amounts(
            [(label(TRIGGERS, t.key), t.amount) for t in o.by_trigger],
            cur,
            "Recovered",
            "Recovered amount by what triggered the payment",
            charts.RECOVERED,
        ),
        "categories": charts.failed_vs_recovered(
            [
                (label(CATEGORIES, b.key), b.failed_amount, b.recovered_amount)
                for b in o.by_decline_category
            ],
            cur,
            "Failed and recovered amount by decline category",
        ),
        "reasons": charts.horizontal_counts(
            [(reason_label(r.key), r.count) for r in o.cancel_flow.reasons],
            "Sessions",
            "Cancel-flow sessions by reason",
        ),
    }


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f} %"


@bp.get("/dashboard")
@login_required
def overview() -> tuple[str, int]:
    rt = runtime()
    now = rt.clock.now()
    today = now.date()
    error = None
    try:
        choice = parse_choice(request.args, today)
        start, end = metrics.period_of(choice.day_from, choice.day_to)
    except (BadChoice, metrics.BadPeriod) as exc:
        error = str(exc)
    in_use = metrics.currencies(rt)
    if error is not None:
        fallback = today - timedelta(days=DEFAULT_PRESET - 1)
        picked = Choice("custom", fallback, today, None)
        form = _form(request.args, picked, in_use)
        return render_template("dashboard/overview.html", o=None, error=error, form=form), 400
    currency = choice.currency or (in_use[0] if in_use else metrics.DEFAULT_CURRENCY)
    o = metrics.overview(rt, start, end, currency, now)
    form = _form(request.args, choice, in_use, currency)
    return (
        render_template(
            "dashboard/overview.html",
            o=o,
            error=None,
            form=form,
            charts=build_charts(o),
            money=lambda amount: format_money(int(amount), o.currency, LOCALE),
            percent=percent,
            label=label,
            reason_label=reason_label,
            TRIGGERS=TRIGGERS,
            CHANNELS=CHANNELS,
            CATEGORIES=CATEGORIES,
            LOST_REASONS=LOST_REASONS,
            OFFERS=OFFERS,
            last_day=o.period_to - timedelta(days=1),
        ),
        200,
    )


def _form(
    args: Any, choice: Choice, in_use: list[str], currency: str | None = None
) -> dict[str, Any]:
    """What the pickers show: the choice made (or as typed, when it was refused)."""
    shown = currency or choice.currency or (in_use[0] if in_use else metrics.DEFAULT_CURRENCY)
    options = list(in_use)
    if shown not in options:
        options.append(shown)
    preset = args.get("period")
    return {
        "preset": preset if preset in (*map(str, PRESETS), "custom") else str(DEFAULT_PRESET),
        "presets": PRESETS,
        "from": args.get("from") or choice.day_from.isoformat(),
        "to": args.get("to") or choice.day_to.isoformat(),
        "currency": shown,
        "currencies": options,
    }
