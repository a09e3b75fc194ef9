"""GET /api/v1/shadow-report?from=YYYY-MM-DD&to=YYYY-MM-DD: for the invoices that first failed
in the period, what Stripe's own retries did and what we would have done
(`services.ops.shadow_report`). `to` defaults to today, `from` to the 30 days ending at `to`."""

from __future__ import annotations

from typing import Any

from recovery.services.ops import shadow_report
from recovery.web import runtime
from recovery.web.api.blueprint import bad, bp, int_arg, with_json
from recovery.web.api.metrics import period_from_args


@bp.get("/shadow-report")
@with_json
def get_shadow_report() -> dict[str, Any]:
    rt = runtime()
    day_from, day_to = period_from_args(rt.clock.now().date())
    limit = int_arg("limit", shadow_report.DEFAULT_LIMIT, 1, 5000)
    try:
        start, end = shadow_report.period_of(day_from, day_to)
    except shadow_report.BadPeriod as exc:
        raise bad(str(exc)) from exc
    return shadow_report.report(rt, start, end, limit)
