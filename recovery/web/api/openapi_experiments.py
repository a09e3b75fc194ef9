"""The OpenAPI shapes of GET /api/v1/experiments and of the `experiment` a case or cancel
session names (`openapi.py` puts them in the document)."""

from __future__ import annotations

from typing import Any

from recovery.domain.experiments import APPLIES_TO, ROUTING_MODES
from recovery.domain.stats import Verdict

STR = {"type": "string"}
INT = {"type": "integer"}
BOOL = {"type": "boolean"}
NUM = {"type": "number"}
OPT_NUM = {"type": ["number", "null"]}
INTERVAL = {
    "anyOf": [{"type": "array", "items": NUM, "minItems": 2, "maxItems": 2}, {"type": "null"}]
}
VERDICT = {"enum": [v.value for v in Verdict]}


def _obj(required: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": list(required),
        "properties": required,
        "additionalProperties": True,
    }


PLACEMENT = {"anyOf": [_obj({"key": STR, "arm": STR}), {"type": "null"}]}
HELD = _obj({"days": INT, "held": INT, "not_held": INT, "pending": INT})
CURRENCY = _obj(
    {
        "currency": STR,
        "cases": INT,
        "failed_amount": INT,
        "recovered_count": INT,
        "recovered_amount": INT,
        "finished_cases": INT,
        "finished_recovered": INT,
        "recovery_rate": OPT_NUM,
        "recovery_rate_interval": INTERVAL,
        "durable_recoveries": {"type": "array", "items": HELD},
    }
)
ARM = _obj(
    {
        "name": STR,
        "holdout": BOOL,
        "share": OPT_NUM,
        "customers": INT,
    }
)
ARM["properties"].update(
    {
        "currencies": {"type": "array", "items": CURRENCY},
        "sessions": INT,
        "saves": INT,
        "saves_reversed": INT,
        "validated_saves": {"type": "array", "items": HELD},
        "cancels": INT,
        "save_rate": OPT_NUM,
        "save_rate_interval": INTERVAL,
        "lift_points": OPT_NUM,
        "lift_points_interval": INTERVAL,
        "verdict": VERDICT,
    }
)
EXPERIMENT = _obj(
    {
        "key": STR,
        "applies_to": {"enum": list(APPLIES_TO)},
        "active": BOOL,
        "routing": {"enum": list(ROUTING_MODES)},
        "holdout": NUM,
        "min_share": OPT_NUM,
        "arms": {"type": "array", "items": ARM},
        "routing_log": {"type": "array", "items": {"type": "object"}},
    }
)
EXPERIMENTS = _obj(
    {"data": {"type": "array", "items": {"$ref": "#/components/schemas/Experiment"}}}
)
PATH = {
    "get": {
        "summary": (
            "Every experiment (ended ones too): arms, shares, figures with 95 % intervals, "
            "lift over the holdout and a verdict"
        ),
        "responses": {
            "200": {
                "description": "the experiments",
                "content": {"application/json": {"schema": EXPERIMENTS}},
            },
            "401": {"$ref": "#/components/responses/Error"},
            "503": {"$ref": "#/components/responses/Error"},
        },
    }
}
