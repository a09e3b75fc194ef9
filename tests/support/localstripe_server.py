"""localstripe for tests: the same launcher the demo uses (recovery.devtools.localstripe)."""

from recovery.devtools.localstripe import (
    DEFAULT_SECRET_KEY,
    PUBLISHABLE_KEY,
    LocalStripe,
    authenticate_payment_intent,
    fail_renewal,
    free_port,
    register_webhook,
    start_localstripe,
    wipe,
)

__all__ = [
    "DEFAULT_SECRET_KEY",
    "PUBLISHABLE_KEY",
    "LocalStripe",
    "authenticate_payment_intent",
    "fail_renewal",
    "free_port",
    "register_webhook",
    "start_localstripe",
    "wipe",
]
