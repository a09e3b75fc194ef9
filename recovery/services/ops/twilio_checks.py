"""Will our texts go out? Twilio takes the credentials, the account is active, and the sender
(a messaging service with numbers, or a number of this account able to text) exists. Reads
only: nothing is sent."""

from __future__ import annotations

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from recovery.config import ALPHANUMERIC_SENDER, Settings
from recovery.services.ops.checks import Check, fail, ok, warn


def _client(settings: Settings, timeout: float) -> Client:
    client = Client(
        settings.twilio_account_sid,
        settings.twilio_auth_token,
        http_client=TwilioHttpClient(timeout=timeout),
    )
    if settings.twilio_api_base:  # a local stand-in (tests): the same paths on another host
        client.api.base_url = settings.twilio_api_base.rstrip("/")
        client.messaging.base_url = settings.twilio_api_base.rstrip("/")
    return client


def _unreachable(name: str, exc: Exception) -> Check:
    return fail(
        name,
        f"Twilio did not answer ({exc.__class__.__name__})",
        "check that this machine reaches api.twilio.com (or TWILIO_API_BASE), then run again",
    )


def twilio(settings: Settings, *, timeout: float) -> list[Check]:
    if not (settings.twilio_account_sid and settings.twilio_auth_token):
        return [
            warn(
                "Twilio",
                "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN unset: texts stay in the local outbox",
                "set both (Twilio Console, Account info) if your reminder steps include SMS",
            )
        ]
    client = _client(settings, timeout)
    try:
        account = client.api.v2010.accounts(settings.twilio_account_sid).fetch()
    except TwilioRestException as exc:
        if exc.status in (401, 403, 404):
            return [
                fail(
                    "Twilio account",
                    f"Twilio refused the credentials ({exc.status}, error {exc.code})",
                    "copy the Account SID and Auth Token from the Twilio Console again "
                    "(rotating the token ends the old one)",
                )
            ]
        return [_unreachable("Twilio account", exc)]
    except (TwilioException, OSError) as exc:
        return [_unreachable("Twilio account", exc)]
    if account.status != "active":
        checked = fail(
            "Twilio account",
            f"the account is {account.status}: Twilio sends nothing",
            "reactivate it in the Twilio Console (billing, or Twilio support)",
        )
    elif (account.type or "").lower() == "trial":
        checked = warn(
            "Twilio account",
            "a trial account: texts reach verified numbers only, prefixed by Twilio's trial note",
            "upgrade the account in the Twilio Console before a live run",
        )
    else:
        checked = ok("Twilio account", f"{account.friendly_name or 'account'} is active")
    return [checked, _sender(client, settings)]


def _sender(client: Client, settings: Settings) -> Check:
    service, number = settings.twilio_messaging_service_sid, settings.twilio_from_number
    try:
        if service:
            return _service(client, service)
        if ALPHANUMERIC_SENDER.fullmatch(number) and not number.startswith("+"):
            return ok(
                "Twilio sender",
                f"alphanumeric sender ID {number!r} (one-way; not allowed in the US and Canada)",
            )
        found = client.incoming_phone_numbers.list(phone_number=number, limit=1)
    except TwilioRestException as exc:
        if exc.status == 404 and service:
            return fail(
                "Twilio sender",
                f"no messaging service {service} in this account",
                "copy the SID (MG...) from Messaging > Services into TWILIO_MESSAGING_SERVICE_SID",
            )
        return _unreachable("Twilio sender", exc)
    except (TwilioException, OSError) as exc:
        return _unreachable("Twilio sender", exc)
    if not found:
        return fail(
            "Twilio sender",
            f"{number} is not a number of this account",
            "set TWILIO_FROM_NUMBER to one of Phone Numbers > Active numbers (E.164), or use "
            "a messaging service (TWILIO_MESSAGING_SERVICE_SID)",
        )
    capabilities = found[0].capabilities or {}
    if not capabilities.get("sms", capabilities.get("SMS", False)):
        return fail(
            "Twilio sender",
            f"{number} cannot send SMS",
            "buy or port a number with SMS capability, or use a messaging service",
        )
    return ok("Twilio sender", f"{number} belongs to the account and can text")


def _service(client: Client, sid: str) -> Check:
    service = client.messaging.v1.services(sid).fetch()
    numbers = client.messaging.v1.services(sid).phone_numbers.list(limit=1)
    if not numbers:
        return warn(
            "Twilio sender",
            f"messaging service {service.friendly_name!r} has no phone number in its sender pool",
            "add a number to the service's sender pool (alphanumeric senders were not checked)",
        )
    return ok("Twilio sender", f"messaging service {service.friendly_name!r} with a number")
