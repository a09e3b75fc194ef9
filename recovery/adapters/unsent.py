"""Shadow mode's stand-ins for a mail or SMS provider that is not configured: without them an
outbox message would be "kept in the local outbox" and marked sent; with them it is decided as
if it would go out, and then recorded as shadow (`services.work.shadow`). Never called: shadow
mode skips every provider call."""

from __future__ import annotations

from datetime import datetime

from recovery.adapters.email import Outgoing


class NeverSent(RuntimeError):
    """A shadow-mode stand-in was called: a bug, since shadow mode calls no provider."""


class UnsentMailer:
    def send(self, message: Outgoing) -> str:
        raise NeverSent("shadow mode sends no email")


class UnsentSms:
    def send(self, to: str, body: str) -> str:
        raise NeverSent("shadow mode sends no text")

    def find_sent(self, to: str, body: str, since: datetime) -> str | None:
        raise NeverSent("shadow mode asks no SMS provider")
