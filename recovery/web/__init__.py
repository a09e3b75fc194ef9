"""Blueprints, one per audience: Stripe webhooks, the JSON API, health."""

from __future__ import annotations

from flask import current_app

from recovery.runtime import Runtime


def runtime() -> Runtime:
    rt: Runtime = current_app.extensions["recovery"]
    return rt
