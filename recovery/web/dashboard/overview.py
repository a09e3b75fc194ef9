"""The Overview page at /dashboard: recovery and cancel-flow numbers for a period and currency,
the period's headline figures in every currency side by side (also as CSV), and recovery by
failure month.

The numbers come from services/reporting/metrics, the same code as GET /api/v1/metrics, and so
do the sentences under each figure (`metrics.definitions`). The pickers are a GET form (nothing
changes, so no CSRF token): presets of the last 7, 30 or 90 days ending today, or a custom
range of calendar days (UTC, both ends included). The date fields always show the period on
screen; a small script (overview.js) fills them in as soon as a preset is picked, and picks
"custom" when a date is edited.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from flask import Response, render_template, request
from markupsafe import Markup

from recovery.i18n import format_money
from recovery.services.reporting import exports, metrics
from recovery.services.reporting.metrics import Overview
from recovery.web import charts, runtime
from recovery.web.dashboard.auth import current_user, login_required
from recovery.web.dashboard.blueprint import bp
from recovery.web.dashboard.csv_export import csv_response, overview_rows
from recovery.web.dashboard.guards import error_page
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
        "by_month": charts.recovery_by_month(
            [
                (
                    m.starts.strftime("%b %y"),
                    tuple(m.share(d) if m.complete(d) else None for d in (30, 60, 90)),
                )
                for m in o.by_month
            ],
            "Share of each month's failed amount recovered within 30, 60 and 90 days",
        ),
        "lost": charts.horizontal_amounts(
            [(label(LOST_REASONS, r.key), r.amount) for r in o.lost_reasons],
            cur,
            "Lost",
            "Lost amount by reason",
            charts.FAILED,
        ),
    }


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f} %"


def _choose(rt: Any) -> tuple[Choice, datetime, datetime]:
    choice = parse_choice(request.args, rt.clock.now().date())
    start, end = metrics.period_of(choice.day_from, choice.day_to)
    return choice, start, end


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
        form = _form(request.args, picked, in_use, today)
        return render_template("dashboard/overview.html", o=None, error=error, form=form), 400
    currency = choice.currency or (in_use[0] if in_use else metrics.DEFAULT_CURRENCY)
    o = metrics.overview(rt, start, end, currency, now)
    form = _form(request.args, choice, in_use, today, currency)
    return (
        render_template(
            "dashboard/overview.html",
            o=o,
            error=None,
            form=form,
            charts=build_charts(o),
            money=lambda amount: format_money(int(amount), o.currency, LOCALE),
            format_money=lambda amount, currency: format_money(int(amount), currency, LOCALE),
            percent=percent,
            invoices=lambda n: f"{n} invoice{'' if n == 1 else 's'}",
            label=label,
            reason_label=reason_label,
            TRIGGERS=TRIGGERS,
            CHANNELS=CHANNELS,
            CATEGORIES=CATEGORIES,
            LOST_REASONS=LOST_REASONS,
            OFFERS=OFFERS,
            DEFINITIONS=metrics.DEFINITIONS,
            COHORT=metrics.COHORT,
            last_day=o.period_to - timedelta(days=1),
            csv_args={**request.args.to_dict(), "currency": o.currency},
        ),
        200,
    )


@bp.get("/dashboard/overview.csv")
@login_required
def overview_csv() -> Response:
    """The period's headline figures in every currency side by side: one row per figure, one
    column per currency (amounts in each currency's major units, not converted)."""
    rt = runtime()
    try:
        choice, start, end = _choose(rt)
    except (BadChoice, metrics.BadPeriod) as exc:
        return error_page(400, str(exc))
    user = current_user()
    assert user is not None  # login_required ran first
    exports.record_export(
        rt,
        user_id=user.id,
        actor=user.email,
        what="overview",
        filters={"from": choice.day_from.isoformat(), "to": choice.day_to.isoformat()},
        full_emails=False,
    )
    now = rt.clock.now()
    o = metrics.overview(rt, start, end, choice.currency, now)
    name = f"overview-{choice.day_from:%Y%m%d}-{choice.day_to:%Y%m%d}.csv"
    return csv_response(overview_rows(o.by_currency, choice.day_from, choice.day_to), name)


@bp.get("/dashboard/overview.js")
def overview_script() -> Response:
    """The period picker's helper: a preset fills in its dates, an edited date picks custom."""
    response = Response(PICKER_JS, mimetype="text/javascript")
    response.headers["Cache-Control"] = "no-cache"
    return response


PICKER_JS = """(function () {
  var form = document.getElementById("period-form");
  if (!form) return;
  var period = form.elements.period, from = form.elements.from, to = form.elements.to;
  var today = form.getAttribute("data-today");
  function iso(d) { return d.toISOString().slice(0, 10); }
  period.addEventListener("change", function () {
    if (period.value === "custom") return;
    var end = new Date(today + "T00:00:00Z");
    var start = new Date(end.getTime() - (parseInt(period.value, 10) - 1) * 86400000);
    from.value = iso(start);
    to.value = iso(end);
  });
  function custom() { period.value = "custom"; }
  from.addEventListener("input", custom);
  to.addEventListener("input", custom);
})();
"""


def _form(
    args: Any, choice: Choice, in_use: list[str], today: date, currency: str | None = None
) -> dict[str, Any]:
    """What the pickers show: the choice made (or as typed, when it was refused)."""
    shown = currency or choice.currency or (in_use[0] if in_use else metrics.DEFAULT_CURRENCY)
    options = list(in_use)
    if shown not in options:
        options.append(shown)
    preset = args.get("period")
    refused = choice.preset == "custom" and preset != "custom"
    return {
        "preset": preset if preset in (*map(str, PRESETS), "custom") else str(DEFAULT_PRESET),
        "presets": PRESETS,
        # The dates of the period on screen; as typed only when they were refused.
        "from": (args.get("from") if refused else None) or choice.day_from.isoformat(),
        "to": (args.get("to") if refused else None) or choice.day_to.isoformat(),
        "currency": shown,
        "currencies": options,
        "today": today.isoformat(),
    }
