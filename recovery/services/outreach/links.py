"""The login-free links outreach messages carry, and the marketing opt-outs they lead to.

One token per message, several pages: `/annual/<token>` (an annual-term offer),
`/come-back/<token>` (a win-back), `/unsubscribe/<token>` (any of them; also the message's
`List-Unsubscribe` header, RFC 8058). The token is HMAC-SHA256(secret key, message dedupe key),
as for card-update links (`card_update.links.message_token`): the stored body holds the same
placeholder, which the sender fills right before sending, so neither the outbox nor this table
ever holds a usable token - a leaked database switches nobody's plan.

Opt-outs are per address at a customer (per contact): one person unsubscribing does not silence
the others. They stop every later win-back and annual offer to that address, never a reminder
about money still owed (docs/messaging.md#transactional-and-commercial-email).
"""

from __future__ import annotations

import hmac
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from recovery.config import Settings
from recovery.db import execute_count, insert_or_ignore
from recovery.models import MarketingOptOut, OutboxMessage, OutreachLink
from recovery.services.card_update.links import (
    PLACEHOLDER,
    TOKEN_SHAPE,
    message_token,
    token_hash,
)

LINK_DAYS = 60  # a note is read days after it arrives; an offer page stays open two months
ABOUT_PREFIX = "outreach"  # outbox subjects: outreach:term_offer:<id>, outreach:win_back:<id>
PAGES = {"term_offer": "annual", "win_back": "come-back"}


def about(kind: str, row_id: int) -> str:
    return f"{ABOUT_PREFIX}:{kind}:{row_id}"


def stored_url(settings: Settings, page: str) -> str:
    """A page's URL as stored in a message body: the sender puts the token in."""
    return f"{settings.public_url.rstrip('/')}/{page}/{PLACEHOLDER}"


def issue(
    session: Session,
    *,
    message_key: str,
    kind: str,
    customer_id: str,
    recipient: str,
    settings: Settings,
    now: datetime,
    sent_at: datetime,
    contact_id: int | None = None,
    term_offer_id: int | None = None,
    win_back_id: int | None = None,
) -> None:
    """The link row of the message with this dedupe key (once; again is a no-op)."""
    insert_or_ignore(
        session,
        OutreachLink,
        {
            "token_hash": token_hash(message_token(settings.secret_key, message_key)),
            "message_key": message_key,
            "kind": kind,
            "customer_id": customer_id,
            "recipient": recipient,
            "contact_id": contact_id,
            "term_offer_id": term_offer_id,
            "win_back_id": win_back_id,
            "created_at": now,
            "expires_at": max(now, sent_at) + timedelta(days=LINK_DAYS),
        },
        ["message_key"],
    )


def find(
    session: Session, token: str, now: datetime, *, lock: bool = False, any_state: bool = False
) -> OutreachLink | None:
    """The live link behind a token, or None (malformed, unknown, expired or revoked).
    `any_state`: expired and revoked links too (unsubscribing must keep working)."""
    if not TOKEN_SHAPE.fullmatch(token):
        return None
    digest = token_hash(token)
    query = select(OutreachLink).where(OutreachLink.token_hash == digest)
    if lock:
        query = query.with_for_update()
    link = session.scalars(query).one_or_none()
    if link is None or not hmac.compare_digest(link.token_hash, digest):
        return None
    if not any_state and (link.revoked_at is not None or link.expires_at <= now):
        return None
    return link


def record_open(link: OutreachLink, now: datetime) -> None:
    link.opened_at = link.opened_at or now


def list_unsubscribe_url(message: OutboxMessage, settings: Settings) -> str | None:
    """The `List-Unsubscribe` URL of an outreach email, with its token; None for every other
    message (reminders are transactional: no unsubscribe from a debt)."""
    if not message.about.startswith(f"{ABOUT_PREFIX}:") or message.channel != "email":
        return None
    token = message_token(settings.secret_key, message.dedupe_key)
    return f"{settings.public_url.rstrip('/')}/unsubscribe/{token}"


# ---- opt-outs -----------------------------------------------------------------------------------


def opted_out(session: Session, customer_id: str, email: str) -> bool:
    key = (customer_id, email.strip().lower())
    return session.get(MarketingOptOut, key) is not None


def opt_out(session: Session, customer_id: str, email: str, via: str, now: datetime) -> bool:
    """Record the opt-out (once). True when it is new."""
    values = {"customer_id": customer_id, "email": email.strip().lower(), "via": via, "at": now}
    return insert_or_ignore(session, MarketingOptOut, values, ["customer_id", "email"])


def revoke_for_contact(session: Session, contact_id: int, now: datetime) -> int:
    return execute_count(
        session,
        update(OutreachLink)
        .where(OutreachLink.contact_id == contact_id, OutreachLink.revoked_at.is_(None))
        .values(revoked_at=now),
    )
