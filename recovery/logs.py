"""Logging set-up shared by every entry point (web, worker, CLI)."""

from __future__ import annotations

import logging


def quiet_noisy_loggers() -> None:
    """The Twilio SDK logs request URLs (with recipients' phone numbers) at INFO; urllib3 the
    same at DEBUG. PII stays out of our logs."""
    for name in ("twilio.http_client", "urllib3.connectionpool"):
        logging.getLogger(name).setLevel(logging.WARNING)
