"""/dashboard/experiments (and its CSV): each experiment as a table and a chart, from the same
results as GET /api/v1/experiments (`services/experiments/results`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Response, render_template
from markupsafe import Markup

from recovery.i18n import format_money, major_units
from recovery.services.experiments import results
from recovery.services.reporting import exports
from recovery.web import charts, runtime
from recovery.web.charts import LOCALE
from recovery.web.dashboard.auth import current_user, login_required
from recovery.web.dashboard.blueprint import bp
from recovery.web.dashboard.csv_export import csv_response, rows_to_csv

CSV_HEADER = (
    "experiment",
    "applies_to",
    "active",
    "arm",
    "share",
    "customers",
    "currency",
    "cases",
    "failed_amount",
    "recovered_count",
    "recovered_amount",
    "finished_cases",
    "rate",
    "rate_low",
    "rate_high",
    "lift_points",
    "lift_points_low",
    "lift_points_high",
    "lift_money_per_case",
    "lift_money_low",
    "lift_money_high",
    "sessions",
    "saves",
    "validated_saves_30",
    "validated_saves_60",
    "validated_saves_90",
    "cancels",
    "verdict",
)


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f} %"


def points(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:+.1f} points"


def interval(pair: list[float] | None, scale: float = 100.0, unit: str = " %") -> str:
    if pair is None:
        return ""
    return f"{pair[0] * scale:.1f} to {pair[1] * scale:.1f}{unit}"


def _chart(experiment: dict[str, Any]) -> Markup:
    """The arms' rates: the recovery rate in the currency with the most cases, or the save
    rate, with a caption that says which (the chart shows one currency of several)."""
    rows: list[tuple[str, float | None]] = []
    if experiment["applies_to"] == "dunning":
        totals: dict[str, int] = {}
        for arm in experiment["arms"]:
            for c in arm["currencies"]:
                totals[c["currency"]] = totals.get(c["currency"], 0) + c["cases"]
        main = max(totals, key=lambda c: (totals[c], c)) if totals else None
        for arm in experiment["arms"]:
            found = next((c for c in arm["currencies"] if c["currency"] == main), None)
            rows.append((arm["name"], found["recovery_rate"] if found else None))
        what = f"Recovery rate by arm{f' ({main.upper()})' if main else ''}"
    else:
        rows = [(arm["name"], arm.get("save_rate")) for arm in experiment["arms"]]
        what = "Save rate by arm"
    drawn = charts.horizontal_rates(rows, "Rate", f"{experiment['key']}: {what}")
    return Markup('<p class="hint">{}</p>{}').format(what, drawn)


@bp.get("/dashboard/experiments")
@login_required
def experiments() -> str:
    found = results.all_results(runtime())
    return render_template(
        "dashboard/experiments.html",
        experiments=found,
        charts={e["key"]: _chart(e) for e in found},
        percent=percent,
        points=points,
        interval=interval,
        money_in=lambda amount, currency: format_money(round(amount), currency, LOCALE),
    )


def _major(amount: int | None, currency: str | None) -> Any:
    """Minor units as the currency's major units (as the other exports write amounts)."""
    return None if amount is None or currency is None else major_units(int(amount), currency)


def _csv_rows(found: list[dict[str, Any]]) -> Iterator[list[Any]]:
    for e in found:
        head = [e["key"], e["applies_to"], e["active"]]
        for arm in e["arms"]:
            who = [arm["name"], arm["share"], arm["customers"]]
            if e["applies_to"] == "dunning":
                for c in arm["currencies"] or [{}]:
                    rate = c.get("recovery_rate_interval") or [None, None]
                    lift = c.get("lift_points_interval") or [None, None]
                    money = c.get("lift_money_interval") or [None, None]
                    currency = c.get("currency")
                    yield [
                        *head,
                        *who,
                        currency,
                        c.get("cases"),
                        _major(c.get("failed_amount"), currency),
                        c.get("recovered_count"),
                        _major(c.get("recovered_amount"), currency),
                        c.get("finished_cases"),
                        c.get("recovery_rate"),
                        *rate,
                        c.get("lift_points"),
                        *lift,
                        c.get("lift_money_per_case"),
                        *money,
                        *([None] * 6),
                        c.get("verdict"),
                    ]
            else:
                rate = arm.get("save_rate_interval") or [None, None]
                lift = arm.get("lift_points_interval") or [None, None]
                held = [v["held"] for v in arm["validated_saves"]]
                yield [
                    *head,
                    *who,
                    *([None] * 6),
                    arm.get("save_rate"),
                    *rate,
                    arm.get("lift_points"),
                    *lift,
                    None,
                    None,
                    None,
                    arm["sessions"],
                    arm["saves"],
                    *held,
                    arm["cancels"],
                    arm.get("verdict"),
                ]


@bp.get("/dashboard/experiments.csv")
@login_required
def experiments_csv() -> Response:
    rt = runtime()
    user = current_user()
    assert user is not None  # login_required ran first
    exports.record_export(
        rt, user_id=user.id, actor=user.email, what="experiments", filters={}, full_emails=False
    )
    name = f"experiments-{rt.clock.now():%Y%m%d-%H%M}.csv"
    return csv_response(rows_to_csv(CSV_HEADER, _csv_rows(results.all_results(rt))), name)
