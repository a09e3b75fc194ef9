"""Banner tokens: short-lived and signed by the business's backend, so a browser can ask for
one customer's billing status without an API key (`/embed/v1`, README "In-app notice").

    token     = "v1." + customer + "." + timestamp + "." + signature
    signature = hex(HMAC-SHA256(RECOVERY_EMBED_SECRET, "v1\\n" + customer + "\\n" + timestamp))

`timestamp` is when it was minted, in unix seconds; a token is good for MAX_AGE_SECONDS after
that, allowing SKEW_SECONDS for a server clock that runs ahead. Pure: the caller passes `now`.
"""

from __future__ import annotations

import hashlib
import hmac
import re

VERSION = "v1"
MAX_AGE_SECONDS = 600
SKEW_SECONDS = 60
TOKEN = re.compile(r"v1\.(cus_[A-Za-z0-9_]{1,250})\.(\d{1,12})\.([0-9a-f]{64})")


def signature(secret: str, customer: str, timestamp: int) -> str:
    message = f"{VERSION}\n{customer}\n{timestamp}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def mint(secret: str, customer: str, timestamp: int) -> str:
    """What the business's backend does (README shows it in Python and JavaScript)."""
    return f"{VERSION}.{customer}.{timestamp}.{signature(secret, customer, timestamp)}"


def verify(secret: str, token: str, now: int) -> str | None:
    """The customer id a token was minted for, or None when it is malformed, forged, expired or
    minted in the future. The signature is compared in constant time."""
    match = TOKEN.fullmatch(token)
    if match is None or not secret:
        return None
    customer, timestamp, given = match[1], int(match[2]), match[3]
    if not hmac.compare_digest(given, signature(secret, customer, timestamp)):
        return None
    if not timestamp - SKEW_SECONDS <= now < timestamp + MAX_AGE_SECONDS:
        return None
    return customer
