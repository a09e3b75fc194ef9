"""Stripe webhook signature verification, pure and with the clock passed in.

Algorithm (https://docs.stripe.com/webhooks, stripe-python's _webhook.py): the
`Stripe-Signature` header holds `t=<unix>` and one or more `v1=<hex>`; each `v1` is
HMAC-SHA256(secret, f"{t}.{raw body}"). Any `v1` matching any configured secret passes - while a
secret is being rolled Stripe signs with both. Other schemes (v0) are ignored. Only stale
timestamps are rejected, as the SDK does; the SDK itself is not used here because it reads the
wall clock and decodes the body as text first.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

DEFAULT_TOLERANCE_SECONDS = 300
MAX_HEADER_LENGTH = 4096


class SignatureError(ValueError):
    """The request is not a genuine, fresh Stripe delivery; the message says why."""


def parse_header(header: str) -> tuple[int, list[str]]:
    if len(header) > MAX_HEADER_LENGTH:
        raise SignatureError("Stripe-Signature header is too long")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            # isascii: str.isdigit() also accepts digits like "²" that int() refuses
            if not (value.isascii() and value.isdigit()) or len(value) > 12:
                raise SignatureError("Stripe-Signature header has an invalid timestamp")
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
    if timestamp is None:
        raise SignatureError("Stripe-Signature header has no timestamp")
    if not signatures:
        raise SignatureError("Stripe-Signature header has no v1 signature")
    return timestamp, signatures


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The v1 signature Stripe would send (used by tests and the demo's local deliveries)."""
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def verify(
    body: bytes,
    header: str | None,
    secrets: Sequence[str],
    now: float,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> None:
    """Return if `header` proves Stripe sent `body` recently; raise SignatureError otherwise."""
    if not header:
        raise SignatureError("missing Stripe-Signature header")
    if not secrets:
        raise SignatureError("no webhook signing secret is configured")
    timestamp, signatures = parse_header(header)
    matched = False
    for secret in secrets:
        expected = sign(body, secret, timestamp)
        # compare against every v1 without stopping early, so timing reveals nothing
        for candidate in signatures:
            # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, i.e.
            # a 500, for a forged header), and a hex digest never matches one anyway.
            matched |= hmac.compare_digest(
                expected.encode(), candidate.encode("utf-8", "surrogatepass")
            )
    if not matched:
        raise SignatureError("no v1 signature matches the body for any configured secret")
    if tolerance > 0 and timestamp < now - tolerance:
        raise SignatureError(f"timestamp is older than the {tolerance} s tolerance")
