"""Pure SMS rules: E.164 numbers, recorded consent, the recipient's quiet hours, segment
counting, keywords.

No I/O: the sender (services/outbox.py) asks these before every text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import phonenumbers

# GSM 03.38 basic character set (one septet each) and its extension table (escape + char = two
# septets). https://en.wikipedia.org/wiki/GSM_03.38
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")

# Twilio (like every carrier) splits long texts into concatenated segments whose user-data
# header takes 6 bytes: 160 -> 153 GSM-7 characters, 70 -> 67 UCS-2 code units.
# https://www.twilio.com/docs/glossary/what-sms-character-limit
GSM7_SINGLE, GSM7_MULTI = 160, 153
UCS2_SINGLE, UCS2_MULTI = 70, 67

# Words that revoke consent (Twilio's default opt-out keywords plus FCC 24-18's list,
# docs/messaging.md#sms-opt-out) and that restore it.
OPT_OUT_WORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT", "OPT OUT"}
)
OPT_IN_WORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})
# Customer metadata values that record SMS consent (or a date: the day it was given).
CONSENT_WORDS = frozenset({"true", "yes", "1", "y"})


@dataclass(frozen=True)
class Segments:
    encoding: str  # "GSM-7" | "UCS-2"
    units: int  # septets or UTF-16 code units
    count: int


def segments(text: str) -> Segments:
    """How many SMS segments `text` takes, and in which encoding."""
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENDED for ch in text):
        units = sum(2 if ch in GSM7_EXTENDED else 1 for ch in text)
        single, multi, encoding = GSM7_SINGLE, GSM7_MULTI, "GSM-7"
    else:
        units = len(text.encode("utf-16-le")) // 2  # astral characters (emoji) take two
        single, multi, encoding = UCS2_SINGLE, UCS2_MULTI, "UCS-2"
    count = 1 if units <= single else -(-units // multi)
    return Segments(encoding, units, count)


def e164(raw: str | None) -> str | None:
    """The number in E.164 when it is a valid, complete international number, else None.

    Stripe stores whatever the customer typed, so a number without a country code is refused
    rather than guessed (a wrong guess texts a stranger)."""
    if not raw or not raw.strip().startswith("+"):
        return None
    try:
        parsed = phonenumbers.parse(raw.strip(), None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def consent_recorded(metadata: Mapping[str, object] | None, key: str) -> bool:
    """The customer's metadata records SMS consent under `key` (the rules name it): one of
    CONSENT_WORDS, any case, or a date such as 2026-03-01. Anything else, or nothing, does
    not (docs/messaging.md#sms-consent: texts need the recipient's prior consent)."""
    value = str((metadata or {}).get(key, "")).strip().lower()
    return value in CONSENT_WORDS or (len(value) >= 8 and value[:4].isdigit())


@dataclass(frozen=True)
class QuietHours:
    """Texts go out only in [start, end) recipient-local time. The default 09:00-20:00 sits
    inside every window we know of: 08:00-21:00 federally in the US, 08:00-20:00 in Florida
    (47 CFR 64.1200(c)(1), Fla. Stat. 501.059; docs/messaging.md#quiet-hours)."""

    start: time = time(9, 0)
    end: time = time(20, 0)

    def __post_init__(self) -> None:
        if not self.start < self.end:
            raise ValueError("quiet hours: start must be before end (same day)")


def next_allowed(at: datetime, zone: str, hours: QuietHours) -> datetime:
    """`at` when it is inside the recipient's sending hours, else the next opening (UTC)."""
    tz = ZoneInfo(zone)
    local = at.astimezone(tz)
    if hours.start <= local.time() < hours.end:
        return at
    day = local.date() if local.time() < hours.start else local.date() + timedelta(days=1)
    opening = datetime.combine(day, hours.start, tz)
    return opening.astimezone(at.tzinfo)


def keyword(body: str) -> str | None:
    """'stop', 'start' or 'help' when an inbound text is one of those keywords."""
    word = " ".join(body.strip().upper().split()).strip(".!")
    if word in OPT_OUT_WORDS:
        return "stop"
    if word in OPT_IN_WORDS:
        return "start"
    if word in HELP_WORDS:
        return "help"
    return None


def mask_phone(number: str) -> str:
    """+4915112345678 -> +49*********78: enough to tell numbers apart in a log, no more."""
    if len(number) <= 5:
        return "*" * len(number)
    return number[:3] + "*" * (len(number) - 5) + number[-2:]


def mask_email(address: str) -> str:
    """kim@example.com -> k***@example.com."""
    local, at, domain = address.partition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"
