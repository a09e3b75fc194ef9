"""GET /metrics: Prometheus's text format, every figure read from the database at scrape time
(`services.ops.prometheus`), so any web process answers the same.

With RECOVERY_METRICS_TOKEN set, a scrape must carry `Authorization: Bearer <token>` (401
otherwise); Prometheus's `authorization` scrape setting sends it.
"""

from __future__ import annotations

import hmac
import logging

from flask import Blueprint, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy.exc import DBAPIError

from recovery.services.ops.prometheus import DatabaseCollector
from recovery.web import runtime

log = logging.getLogger(__name__)

bp = Blueprint("prometheus", __name__)


def _authorized(token: str) -> bool:
    if not token:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token)


@bp.get("/metrics")
def metrics() -> Response:
    rt = runtime()
    if not _authorized(rt.settings.metrics_token):
        return Response(
            "metrics need Authorization: Bearer <RECOVERY_METRICS_TOKEN>\n",
            status=401,
            mimetype="text/plain",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(rt))
    try:
        body = generate_latest(registry)
    except DBAPIError as exc:
        log.error("metrics: database unavailable: %s", exc.__class__.__name__)
        return Response("database unavailable\n", status=503, mimetype="text/plain")
    return Response(
        body, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"}
    )
