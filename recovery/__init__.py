"""recovery: win back subscription revenue for businesses that bill with Stripe."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from recovery.config import Settings
from recovery.runtime import Runtime

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def quiet_noisy_loggers() -> None:
    """The Twilio SDK logs request URLs (with recipients' phone numbers) at INFO; urllib3 the
    same at DEBUG. PII stays out of our logs."""
    for name in ("twilio.http_client", "urllib3.connectionpool"):
        logging.getLogger(name).setLevel(logging.WARNING)


def create_app(
    settings: Settings | None = None,
    *,
    runtime: Runtime | None = None,
    config: Mapping[str, Any] | None = None,
) -> Flask:
    """The application factory. With no arguments, settings come from the environment."""
    if runtime is None:
        runtime = Runtime.build(settings or Settings.from_env())
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
    logging.basicConfig(level=settings.log_level)
    quiet_noisy_loggers()

    from recovery import i18n
    from recovery.web import (
        api,
        api_cases,
        api_metrics,
        cancel_api,
        cancel_flow,
        card_update,
        dashboard,
        demo,
        errors,
        health,
        openapi,
        twilio_webhooks,
        webhooks,
    )

    del api_cases, api_metrics  # imported for the routes they add to the API blueprint

    errors.init_app(app)
    i18n.init_app(app)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(twilio_webhooks.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(api.bp)
    cancel_flow.init_app(app)  # checks the cancel-flow rules and settings at start-up
    app.register_blueprint(cancel_flow.bp)
    app.register_blueprint(cancel_api.bp)
    app.register_blueprint(openapi.bp)  # GET /api/v1/openapi.json
    card_update.init_app(app)  # /update/<token>, with its rate limits
    # Stripe's, Twilio's and the load balancer's calls are not rate limited: each stays out of
    # the limiter's per-request bookkeeping (about 0.4 ms a webhook).
    for machine_facing in (webhooks.bp, twilio_webhooks.bp, health.bp):
        app.extensions["card_update_limiter"].exempt(machine_facing)
    dashboard.init_app(app)  # /login, /dashboard...; after card_update, whose limiter it shares
    demo.init_app(app)  # /demo/... only with RECOVERY_DEMO=1 (`recovery demo`); never in production
    return app


# The cancel flow's due-action handlers. At import, not in create_app: a worker process
# (`recovery worker`) never creates the app but must run these actions.
from recovery.services import cancel_actions as _cancel_actions  # noqa: E402

_cancel_actions.register()
