"""By reminder channel: of the recoveries the customer made (every trigger but our retry and
Stripe's), the channel of the last reminder actually sent for the case before the payment
(`email`, `sms`), or `none` when the customer paid before any reminder went out."""

from __future__ import annotations

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
    ranked = (
        select(
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
    rows = session.execute(
        select(ranked.c.channel, func.count(), func.coalesce(func.sum(ranked.c.amount), 0))
        .where(ranked.c.rn == 1)
        .group_by(ranked.c.channel)
    ).all()
    found = {str(r[0]): (int(r[1]), int(r[2])) for r in rows}
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
