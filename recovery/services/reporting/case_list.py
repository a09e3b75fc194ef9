"""The dashboard's case list: filters, keyset paging and the CSV export's row source.

Pages are cut by keyset on (opened_at, id), newest first (`paging.newest_first`). Each page is
one query (cases joined to the mirrored customer), whatever its length.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any

from sqlalchemy import ColumnElement, Select, case, false, or_, select
from sqlalchemy.orm import Session

from recovery.domain.cases import ACTIVE, TERMINAL, CaseStatus
from recovery.domain.declines import DeclineCategory
from recovery.i18n import THREE_DECIMAL, ZERO_DECIMAL
from recovery.models import Customer, RecoveryCase
from recovery.runtime import Runtime
from recovery.services.reporting import paging

PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
EXPORT_BATCH = 500
CATEGORIES = tuple(c.value for c in DeclineCategory)
MAX_AGE_DAYS = 3650

OPEN = "open"
# What each status filter finds. "open" is every case still being worked on - just opened,
# a retry scheduled, or waiting for the customer - not only the first of those states, which a
# case leaves within the event that opened it (so `status=open` used to find nothing).
STATUS_FILTERS: dict[str, tuple[str, ...]] = {
    OPEN: tuple(s.value for s in CaseStatus if s in ACTIVE),
    **{s.value: (s.value,) for s in CaseStatus if s != CaseStatus.OPEN},
}
STATUS_LABELS = {
    OPEN: "Open (still in progress)",
    CaseStatus.RETRYING.value: "Retrying",
    CaseStatus.AWAITING_CUSTOMER.value: "Awaiting the customer",
    CaseStatus.RECOVERED.value: "Recovered",
    CaseStatus.LOST.value: "Lost",
    CaseStatus.CLOSED.value: "Closed",
}
STATUSES = tuple(STATUS_LABELS)


CaseSelect = Select[RecoveryCase, str | None, str | None]


class BadFilter(ValueError):
    """A filter value that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class CaseFilters:
    status: str | None = None
    category: str | None = None
    currency: str | None = None
    opened_within_days: int | None = None
    older_than_days: int | None = None
    # Major units in each case's own currency: "from 20" is 20.00 EUR and 20 JPY alike.
    amount_min: Decimal | None = None
    amount_max: Decimal | None = None
    search: str | None = None

    def query_args(self) -> dict[str, str]:
        """The filters as the list page's query string (for paging and export links)."""
        out: dict[str, str] = {}
        for key, value in (
            ("status", self.status),
            ("category", self.category),
            ("currency", self.currency),
            ("within", self.opened_within_days),
            ("older", self.older_than_days),
            ("q", self.search),
            ("min", self.amount_min),
            ("max", self.amount_max),
        ):
            if value is not None:
                out[key] = str(value)
        return out


def _int(args: Mapping[str, str], key: str, label: str) -> int | None:
    raw = (args.get(key) or "").strip()
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 5 or int(raw) > MAX_AGE_DAYS:
        raise BadFilter(f"{label} must be a whole number of days from 0 to {MAX_AGE_DAYS}.")
    return int(raw)


def _amount(args: Mapping[str, str], key: str, label: str) -> Decimal | None:
    raw = (args.get(key) or "").strip().replace(",", "")
    if not raw:
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise BadFilter(f"{label} must be an amount such as 49.90.") from None
    if not value.is_finite() or value < 0 or value > Decimal("100000000"):
        raise BadFilter(f"{label} must be an amount from 0 to 100,000,000.")
    return value


def parse_filters(args: Mapping[str, str]) -> CaseFilters:
    status = (args.get("status") or "").strip() or None
    if status is not None and status not in STATUSES:
        raise BadFilter("Unknown status.")
    category = (args.get("category") or "").strip() or None
    if category is not None and category not in CATEGORIES:
        raise BadFilter("Unknown decline category.")
    currency = (args.get("currency") or "").strip().lower() or None
    if currency is not None and (len(currency) != 3 or not currency.isalpha()):
        raise BadFilter("A currency is three letters, such as EUR.")
    search = check_search(args.get("q") or "")
    filters = CaseFilters(
        status=status,
        category=category,
        currency=currency,
        opened_within_days=_int(args, "within", "Opened within"),
        older_than_days=_int(args, "older", "Older than"),
        search=search,
    )
    return replace(
        filters,
        amount_min=_amount(args, "min", "Minimum amount"),
        amount_max=_amount(args, "max", "Maximum amount"),
    )


def encode_cursor(opened_at: datetime, case_id: int) -> str:
    return paging.encode_cursor(opened_at, case_id)


def decode_cursor(value: str | None) -> tuple[datetime, int] | None:
    if not value:
        return None
    try:
        return paging.decode_cursor(value, int)
    except paging.BadCursor:
        raise BadFilter("That page link is not valid; start from the first page.") from None


CASE_ID = re.compile(r"#?(\d{1,10})")
MAX_CASE_ID = 2**31 - 1  # the id column's range
MIN_SEARCH = 2


def check_search(raw: str) -> str | None:
    """The search as typed, trimmed; BadFilter when it cannot be used."""
    term = raw.strip()
    if not term:
        return None
    if len(term) > 200:
        raise BadFilter("The search is too long.")
    if len(term) < MIN_SEARCH and not CASE_ID.fullmatch(term):
        raise BadFilter("Type at least two characters of a name or an email address.")
    return term


def search_clause(term: str) -> ColumnElement[bool]:
    """What a search finds: `#123` or `123` a case by its number; `in_…`, `cus_…` or `sub_…` a
    Stripe invoice, customer or subscription id (exact); anything else any part of the
    customer's name or email address, ignoring case.

    Ids are unique or indexed columns. On PostgreSQL the name and email parts use trigram
    indexes (migration 0011: `ILIKE '%part%'` is an index scan, not a read of every
    customer), and the matching customers are a semi-join the planner can start from."""
    found = CASE_ID.fullmatch(term)
    if found:
        number = int(found.group(1))
        return RecoveryCase.id == number if number <= MAX_CASE_ID else false()
    for prefix, column in (
        ("in_", RecoveryCase.invoice_id),
        ("cus_", RecoveryCase.customer_id),
        ("sub_", RecoveryCase.subscription_id),
    ):
        if term.startswith(prefix):
            return column == term
    return RecoveryCase.customer_id.in_(customers_matching(term))


def customers_matching(term: str) -> Select[str]:
    """Customer ids whose name or email contains `term` (any case)."""
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    pattern = f"%{escaped}%"
    return select(Customer.id).where(
        or_(
            Customer.email.ilike(pattern, escape="\\"),
            Customer.name.ilike(pattern, escape="\\"),
        )
    )


def _in_minor_units(value: Decimal, rounding: str) -> Any:
    """`value` major units as each row's minor units (0, 2 or 3 decimals by its currency)."""

    def scaled(exponent: int) -> int:
        return int(value.scaleb(exponent).to_integral_value(rounding=rounding))

    return case(
        (RecoveryCase.currency.in_(sorted(ZERO_DECIMAL)), scaled(0)),
        (RecoveryCase.currency.in_(sorted(THREE_DECIMAL)), scaled(3)),
        else_=scaled(2),
    )


def _where(stmt: CaseSelect, filters: CaseFilters, now: datetime) -> CaseSelect:
    if filters.status:
        stmt = stmt.where(RecoveryCase.status.in_(STATUS_FILTERS[filters.status]))
    if filters.category:
        stmt = stmt.where(RecoveryCase.decline_category == filters.category)
    if filters.currency:
        stmt = stmt.where(RecoveryCase.currency == filters.currency)
    if filters.opened_within_days is not None:
        stmt = stmt.where(
            RecoveryCase.opened_at >= now - timedelta(days=filters.opened_within_days)
        )
    if filters.older_than_days is not None:
        stmt = stmt.where(RecoveryCase.opened_at < now - timedelta(days=filters.older_than_days))
    if filters.amount_min is not None:
        stmt = stmt.where(
            RecoveryCase.amount_due >= _in_minor_units(filters.amount_min, ROUND_CEILING)
        )
    if filters.amount_max is not None:
        stmt = stmt.where(
            RecoveryCase.amount_due <= _in_minor_units(filters.amount_max, ROUND_FLOOR)
        )
    if filters.search:
        stmt = stmt.where(search_clause(filters.search))
    return stmt


@dataclass(frozen=True)
class CaseRow:
    id: int
    invoice_id: str
    customer_id: str | None
    customer_email: str | None
    customer_name: str | None
    status: str
    awaiting: str | None
    decline_category: str | None
    decline_code: str | None
    card_brand: str | None
    currency: str
    amount_due: int
    amount_recovered: int
    recovered_via: str | None
    opened_at: datetime
    closed_at: datetime | None
    next_retry_at: datetime | None
    next_step: str | None
    dunning_paused: bool

    @property
    def masked_email(self) -> str:
        return mask_email(self.customer_email)

    @property
    def next_step_summary(self) -> str:
        """What happens next, in a few words (the case page has the policy's whole reason)."""
        return next_step_summary(
            self.status, self.awaiting, self.dunning_paused, self.recovered_via, self.closed_at
        )

    def email_for(self, full: bool) -> str:
        """The customer's address as this reader may see it: whole for an admin, masked for a
        viewer."""
        return (self.customer_email or "") if full else self.masked_email


AWAITING_WORDS = {
    "new_card": "waiting for the customer to add a new card",
    "authentication": "waiting for the customer to confirm the payment with their bank",
    "customer": "waiting for the customer to act",
}


def next_step_summary(
    status: str,
    awaiting: str | None,
    paused: bool,
    recovered_via: str | None,
    closed_at: datetime | None,
) -> str:
    if paused and status not in {s.value for s in TERMINAL}:
        return "dunning paused by an admin"
    if status == CaseStatus.RETRYING:
        return "retry planned"
    if status == CaseStatus.AWAITING_CUSTOMER:
        return AWAITING_WORDS.get(awaiting or "", "waiting for the customer")
    if status == CaseStatus.OPEN:
        return "deciding the first step"
    if status == CaseStatus.RECOVERED:
        return "nothing: paid"
    if status == CaseStatus.LOST:
        return "nothing: dunning ended unpaid"
    return "nothing: closed"


def mask_email(email: str | None) -> str:
    """`j***@example.com`: enough to recognise a customer, not to copy an address list."""
    if not email or "@" not in email:
        return ""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


def _select() -> CaseSelect:
    return select(RecoveryCase, Customer.email, Customer.name).outerjoin(
        Customer, Customer.id == RecoveryCase.customer_id
    )


def _row(found: paging.AnyRow) -> CaseRow:
    case, email, name = found
    return CaseRow(
        id=case.id,
        invoice_id=case.invoice_id,
        customer_id=case.customer_id,
        customer_email=email,
        customer_name=name,
        status=case.status,
        awaiting=case.awaiting,
        decline_category=case.decline_category,
        decline_code=case.decline_code,
        card_brand=case.card_brand,
        currency=case.currency,
        amount_due=case.amount_due,
        amount_recovered=case.amount_recovered,
        recovered_via=case.recovered_via,
        opened_at=case.opened_at,
        closed_at=case.closed_at,
        next_retry_at=case.next_retry_at,
        next_step=case.next_step_reason,
        dunning_paused=case.dunning_paused,
    )


@dataclass(frozen=True)
class Page:
    rows: list[CaseRow]
    next_cursor: str | None


KEYS = (RecoveryCase.opened_at, RecoveryCase.id)


def list_cases(
    session: Session,
    filters: CaseFilters,
    now: datetime,
    *,
    after: tuple[datetime, int] | None = None,
    limit: int = PAGE_SIZE,
) -> Page:
    """One page of cases, newest first, starting after the keyset `after`."""
    limit = max(1, min(limit, MAX_PAGE_SIZE))
    stmt = _where(_select(), filters, now)
    found = paging.newest_first(session, stmt, KEYS, after=after, limit=limit, row=_row)
    rows = found.rows
    cursor = encode_cursor(rows[-1].opened_at, rows[-1].id) if found.has_more and rows else None
    return Page(rows=rows, next_cursor=cursor)


def page(rt: Runtime, filters: CaseFilters, after: tuple[datetime, int] | None) -> Page:
    """The list page's cases, read in one short transaction."""
    with rt.db.reading() as session:
        return list_cases(session, filters, rt.clock.now(), after=after)


def iter_cases(rt: Runtime, filters: CaseFilters, now: datetime) -> Iterator[CaseRow]:
    """Every matching case, in batches of EXPORT_BATCH, each read in its own short
    transaction: an export of 200k rows never holds one long read open or all rows in memory."""
    after: tuple[datetime, int] | None = None
    while True:
        with rt.db.reading() as session:
            batch = list_cases(session, filters, now, after=after, limit=EXPORT_BATCH)
        yield from batch.rows
        if batch.next_cursor is None or not batch.rows:
            return
        after = (batch.rows[-1].opened_at, batch.rows[-1].id)
