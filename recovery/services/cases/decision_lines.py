"""What a retry decision reads from a case's timeline, with the customer's renewals paid at
the first attempt and the case's retry actions: for one case (`case_lines`, one statement
prepared once) or for a round's cases together (`case_lines_many`, one statement for all)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import String, bindparam, cast, func, literal, null, select, type_coerce, union_all
from sqlalchemy.orm import Session

from recovery.db import dialect_of, in_list
from recovery.models import CaseEvent, DueAction, Invoice, RecoveryCase
from recovery.services.cases.log import RETRY_KIND, subject

BANK_CALL_KIND = "bank_called"  # the timeline line of "I've contacted my bank - try again"
DECISION_KIND = "decision"


class RetryRow(NamedTuple):
    """One of the case's retry actions, as a decision reads it."""

    id: int
    dedupe_key: str
    status: str
    due_at: datetime


# A case's lines (newest first), its customer's paid renewals' times (newest first), its retries.
CaseLines = tuple[list[Any], list[datetime], tuple[RetryRow, ...]]


def case_lines(session: Session, case: RecoveryCase) -> CaseLines:
    """The timeline lines a decision reads (our charges, cards saved on the card-update page
    and their declines, the customer's bank calls, the decisions made already), newest first;
    when the customer's recent renewals were paid at the first attempt (newest first: see
    `first_attempt_success_days`); the case's retry actions, whatever their status - in one
    statement prepared once."""
    params = {"case_id": case.id, "customer_id": case.customer_id, "subject": subject(case.id)}
    return _sorted_lines(session.execute(case_lines_statement(), params))


def _sorted_lines(rows: Iterable[Any]) -> CaseLines:
    lines: list[Any] = []
    paid: list[Any] = []
    retries: list[RetryRow] = []
    for row in rows:
        if row.kind == _PAID_RENEWAL:
            paid.append(row)
        elif row.kind == _RETRY:
            retries.append(RetryRow(row.id, row.dedupe_key, row.status, row.at))
        else:
            lines.append(row)
    lines.sort(key=lambda line: line.id, reverse=True)
    paid.sort(key=lambda row: row.id or 0, reverse=True)  # by the invoice's creation
    retries.sort(key=lambda retry: retry.id)
    return lines, [row.at for row in paid if row.at is not None], tuple(retries)


# The lines a decision reads.
LINE_KINDS = ("our_attempt", "card_updated", "card_update_declined", BANK_CALL_KIND, DECISION_KIND)
# Tags, not timeline kinds: the renewals' and the retries' rows in the union.
_PAID_RENEWAL = "paid renewal"
_RETRY = "retry action"


def _renewal_columns(created: Any, paid_at: Any) -> tuple[Any, ...]:
    """A paid renewal's columns under the lines' names: the invoice's creation as `id` (their
    order), the payment's time as `at`."""
    return (
        created,
        literal(_PAID_RENEWAL, String),
        type_coerce(null(), CaseEvent.data.type),
        type_coerce(null(), String),
        paid_at,
        type_coerce(null(), String),
    )


def _retry_columns() -> tuple[Any, ...]:
    """A retry action's columns under the lines' names (its status: the retries' only)."""
    return (
        DueAction.id,
        literal(_RETRY, String),
        type_coerce(null(), CaseEvent.data.type),
        DueAction.dedupe_key,
        DueAction.due_at,
        DueAction.status,
    )


@functools.cache
def case_lines_statement() -> Any:
    lines = (
        select(CaseEvent.id, CaseEvent.kind, CaseEvent.data, CaseEvent.dedupe_key, CaseEvent.at)
        .add_columns(type_coerce(null(), String).label("status"))  # the retries' only
        .where(CaseEvent.case_id == bindparam("case_id"))
        .where(CaseEvent.kind.in_(LINE_KINDS))
    )
    paid = paid_renewals_statement().add_columns(Invoice.created).subquery("paid")
    renewals = select(*_renewal_columns(paid.c.created, paid.c.paid_at))
    retries = select(*_retry_columns()).where(
        DueAction.subject == bindparam("subject"), DueAction.kind == RETRY_KIND
    )
    return union_all(lines, renewals, retries)


def case_lines_many(session: Session, cases: Sequence[RecoveryCase]) -> dict[int, CaseLines]:
    """`_case_lines` for many cases, in one statement: each row says whose it is (a line its
    case, a retry its subject, a paid renewal its customer, shared by that customer's cases)."""
    dialect = dialect_of(session)
    customers = sorted({case.customer_id for case in cases if case.customer_id})
    params = {
        "ids": sorted(case.id for case in cases),
        "customers": customers,
        "subjects": sorted(subject(case.id) for case in cases),
    }
    # Keyed by what the owner is as well: a customer's id is never taken for a case's.
    by_owner: dict[tuple[bool, str], list[Any]] = {}
    for row in session.execute(_case_lines_many_statement(dialect), params):
        by_owner.setdefault((row.kind == _PAID_RENEWAL, row.owner), []).append(row)
    return {
        case.id: _sorted_lines(
            by_owner.get((False, str(case.id)), [])
            + by_owner.get((False, subject(case.id)), [])
            + (by_owner.get((True, case.customer_id), []) if case.customer_id else [])
        )
        for case in cases
    }


@functools.cache
def _case_lines_many_statement(dialect: str) -> Any:
    """`case_lines_statement` for many cases: the same columns after an `owner`."""
    owner_of_line = cast(CaseEvent.case_id, String)
    lines = (
        select(
            owner_of_line.label("owner"),
            CaseEvent.id,
            CaseEvent.kind,
            CaseEvent.data,
            CaseEvent.dedupe_key,
            CaseEvent.at,
        )
        .add_columns(type_coerce(null(), String).label("status"))
        .where(in_list(CaseEvent.case_id, "ids", dialect))
        .where(CaseEvent.kind.in_(LINE_KINDS))
    )
    # Each customer's newest PATTERN_RENEWALS paid renewals, as `paid_renewals_statement`.
    ranked = (
        _paid_renewals_filter(select(Invoice.customer_id, Invoice.created, Invoice.paid_at))
        .where(in_list(Invoice.customer_id, "customers", dialect))
        .add_columns(
            func.row_number()
            .over(partition_by=Invoice.customer_id, order_by=Invoice.created.desc())
            .label("n")
        )
        .subquery("ranked")
    )
    renewals = select(
        ranked.c.customer_id, *_renewal_columns(ranked.c.created, ranked.c.paid_at)
    ).where(ranked.c.n <= PATTERN_RENEWALS)
    retries = select(DueAction.subject, *_retry_columns()).where(
        in_list(DueAction.subject, "subjects", dialect), DueAction.kind == RETRY_KIND
    )
    return union_all(lines, renewals, retries)


# How many renewals back the own-payment-day pattern looks (two years of monthly renewals).
PATTERN_RENEWALS = 24


@functools.cache
def paid_renewals_statement() -> Any:
    return (
        _paid_renewals_filter(select(Invoice.paid_at))
        .where(Invoice.customer_id == bindparam("customer_id"))
        .order_by(Invoice.created.desc())
        .limit(PATTERN_RENEWALS)
    )


def _paid_renewals_filter(query: Any) -> Any:
    """Renewals paid at their first attempt."""
    return query.where(
        # `status || ''`, so not by the status index: SQLite, without statistics, took it
        # and walked every paid invoice of every customer on each decision (the replay's
        # costliest statement, growing with the mirror); a customer's invoices are few.
        Invoice.status.concat("") == "paid",
        Invoice.billing_reason == "subscription_cycle",
        Invoice.attempt_count <= 1,
        Invoice.amount_paid > 0,
        Invoice.paid_at.is_not(None),
    )
