"""CSV exports, streamed: rows are written as they are read, batch by batch, never all held.

Amounts are decimal major units beside their currency; times are ISO-8601 UTC. A cell that a
spreadsheet would run as a formula (starting with = + - @, or a tab or carriage return) gets a
leading apostrophe (OWASP "CSV Injection").
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, date, datetime
from typing import Any

from flask import Response, stream_with_context

from recovery.i18n import major_units
from recovery.services.reporting.cancel_sessions import SessionRow
from recovery.services.reporting.case_list import CaseRow
from recovery.services.reporting.metrics import CurrencySummary

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    text = str(value)
    if text.startswith(FORMULA_START):
        return "'" + text
    return text


def rows_to_csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    for count, row in enumerate(rows, start=1):
        writer.writerow([cell(v) for v in row])
        if count % 200 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def csv_response(chunks: Iterator[str], filename: str) -> Response:
    response = Response(stream_with_context(chunks), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


CASE_HEADER = (
    "case_id",
    "invoice_id",
    "customer_id",
    "customer_email",
    "status",
    "awaiting",
    "decline_category",
    "decline_code",
    "card_brand",
    "amount_due",
    "amount_recovered",
    "currency",
    "recovered_via",
    "opened_at",
    "closed_at",
    "next_retry_at",
    "dunning_paused",
    "next_step",
)


def case_csv(rows: Iterable[CaseRow], full_emails: bool) -> Iterator[str]:
    """The case list as CSV; whole email addresses only for a reader who may see them."""

    def values() -> Iterator[Sequence[Any]]:
        for r in rows:
            yield (
                r.id,
                r.invoice_id,
                r.customer_id,
                r.email_for(full_emails),
                r.status,
                r.awaiting,
                r.decline_category,
                r.decline_code,
                r.card_brand,
                major_units(r.amount_due, r.currency),
                major_units(r.amount_recovered, r.currency),
                r.currency.upper(),
                r.recovered_via,
                r.opened_at,
                r.closed_at,
                r.next_retry_at,
                r.dunning_paused,
                r.next_step,
            )

    return rows_to_csv(CASE_HEADER, values())


SESSION_HEADER = (
    "session_id",
    "created_at",
    "customer_id",
    "customer_email",
    "subscription_id",
    "source",
    "reason",
    "reason_text",
    "offer_shown",
    "outcome",
    "decided_at",
    "mrr_before",
    "mrr_after",
    "currency",
    "stripe_status",
    "save_reversed_at",
)


def session_csv(rows: Iterable[SessionRow], full_emails: bool) -> Iterator[str]:
    def values() -> Iterator[Sequence[Any]]:
        for r in rows:
            yield (
                r.id,
                r.created_at,
                r.customer_id,
                r.email_for(full_emails),
                r.subscription_id,
                r.source,
                r.reason,
                r.reason_text,
                r.offer_shown,
                r.shown_outcome,
                r.decided_at,
                major_units(r.mrr_before, r.currency),
                None if r.mrr_after is None else major_units(r.mrr_after, r.currency),
                r.currency.upper(),
                r.stripe_status,
                r.save_reversed_at,
            )

    return rows_to_csv(SESSION_HEADER, values())


def overview_rows(
    summaries: Sequence[CurrencySummary], day_from: date, day_to: date
) -> Iterator[str]:
    """The overview's headline figures, one row per figure and one column per currency."""
    header = ("figure", *(s.currency.upper() for s in summaries))

    def amounts(pick: Any) -> list[Any]:
        return [major_units(pick(s), s.currency) for s in summaries]

    def shares() -> list[Any]:
        return ["" if s.recovered_share is None else f"{s.recovered_share:.4f}" for s in summaries]

    period = f"{day_from.isoformat()}..{day_to.isoformat()}"
    rows: list[Sequence[Any]] = [
        ("period (cases opened, UTC, both days included)", *(period for _ in summaries)),
        ("failed invoices", *(s.failed.count for s in summaries)),
        ("failed amount", *amounts(lambda s: s.failed.amount)),
        ("recovered invoices", *(s.recovered.count for s in summaries)),
        ("recovered amount", *amounts(lambda s: s.recovered.amount)),
        ("recovered share of the failed amount", *shares()),
        ("in progress invoices", *(s.in_progress.count for s in summaries)),
        ("in progress amount", *amounts(lambda s: s.in_progress.amount)),
        ("lost invoices", *(s.lost.count for s in summaries)),
        ("lost amount", *amounts(lambda s: s.lost.amount)),
        ("recovered monthly revenue", *amounts(lambda s: s.recovered_monthly_revenue)),
    ]
    return rows_to_csv(header, rows)
