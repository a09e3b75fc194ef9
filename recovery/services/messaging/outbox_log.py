"""Every message in the outbox, newest first, in full: what the demo's outbox page shows
(the demo has no SMTP server or Twilio account, so that page is where its messages are read).

In full means with the card-update link's token put back, as the sender does right before
sending: a live link. Only the demo's pages, which refuse to run in production, may show this.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from recovery.models import OutboxMessage
from recovery.runtime import Runtime
from recovery.services.card_update import links as card_update_links
from recovery.services.reporting import paging

PAGE_SIZE = 100
CHANNELS = ("email", "sms")


@dataclass(frozen=True)
class Message:
    id: int
    status: str
    channel: str
    template: str
    locale: str
    case_id: int | None
    recipient: str
    send_after: datetime
    sent_at: datetime | None
    last_error: str | None
    subject: str
    body: str


def messages(
    rt: Runtime, *, before: int | None, channel: str | None, limit: int = PAGE_SIZE
) -> paging.Slice[Message]:
    """A page of messages with ids below `before` (None: the newest), of one channel or all."""
    secret = rt.settings.secret_key

    def filled(text: str, row: OutboxMessage) -> str:
        token = card_update_links.message_token(secret, row.dedupe_key)
        return text.replace(card_update_links.PLACEHOLDER, token)

    def shown(found: paging.AnyRow) -> Message:
        row: OutboxMessage = found[0]
        return Message(
            id=row.id,
            status=str(row.status),
            channel=row.channel,
            template=row.template,
            locale=row.locale,
            case_id=row.case_id,
            recipient=row.recipient,
            send_after=row.send_after,
            sent_at=row.sent_at,
            last_error=row.last_error,
            subject=filled(row.subject, row),
            body=filled(row.body, row),
        )

    query = select(OutboxMessage)
    if channel in CHANNELS:
        query = query.where(OutboxMessage.channel == channel)
    after = None if before is None else (before,)
    with rt.db.reading() as session:
        return paging.newest_first(
            session, query, (OutboxMessage.id,), after=after, limit=limit, row=shown
        )
