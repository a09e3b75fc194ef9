"""GET /healthz: is the database reachable, and is some worker alive?"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from recovery.services.messaging.outbox import delivery_status
from recovery.services.work import health
from recovery.web import runtime

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    rt = runtime()
    found = health.check(rt)
    if found.database_error is not None:
        down = {"status": "down", "database": f"unreachable ({found.database_error})"}
        return jsonify(down), 503
    age = found.heartbeat_age_seconds
    body: dict[str, Any] = {
        "status": "ok" if found.worker_ok else "degraded",
        "database": "ok",
        "worker": {
            "last_heartbeat_age_seconds": None if age is None else round(age, 1),
            "ok": found.worker_ok,
        },
        "messages": delivery_status(rt.settings),
    }
    return jsonify(body), 200 if found.worker_ok else 503
