"""By reminder channel: of the recoveries the customer made (every trigger but our retry and
Stripe's), the channel of the last reminder actually sent for the case before the payment
(`email`, `sms`), or `none` when the customer paid before any reminder went out."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from recovery.domain.cases import CaseStatus
from recovery.models import MessageStatus, OutboxMessage, RecoveryCase
from recovery.services.reporting.metrics.cohort import AUTOMATIC
from recovery.services.reporting.metrics.result import Keyed, Tally


def reminder_channels(
    session: Session, cohort: ColumnElement[bool], customer_made: Tally
) -> tuple[Keyed, ...]:
    """`customer_made`: the cohort's recoveries the customer made; those with no reminder sent
    before the payment are the `none` row."""
    return channels_of(last_channels(session, cohort), customer_made)


def last_channels(
    session: Session, cohort: ColumnElement[bool], *, by_day: bool = False
) -> list[tuple[Any, ...]]:
    """(channel, recoveries, amount) of the last reminder sent before each of the cohort's
    recoveries the customer made; `by_day`: with the day the case opened first (the rollups)."""
    ranked = (
        select(
            func.date(RecoveryCase.opened_at).label("day"),
            OutboxMessage.channel.label("channel"),
            RecoveryCase.amount_recovered.label("amount"),
            func.row_number()
            .over(
                partition_by=OutboxMessage.case_id,
                order_by=(OutboxMessage.sent_at.desc(), OutboxMessage.id.desc()),
            )
            .label("rn"),
        )
        .join(RecoveryCase, RecoveryCase.id == OutboxMessage.case_id)
        .where(cohort, RecoveryCase.status == CaseStatus.RECOVERED)
        .where(RecoveryCase.recovered_via.not_in(AUTOMATIC))
        .where(OutboxMessage.status == MessageStatus.SENT)
        .where(OutboxMessage.sent_at <= RecoveryCase.closed_at)
        .subquery()
    )
    keys = [ranked.c.day, ranked.c.channel] if by_day else [ranked.c.channel]
    rows = session.execute(
        select(*keys, func.count(), func.coalesce(func.sum(ranked.c.amount), 0))
        .where(ranked.c.rn == 1)
        .group_by(*keys)
    ).all()
    return [tuple(r) for r in rows]


def channels_of(rows: Iterable[Sequence[Any]], customer_made: Tally) -> tuple[Keyed, ...]:
    found: dict[str, tuple[int, int]] = {}
    for channel, n, amount in rows:
        was = found.get(str(channel), (0, 0))
        found[str(channel)] = (was[0] + int(n), was[1] + int(amount))
    email, sms = found.pop("email", (0, 0)), found.pop("sms", (0, 0))
    others = [Keyed(k, c, a) for k, (c, a) in sorted(found.items())]
    after = email[0] + sms[0] + sum(k.count for k in others)
    after_amount = email[1] + sms[1] + sum(k.amount for k in others)
    return (
        Keyed("email", *email),
        Keyed("sms", *sms),
        *others,
        Keyed("none", customer_made.count - after, customer_made.amount - after_amount),
    )
