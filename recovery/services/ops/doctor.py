"""`recovery doctor` and /dashboard/health: every check that a live run depends on, each one
line of ok / warn / fail with what to do, and the steps no API can check.

Network checks (SMTP, DNS, Twilio, Stripe) never run inside a database transaction, and each is
bounded by `Probes.timeout`.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from recovery.runtime import Runtime
from recovery.services.ops import local_checks, mail_checks, stripe_checks, twilio_checks
from recovery.services.ops.checks import Check, ManualStep, Report, Status

__all__ = ["Check", "ManualStep", "Probes", "Report", "Status", "run"]


@dataclass(frozen=True)
class Probes:
    """How the network checks reach out. Tests trust their own certificate authority."""

    ssl_context: ssl.SSLContext | None = None  # SMTP TLS; default: the system's trusted CAs
    timeout: float = 10.0  # seconds per connection or DNS question


def run(rt: Runtime, probes: Probes | None = None) -> Report:
    probes = probes or Probes()
    settings, now = rt.settings, rt.clock.now()
    checks = local_checks.database(rt.db)
    if checks[0].status is Status.OK:  # heartbeats live in the database
        checks.append(local_checks.worker(rt.db, now))
    checks.append(local_checks.public_url(settings))
    if settings.is_shadow:
        checks.append(local_checks.mode(settings))
    events = stripe_checks.stripe_event_types(rt.handlers.on_event)
    stripe, manual = stripe_checks.stripe(settings, rt.rules, rt.gateway, events, now)
    checks += stripe
    checks += mail_checks.mail(
        settings,
        rt.rules.business.sender_email,
        ssl_context=probes.ssl_context,
        timeout=probes.timeout,
    )
    checks += twilio_checks.twilio(settings, timeout=probes.timeout)
    return Report(checks=checks, manual=manual)
