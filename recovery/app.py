"""The application factory: `create_app()` builds the Flask app from the runtime.

Blueprints, one per audience: Stripe's webhooks and Twilio's callbacks, the JSON API for the
business's systems, the subscriber pages (card update, cancel flow), the billing team's
dashboard, health, and the demo's pages (only with RECOVERY_DEMO=1, never in production).
What happens when an event arrives is listed in `recovery.services.registry`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from recovery.config import Settings
from recovery.logs import configure_logging
from recovery.resources import TEMPLATES
from recovery.runtime import Runtime
from recovery.services.registry import build_runtime
from recovery.web import (
    api,
    cancel_flow,
    card_update,
    dashboard,
    demo,
    embed,
    errors,
    health,
    home,
    i18n,
    ops_health,
    outreach,
    pauses,
    prometheus,
    shadow_pages,
    twilio_webhooks,
    webhooks,
)


def create_app(
    settings: Settings | None = None,
    *,
    runtime: Runtime | None = None,
    config: Mapping[str, Any] | None = None,
) -> Flask:
    """The application factory. With no arguments, settings come from the environment."""
    if runtime is None:
        runtime = build_runtime(settings or Settings.from_env())
    settings = runtime.settings
    app = Flask(__name__, template_folder=str(TEMPLATES), instance_path=str(settings.instance_path))
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.webhook_max_bytes,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.public_url.startswith("https://"),
        JSON_SORT_KEYS=False,
    )
    if config:
        app.config.update(config)
    app.extensions["recovery"] = runtime
    configure_logging(settings.log_level, settings.log_format)

    errors.init_app(app)
    i18n.init_app(app)
    shadow_pages.init_app(app)  # RECOVERY_MODE=shadow: no page step changes Stripe
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(twilio_webhooks.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(prometheus.bp)  # GET /metrics, read from the database per scrape
    app.register_blueprint(api.bp)  # /api/v1: every resource, and GET /api/v1/openapi.json
    app.register_blueprint(embed.bp)  # /embed/v1: the in-app banner
    cancel_flow.init_app(app)  # checks the cancel-flow rules and settings at start-up
    app.register_blueprint(cancel_flow.bp)
    card_update.init_app(app)  # /update/<token>, with its rate limits
    outreach.init_app(app)  # /annual/, /come-back/, /unsubscribe/<token>: offers and win-back
    pauses.init_app(app)  # /pause/<token>: a pause instead of a loss, from the final notice
    # Stripe's, Twilio's and the load balancer's calls are not rate limited: each stays out of
    # the limiter's per-request bookkeeping (about 0.4 ms a webhook).
    for machine_facing in (webhooks.bp, twilio_webhooks.bp, health.bp, embed.bp, prometheus.bp):
        app.extensions["card_update_limiter"].exempt(machine_facing)
    dashboard.init_app(app)  # /login, /dashboard...; after card_update, whose limiter it shares
    app.register_blueprint(ops_health.bp)  # /dashboard/health: `recovery doctor` for admins
    home.init_app(app)  # GET / (points to the dashboard) and /favicon.ico
    demo.init_app(app)  # /demo/... only with RECOVERY_DEMO=1 (`recovery demo`); never in production
    # Stripe's deliveries are answered in front of Flask (no request context, session, limiter).
    app.wsgi_app = webhooks.WebhookFastPath(app, app.wsgi_app)  # type: ignore[method-assign]
    return app
