"""SMS through Twilio's official SDK.

Twilio's Messages API has no idempotency key, so a crash between Twilio's answer and our
commit cannot be replayed blindly. Instead the sender asks Twilio, before any second attempt,
whether a message with our exact body already went to that number since the first attempt
(`find_sent`); only if none did does it send again. See services/outbox.py.

One client per process, shared by the worker's threads (its HTTP session reuses connections);
every request's timeout is capped to the provider call's deadline (adapters/deadline.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from recovery.adapters import deadline
from recovery.adapters.email import SendError

TIMEOUT_SECONDS = 30.0  # per request, when no deadline is shorter


class _DeadlineHttpClient(TwilioHttpClient):  # type: ignore[misc]
    """Twilio's requests-based client, its timeout capped to the current deadline."""

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        return super().request(
            method,
            url,
            params=params,
            data=data,
            headers=headers,
            auth=auth,
            timeout=deadline.cap(timeout or TIMEOUT_SECONDS),
            allow_redirects=allow_redirects,
        )


# Errors that no retry can fix (https://www.twilio.com/docs/api/errors): invalid or
# unreachable To, landline, region not enabled, unsubscribed recipient (21610: they texted STOP),
# message too long, and the same at the carrier level (30003-30008 are per message, so only
# the "unreachable/unknown destination" ones are permanent here).
PERMANENT_CODES = frozenset(
    {21211, 21214, 21217, 21219, 21408, 21610, 21612, 21614, 21617, 21635, 30005, 30006}
)
OPTED_OUT = 21610


class SmsSender(Protocol):
    def send(self, to: str, body: str) -> str: ...

    def find_sent(self, to: str, body: str, since: datetime) -> str | None: ...


class TwilioSms:
    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        messaging_service_sid: str = "",
        from_number: str = "",
        api_base: str = "",
    ) -> None:
        if not (messaging_service_sid or from_number):
            raise ValueError("set TWILIO_MESSAGING_SERVICE_SID or TWILIO_FROM_NUMBER")
        self.client = Client(account_sid, auth_token, http_client=_DeadlineHttpClient())
        if api_base:
            # A local stand-in (tests, dev): the SDK joins base_url and the resource path.
            self.client.api.base_url = api_base.rstrip("/")
        self.messaging_service_sid = messaging_service_sid
        self.from_number = from_number

    def send(self, to: str, body: str) -> str:
        params: dict[str, Any] = {"to": to, "body": body}
        if self.messaging_service_sid:
            params["messaging_service_sid"] = self.messaging_service_sid
        else:
            params["from_"] = self.from_number
        try:
            message = self.client.messages.create(**params)
        except TwilioRestException as exc:
            code = int(exc.code) if exc.code else None
            permanent = code in PERMANENT_CODES or (
                exc.status in (400, 404) and code is not None and code < 30000
            )
            raise SendError(
                f"Twilio {exc.status} error {code}", permanent=permanent, code=code
            ) from exc
        except (TwilioException, OSError) as exc:
            raise SendError(
                f"Twilio unavailable: {exc.__class__.__name__}", permanent=False
            ) from exc
        return str(message.sid)

    def find_sent(self, to: str, body: str, since: datetime) -> str | None:
        """The sid of a message with exactly this body sent to `to` at or after `since`."""
        try:
            for message in self.client.messages.stream(to=to, limit=100, page_size=50):
                created = message.date_created
                if created is not None and created < since.replace(microsecond=0):
                    break  # newest first: nothing older can be ours
                if (message.body or "") == body:
                    return str(message.sid)
        except (TwilioException, OSError) as exc:
            raise SendError(
                f"Twilio unavailable: {exc.__class__.__name__}", permanent=False
            ) from exc
        return None
