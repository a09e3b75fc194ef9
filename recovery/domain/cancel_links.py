"""Signed cancel links: the business opens the flow without calling our API. Pure.

The business signs `customer`, `subscription`, `timestamp` and `return_url` with the shared
secret (RECOVERY_CANCEL_LINK_SECRET):

    signature = hex(HMAC-SHA256(secret, customer + "\\n" + subscription + "\\n" + timestamp
                                 + "\\n" + return_url))

Stripe ids and URLs never contain a newline, so the message is unambiguous. The timestamp (unix
seconds) bounds the link's life; the return URL is signed so a link cannot be turned into an
open redirect. `locale` may be added to the query unsigned: it only picks a language.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

# A link stamped a little in the future is accepted: the business's clock may run ahead.
CLOCK_SKEW_SECONDS = 300
STRIPE_ID = re.compile(r"^[A-Za-z]{2,8}_[A-Za-z0-9_]{1,247}$")


class LinkError(ValueError):
    """`expired` links get a friendly page; every other problem is a forgery or a typo (403)."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


@dataclass(frozen=True)
class SignedLink:
    customer: str
    subscription: str
    timestamp: int
    return_url: str
    signature: str
    locale: str | None = None


def link_message(customer: str, subscription: str, timestamp: int, return_url: str) -> bytes:
    return "\n".join((customer, subscription, str(timestamp), return_url)).encode()


def sign_link(
    secret: str, customer: str, subscription: str, timestamp: int, return_url: str
) -> str:
    message = link_message(customer, subscription, timestamp, return_url)
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify_link(
    secret: str, params: Mapping[str, str], now_ts: int, max_age_seconds: int
) -> SignedLink:
    """The link's fields if the signature matches and the link is fresh; LinkError otherwise.

    The signature is checked before the age, so an expired page is only ever shown for a link
    the business really issued.
    """
    customer = params.get("customer", "")
    subscription = params.get("subscription", "")
    raw_ts = params.get("timestamp", "")
    return_url = params.get("return_url", "")
    signature = params.get("signature", "")
    if not (STRIPE_ID.match(customer) and STRIPE_ID.match(subscription)):
        raise LinkError("the link names no valid customer and subscription")
    if not raw_ts.isdigit() or len(raw_ts) > 12:
        raise LinkError("the link has no valid timestamp")
    if not re.fullmatch(r"[0-9a-f]{64}", signature):
        raise LinkError("the link has no valid signature")
    timestamp = int(raw_ts)
    expected = sign_link(secret, customer, subscription, timestamp, return_url)
    if not hmac.compare_digest(expected, signature):
        raise LinkError("the link's signature does not match")
    if timestamp > now_ts + CLOCK_SKEW_SECONDS:
        raise LinkError("the link is stamped in the future")
    if now_ts - timestamp > max_age_seconds:
        raise LinkError("the link has expired", expired=True)
    locale = params.get("locale") or None
    return SignedLink(customer, subscription, timestamp, return_url, signature, locale)
