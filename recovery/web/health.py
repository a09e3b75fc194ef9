"""GET /healthz: is the database reachable, and is some worker alive?"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from recovery.models import WorkerHeartbeat
from recovery.services.messaging.outbox import delivery_status
from recovery.web import runtime

bp = Blueprint("health", __name__)

WORKER_STALE_AFTER_SECONDS = 120


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    rt = runtime()
    try:
        with rt.db.transaction() as session:
            session.execute(text("SELECT 1"))
            last_beat = session.scalar(select(func.max(WorkerHeartbeat.beat_at)))
    except SQLAlchemyError as exc:
        down = {"status": "down", "database": f"unreachable ({exc.__class__.__name__})"}
        return jsonify(down), 503
    age = None if last_beat is None else (rt.clock.now() - last_beat).total_seconds()
    worker_ok = age is not None and age <= WORKER_STALE_AFTER_SECONDS
    body: dict[str, Any] = {
        "status": "ok" if worker_ok else "degraded",
        "database": "ok",
        "worker": {
            "last_heartbeat_age_seconds": None if age is None else round(age, 1),
            "ok": worker_ok,
        },
        "messages": delivery_status(rt.settings),
    }
    return jsonify(body), 200 if worker_ok else 503
