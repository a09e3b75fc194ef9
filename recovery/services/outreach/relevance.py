"""Right before an outreach email goes out: is it still wanted? (`outreach:` subjects)"""

from __future__ import annotations

from sqlalchemy.orm import Session

from recovery.models import OutboxMessage
from recovery.services.outreach import links, term_offers, win_back


def still_wanted(session: Session, message: OutboxMessage) -> str | None:
    """The address did not unsubscribe, and the offer or the sequence is still open."""
    if message.customer_id and links.opted_out(session, message.customer_id, message.recipient):
        return "the recipient unsubscribed from these emails"
    kind = message.about.split(":")[1]
    if kind == term_offers.KIND:
        return term_offers.still_wanted(session, message)
    if kind == win_back.KIND:
        return win_back.still_wanted(session, message)
    return f"unknown outreach message kind {kind!r}"
