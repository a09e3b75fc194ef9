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

    from recovery.web import api, api_cases, errors, health, webhooks

    del api_cases  # imported for the routes it adds to the API blueprint

    errors.init_app(app)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(api.bp)
    return app
