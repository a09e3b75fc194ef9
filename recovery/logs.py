"""Logging set-up shared by every entry point (web, worker, CLI).

`RECOVERY_LOG_FORMAT=json` writes one JSON object per line (`time`, `level`, `logger`,
`message`, and any `extra=` fields a call passes), for log shippers that index fields;
`text` (the default) is one readable line per record.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
# Our own handler carries this name, so configuring again replaces it instead of adding another.
HANDLER_NAME = "recovery"

# Loggers that are too chatty at INFO, and why each is turned down:
NOISY = (
    # The Twilio SDK logs request URLs (with recipients' phone numbers) at INFO, urllib3 the
    # same at DEBUG: PII stays out of our logs.
    "twilio.http_client",
    "urllib3.connectionpool",
    # APScheduler logs "Running job ..." and "... executed successfully" at INFO on every tick
    # of the worker (every second by default): two lines a second that say nothing.
    "apscheduler.executors.default",
)


def quiet_noisy_loggers() -> None:
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter(
            JSON_FIELDS,
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        )
    return logging.Formatter(TEXT_FORMAT)


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    """Root logging to stderr at `level`, as text or JSON lines; the noisy loggers turned down.
    Calling it again (the CLI, then create_app) replaces our handler, never doubles it. Where
    someone else set up the root logger first (pytest, an embedding app), theirs is left alone,
    as `logging.basicConfig` would."""
    root = logging.getLogger()
    quiet_noisy_loggers()
    if any(handler.get_name() != HANDLER_NAME for handler in root.handlers):
        return
    for handler in list(root.handlers):
        if handler.get_name() == HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(formatter(log_format))
    root.addHandler(handler)
    root.setLevel(level)
