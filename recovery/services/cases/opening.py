"""Opening recovery cases: one per failed subscription invoice worth recovering."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from recovery.db import dialect_of, insert_ignoring
from recovery.domain import cases as machine
from recovery.domain.cases import CaseStatus
from recovery.domain.experiments import Placement
from recovery.models import (
    Invoice,
    RecoveryCase,
)
from recovery.rules import Rules
from recovery.services.cases.log import AUTO_ADVANCE_KIND, WINDOW_END_KIND, record, subject
from recovery.services.experiments.assignment import place_case
from recovery.services.work import due_actions


def lock_for_invoice(session: Session, invoice_id: str) -> RecoveryCase | None:
    return session.scalars(
        select(RecoveryCase).where(RecoveryCase.invoice_id == invoice_id).with_for_update()
    ).one_or_none()


def is_recoverable(invoice: Invoice) -> bool:
    """A subscription invoice Stripe collects automatically, open, with money still owed."""
    return (
        invoice.subscription_id is not None
        and invoice.collection_method in (None, "charge_automatically")
        and invoice.status == "open"
        and invoice.amount_remaining > 0
    )


def open_case(
    session: Session, invoice: Invoice, rules: Rules, now: datetime
) -> RecoveryCase | None:
    """The case for this invoice, opened now if it has none and is worth recovering."""
    if not is_recoverable(invoice):
        return lock_for_invoice(session, invoice.id)
    values = {
        "invoice_id": invoice.id,
        "customer_id": invoice.customer_id,
        "subscription_id": invoice.subscription_id,
        "status": CaseStatus.OPEN,
        "currency": invoice.currency,
        "amount_due": invoice.amount_remaining,
        "opened_at": now,
        "hosted_invoice_url": invoice.hosted_invoice_url,
    }
    # Inserted and read back in one statement (a locking read, the insert and the same read
    # again before; the caller found no case). A row of ours is locked until commit; the
    # invoice's case that another transaction opened is read, and locked, as before.
    inserted = session.scalars(_insert_case_statement(dialect_of(session)), values).one_or_none()
    if not isinstance(inserted, RecoveryCase):
        return lock_for_invoice(session, invoice.id)
    case = inserted
    session.info.setdefault(_OPENED, set()).add(case.id)
    amount = f"{invoice.amount_remaining / 100:.2f} {invoice.currency.upper()}"
    if record(
        session,
        case,
        now,
        "opened",
        f"payment of {amount} failed",
        {"invoice": invoice.id},
        f"case:{case.id}:opened",
    ):
        # Its due actions written together, in this order, after its placement.
        actions: list[dict[str, Any]] = [
            {
                "kind": WINDOW_END_KIND,
                "subject": subject(case.id),
                "dedupe_key": f"case:{case.id}:window_end",
                "due_at": now + timedelta(days=rules.retry.window_days),
                "payload": {"case_id": case.id},
            }
        ]
        placed = place_case(session, rules, case.id, case.customer_id, now)
        if placed is not None:
            record(
                session,
                case,
                now,
                "experiment",
                _in_experiment(placed),
                {"experiment": placed.experiment, "arm": placed.arm},
                f"case:{case.id}:experiment",
            )
        # A holdout case is left to Stripe: its auto_advance stays as Stripe set it.
        if rules.retry.retry_owner == "recovery" and not (placed and placed.holdout):
            # Stripe must stop its own attempts on this invoice, or the two collide.
            actions.append(
                {
                    "kind": AUTO_ADVANCE_KIND,
                    "subject": subject(case.id),
                    "dedupe_key": f"case:{case.id}:auto_advance_off",
                    "due_at": now,
                    "payload": {"case_id": case.id},
                }
            )
        due_actions.schedule_many(session, actions, now)
    return case


_OPENED = "recovery.cases_opened"


def take_just_opened(session: Session, case_id: int) -> bool:
    """Whether this unit of work opened the case and nobody asked since: its timeline holds
    only what the opening wrote (the reminders planner, which runs next, then need not read
    the case's plans: there are none). True once."""
    opened: set[int] | None = session.info.get(_OPENED)
    if opened is None or case_id not in opened:
        return False
    opened.discard(case_id)
    return True


@functools.cache
def _insert_case_statement(dialect: str) -> Any:
    # Built once per dialect, the values passed as parameters: compiled once. A Core insert on
    # the table whose returned row the ORM loads as the case (`from_statement`): the ORM's own
    # bulk insert of the model (`insert(RecoveryCase).returning(RecoveryCase)`) did the same
    # through its unit-of-work machinery at about twice the cost, on every case opened.
    table = RecoveryCase.__table__
    inserted = insert_ignoring(dialect, table, ["invoice_id"]).returning(*table.c)
    return select(RecoveryCase).from_statement(inserted)


def _in_experiment(placed: Placement) -> str:
    if placed.holdout:
        return (
            f"In experiment {placed.experiment}, in the holdout: left to Stripe, with no retry,"
            " reminder or change in Stripe from this service"
        )
    return f"In experiment {placed.experiment}, arm {placed.arm}"


def active_cases_of_customer(session: Session, customer_id: str) -> Sequence[RecoveryCase]:
    return session.scalars(
        select(RecoveryCase)
        .where(RecoveryCase.customer_id == customer_id)
        .where(RecoveryCase.status.in_([s.value for s in machine.ACTIVE]))
        .with_for_update()
    ).all()
