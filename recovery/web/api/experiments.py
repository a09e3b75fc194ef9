"""GET /api/v1/experiments: every experiment in the rules (ended ones too) with its arms,
shares, figures, intervals, lifts over the holdout and verdicts
(`services/experiments/results`, which the dashboard's experiments page shows too)."""

from __future__ import annotations

from typing import Any

from recovery.services.experiments import results
from recovery.web import runtime
from recovery.web.api.blueprint import bp, with_json


@bp.get("/experiments")
@with_json
def list_experiments() -> dict[str, Any]:
    return {"data": results.all_results(runtime())}
