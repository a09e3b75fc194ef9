"""The outbox: messages written in the decision's transaction, sent by the worker after commit.

Each message is a row (`outbox_messages`) plus a due action (`outbox.send`, subject = what the
message is about, e.g. `case:<id>`), both written in the transaction that decided to send it;
so a message exists exactly when its decision committed, and cancelling a case's pending
actions cancels its messages' sends in the same transaction.

Delivery guarantee, when a worker dies after the provider accepted a message but before our
"sent" commit (the due action's lease expires and another worker runs it again):
- email: at least once. The re-send carries the same Message-ID (derived from the dedupe key),
  so mail clients and receiving systems can drop the copy. SMTP has no way to ask "did you
  already take this one?", and losing a reminder is worse than a rare duplicate with one id.
- SMS: effectively once. Twilio has no idempotency key, and a duplicate text costs the customer
  money and patience, so before any second attempt we list what Twilio sent to that number
  since the first attempt and, if our exact body is there, record that sid instead of sending.
  Twilio creates the message resource before it answers the POST, so a message it accepted is
  always found; one it never received is not, and is sent.
Permanent failures (hard bounce, invalid number, opted out) mark the message failed at once;
transient ones are retried with the due actions' backoff (1 min doubling to 6 h), then failed
after MAX_ATTEMPTS - about two days, so an SMTP or Twilio outage of a day loses nothing.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Integer, Table, bindparam, case, func, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from recovery.adapters.deadline import Deadline
from recovery.adapters.email import Email, SendError
from recovery.adapters.sms import OPTED_OUT
from recovery.config import Settings
from recovery.db import dialect_of, in_list
from recovery.domain import sms as sms_rules
from recovery.domain.timezones import customer_timezone
from recovery.models import (
    Customer,
    DueAction,
    MessageStatus,
    OutboxMessage,
    RecoveryCase,
)
from recovery.rules import Rules
from recovery.runtime import ActionContext, Claimed, Providers, RecordTogether, ThreePhase
from recovery.services.card_update import links as card_update_links
from recovery.services.messaging.consent import may_text, set_opt_out
from recovery.services.messaging.outbox_writes import CONFIRMATION as CONFIRMATION
from recovery.services.messaging.outbox_writes import MAX_ATTEMPTS as MAX_ATTEMPTS
from recovery.services.messaging.outbox_writes import SEND_KIND as SEND_KIND
from recovery.services.messaging.outbox_writes import cancel as cancel
from recovery.services.messaging.outbox_writes import cancel_many as cancel_many
from recovery.services.messaging.outbox_writes import enqueue as enqueue
from recovery.services.messaging.outbox_writes import enqueue_many as enqueue_many
from recovery.services.messaging.outbox_writes import finish as _finish
from recovery.services.outreach import links as outreach_links
from recovery.services.work import due_actions

log = logging.getLogger(__name__)

LOCAL_PROVIDER = "local-outbox"

# ---- providers ------------------------------------------------------------------------------


def delivery_status(settings: Settings) -> dict[str, str]:
    """What /healthz and the API say about where messages go."""
    email = "smtp" if settings.smtp_url else "local outbox only (RECOVERY_SMTP_URL not set)"
    twilio = settings.twilio_account_sid and settings.twilio_auth_token
    sms = "twilio" if twilio else "local outbox only (TWILIO_ACCOUNT_SID/AUTH_TOKEN not set)"
    return {"email": email, "sms": sms}


def _masked(row: OutboxMessage) -> str:
    if row.channel == "sms":
        return sms_rules.mask_phone(row.recipient)
    return sms_rules.mask_email(row.recipient)


# ---- sending (the worker): decide, call, record ----------------------------------------------


def _defer(ctx: ActionContext, row: OutboxMessage, at: datetime, why: str) -> None:
    """Send later, by a fresh action (this one completes): quiet hours, mostly."""
    row.send_after = at
    due_actions.schedule(
        ctx.session,
        kind=SEND_KIND,
        subject=row.about,
        dedupe_key=f"outbox:{row.dedupe_key}:at:{at.isoformat()}",
        due_at=at,
        now=ctx.clock.now(),
        payload={"message_id": row.id},
        max_attempts=MAX_ATTEMPTS,
    )
    log.info("message %s deferred to %s: %s", row.id, at.isoformat(), why)


def _sms_blocked(ctx: ActionContext, row: OutboxMessage, customer: Customer | None) -> str | None:
    return may_text(ctx.session, customer, row.recipient, ctx.runtime.rules.reminders)


def _filled(ctx: ActionContext, row: OutboxMessage, text: str) -> str:
    """The text with its card-update link's token put back (it is never stored)."""
    return card_update_links.fill(ctx.session, text, row.dedupe_key, ctx.runtime.settings)


def _email(ctx: ActionContext, row: OutboxMessage) -> Email:
    """An email's parts, decided in the claim's transaction; the mailer makes it into bytes in
    the call step, on a provider thread: the loop that claims, decides and records is the
    worker's limit."""
    rules: Rules = ctx.runtime.rules
    settings: Settings = ctx.runtime.settings
    business = rules.business
    # RECOVERY_MAIL_FROM may be a bare address or "Dana at Acme <billing@acme.example>"; its
    # display name, when it has one, replaces the one built from the rules.
    return Email(
        sender=(
            settings.mail_from_name or f"{business.sender_name} at {business.name}",
            settings.mail_from_address or business.sender_email,
        ),
        reply_to=(f"{business.sender_name} at {business.name}", business.reply_to),
        to=row.recipient,
        subject=_filled(ctx, row, row.subject),
        body=_filled(ctx, row, row.body),
        dedupe_key=row.dedupe_key,
        date=ctx.clock.now(),
        list_unsubscribe=outreach_links.list_unsubscribe_url(row, settings),
    )


@dataclass(frozen=True)
class Send:
    """One message, ready to hand to its provider."""

    message_id: int
    channel: str
    email: Email | None = None  # made into bytes in the call step; its Message-ID is stable
    to: str = ""  # SMS
    text: str = ""  # SMS, the same on every attempt (the link's token is derived)
    look_up_since: datetime | None = None  # SMS: ask Twilio first, an earlier try may have gone
    attempt: int = 0  # this action's attempt, recorded on the message with the outcome
    last_try: bool = False  # a transient failure now fails the message


@dataclass(frozen=True)
class Sent:
    provider_id: str | None = None
    error: SendError | None = None  # permanent, or transient on the last attempt


def decide_send(ctx: ActionContext, action: Claimed) -> Send | None:
    # Read afresh: a round decided together that failed (its savepoint rolled back) may have
    # left a count the database no longer holds (_count_attempts bypasses the flush).
    row = ctx.session.get(
        OutboxMessage,
        int(action.payload["message_id"]),
        with_for_update=True,
        populate_existing=True,
    )
    counted: list[tuple[int, int]] = []
    plan = _decide_send(ctx, action, row, counted)
    _count_attempts(ctx.session, counted)
    return plan


def decide_sends(ctx: ActionContext, actions: Sequence[Claimed]) -> list[Send | None]:
    """`decide_send` for a round's sends: their messages locked in one query, and the cases
    the relevance checks read (`still_wanted`) loaded in one more, so each check finds its
    case in the session instead of asking the database again."""
    ids = sorted({int(action.payload["message_id"]) for action in actions})
    dialect = dialect_of(ctx.session)
    query = select(OutboxMessage).where(in_list(OutboxMessage.id, "ids", dialect))
    locked = query.order_by(OutboxMessage.id).with_for_update()
    rows = {row.id: row for row in ctx.session.scalars(locked, {"ids": ids})}
    case_ids = sorted({r.case_id for r in rows.values() if r.case_id is not None})
    of_cases = select(RecoveryCase).where(in_list(RecoveryCase.id, "ids", dialect))
    cases = ctx.session.scalars(of_cases, {"ids": case_ids}).all()
    counted: list[tuple[int, int]] = []
    plans = [_decide_send(ctx, a, rows.get(int(a.payload["message_id"])), counted) for a in actions]
    del cases  # held until here: the session keeps only objects someone refers to
    _count_attempts(ctx.session, counted)
    return plans


def _count_attempts(session: Session, counted: list[tuple[int, int]]) -> None:
    """The messages' attempt counts (message id, count), written before the calls: one UPDATE
    a count (a round's are all 1 but for retries), where the flush wrote one a message - a
    fifth of a worker's statements (PostgreSQL's log, bench/worker_throughput.py)."""
    by_count: dict[int, list[int]] = {}
    for message_id, count in counted:
        by_count.setdefault(count, []).append(message_id)
    statement = _count_attempts_statement(dialect_of(session))
    for count, ids in sorted(by_count.items()):
        session.execute(statement, {"ids": sorted(ids), "count": count})


@functools.cache
def _count_attempts_statement(dialect: str) -> Any:
    count = bindparam("count", type_=Integer())
    return (
        update(_MESSAGES)
        .where(in_list(_m.id, "ids", dialect), _m.attempts < count)
        .values(attempts=count)
    )


def _decide_send(
    ctx: ActionContext,
    action: Claimed,
    row: OutboxMessage | None,
    counted: list[tuple[int, int]],
) -> Send | None:
    now = ctx.clock.now()
    if row is None or row.status != MessageStatus.PENDING:
        return None
    check = ctx.runtime.handlers.still_wanted.get(row.about.partition(":")[0])
    reason = check(ctx.session, row) if check is not None else None
    if reason is not None:
        _finish(row, MessageStatus.CANCELLED, now, reason)
        return None
    if row.channel == "sms":
        customer = ctx.session.get(Customer, row.customer_id) if row.customer_id else None
        blocked = _sms_blocked(ctx, row, customer)
        if blocked is not None:
            _finish(row, MessageStatus.CANCELLED, now, blocked)
            return None
        zone = customer_timezone(
            customer.address_country if customer else None,
            customer.preferred_locales if customer else (),
        )
        hours = ctx.runtime.rules.reminders.sms
        allowed = sms_rules.next_allowed(now, zone, hours)
        if allowed > now:
            _defer(ctx, row, allowed, "outside the recipient's sending hours")
            return None
    # An earlier attempt may have reached the provider (a timeout after Twilio took the text, a
    # worker killed before recording it). The count is committed before the call.
    retried = action.attempts > 1 or row.attempts > 0
    if action.attempts > row.attempts:
        # Written for the round in one statement (_count_attempts), not by the flush.
        set_committed_value(row, "attempts", action.attempts)
        counted.append((row.id, action.attempts))
    provider = ctx.runtime.mailer if row.channel == "email" else ctx.runtime.sms
    if provider is None:
        log.info(
            "%s to %s (%s, no provider configured; kept in the outbox): %s",
            row.channel,
            _masked(row),
            row.template,
            row.subject or row.body[:60],
        )
        row.provider_id = LOCAL_PROVIDER
        _sent(row, now)
        return None
    last_try = action.attempts >= MAX_ATTEMPTS
    if row.channel == "email":
        email = _email(ctx, row)
        return Send(row.id, "email", email=email, attempt=action.attempts, last_try=last_try)
    return Send(
        row.id,
        "sms",
        to=row.recipient,
        text=_filled(ctx, row, row.body),
        look_up_since=(row.created_at if row.sent_at is None else row.sent_at) if retried else None,
        last_try=last_try,
    )


def call_send(providers: Providers, send: Send, deadline: Deadline) -> Sent:
    """The provider call. Email: the same Message-ID on every attempt (at most a copy with the
    same id after a crash). SMS: after a first attempt, ask Twilio whether it already took this
    text before sending it again."""
    try:
        if send.email is not None:
            assert providers.mailer is not None
            return Sent(providers.mailer.send(send.email))
        assert providers.sms is not None
        if send.look_up_since is not None:
            found = providers.sms.find_sent(send.to, send.text, send.look_up_since)
            if found is not None:
                log.info(
                    "message %s was accepted by Twilio before a crash: %s", send.message_id, found
                )
                return Sent(found)
        return Sent(providers.sms.send(send.to, send.text))
    except SendError as exc:
        if exc.permanent or send.last_try:
            return Sent(error=exc)
        raise  # transient: the due action retries with backoff


# Sent, whatever happened to the row meanwhile: the provider took it. Built once on the table
# (no ORM bookkeeping), run for a round's sent messages in one executemany.
_MESSAGES = cast(Table, OutboxMessage.__table__)
_m = _MESSAGES.c
_MARK_SENT = (
    update(_MESSAGES)
    .where(_m.id == bindparam("b_id"))
    .values(
        status=MessageStatus.SENT,
        sent_at=bindparam("b_now", type_=_m.sent_at.type),
        finished_at=bindparam("b_now", type_=_m.finished_at.type),
        last_error=None,
        provider_id=bindparam("b_provider", type_=_m.provider_id.type),
        attempts=case(
            (_m.attempts < bindparam("b_attempt", type_=Integer()), bindparam("b_attempt")),
            else_=_m.attempts,
        ),
    )
)


def _sent_values(send: Send, sent: Sent, now: datetime) -> dict[str, Any]:
    return {
        "b_id": send.message_id,
        "b_now": now,
        "b_provider": sent.provider_id,
        "b_attempt": send.attempt,
    }


@functools.cache
def _mark_all_sent() -> Any:
    """`_MARK_SENT` for a round on PostgreSQL: one UPDATE ... FROM unnest(ids, provider ids,
    attempts), where an executemany ran (and psycopg's pipeline answered) one statement a
    message."""
    arrays = (
        bindparam("b_ids", type_=postgresql.ARRAY(Integer())),
        bindparam("b_providers", type_=postgresql.ARRAY(_m.provider_id.type)),
        bindparam("b_attempts", type_=postgresql.ARRAY(Integer())),
    )
    sent = func.unnest(*arrays).table_valued("id", "provider", "attempt").render_derived()
    return (
        update(_MESSAGES)
        .where(_m.id == sent.c.id)
        .values(
            status=MessageStatus.SENT,
            sent_at=bindparam("b_now", type_=_m.sent_at.type),
            finished_at=bindparam("b_now", type_=_m.finished_at.type),
            last_error=None,
            provider_id=sent.c.provider,
            attempts=func.greatest(_m.attempts, sent.c.attempt),
        )
    )


def record_sent(ctx: ActionContext, items: Sequence[tuple[Claimed, Send, Sent]]) -> None:
    """A round's sent messages marked sent in one statement (their actions are done already)."""
    if not items:
        return
    now = ctx.clock.now()
    if dialect_of(ctx.session) != "postgresql":
        ctx.session.execute(_MARK_SENT, [_sent_values(send, sent, now) for _, send, sent in items])
        return
    params = {
        "b_ids": [send.message_id for _, send, _ in items],
        "b_providers": [sent.provider_id for _, _, sent in items],
        "b_attempts": [send.attempt for _, send, _ in items],
        "b_now": now,
    }
    ctx.session.execute(_mark_all_sent(), params)


def record_send(ctx: ActionContext, action: Claimed, send: Send, sent: Sent) -> None:
    now = ctx.clock.now()
    if sent.error is None:
        ctx.session.execute(_MARK_SENT, _sent_values(send, sent, now))
        return
    row = ctx.session.get(OutboxMessage, send.message_id, with_for_update=True)
    if row is None:
        return
    row.attempts = max(row.attempts, send.attempt)
    _finish(row, MessageStatus.FAILED, now, str(sent.error))
    if row.channel == "sms" and sent.error.code == OPTED_OUT:
        set_opt_out(ctx.session, row.recipient, True, "twilio_21610", now)
    log.warning("message %s to %s failed: %s", row.id, _masked(row), sent.error)


def _sent(row: OutboxMessage, now: datetime) -> None:
    row.status = MessageStatus.SENT
    row.sent_at = now
    row.finished_at = now
    row.last_error = None


run_send = ThreePhase(
    decide=decide_send,
    call=call_send,
    record=record_send,
    together=RecordTogether(applies=lambda sent: sent.error is None, record=record_sent),
    decide_many=decide_sends,
)


# ---- reading --------------------------------------------------------------------------------


def messages_about(session: Session, about: str) -> list[dict[str, Any]]:
    """The messages about a case (or notice), for the API: status, errors, where to."""
    rows = session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.about == about)
        .order_by(OutboxMessage.send_after, OutboxMessage.id)
    ).all()
    errors = {
        a.dedupe_key: a.last_error
        for a in session.scalars(
            select(DueAction).where(DueAction.subject == about, DueAction.kind == SEND_KIND)
        )
    }
    return [
        {
            "id": r.id,
            "channel": r.channel,
            "template": r.template,
            "step": r.step,
            "locale": r.locale,
            "to": _masked(r),
            "subject": r.subject or None,
            "send_after": r.send_after.isoformat(),
            "status": r.status,
            "provider": r.provider_id,
            "attempts": r.attempts,
            "last_error": r.last_error or errors.get(f"outbox:{r.dedupe_key}"),
            "sent_at": r.sent_at.isoformat() if r.sent_at else None,
        }
        for r in rows
    ]
