"""Indexes the dashboard's lists need, declared on tables that other modules own.

The case list pages by keyset (opened_at DESC, id DESC) - each page is one index range scan,
however deep, at 200k cases - and narrows by status, decline category or currency:
- ix_recovery_cases_opened_at_id   (opened_at, id)                    no filter
- ix_recovery_cases_status_page    (status, opened_at, id)            status filter
- ix_recovery_cases_category_page  (decline_category, opened_at, id)  category filter
- ix_recovery_cases_currency_page  (currency, opened_at, id)          currency filter
The cancel-session list pages by (created_at, id):
- ix_cancel_sessions_created_at_id (created_at, id)
Created by migration 0006.

The case list's search by any part of a name or email (`ILIKE '%part%'`) uses trigram GIN
indexes on PostgreSQL only (migration 0011, not declared here: they need the pg_trgm
extension): ix_customers_email_trgm, ix_customers_name_trgm.
"""

from __future__ import annotations

from sqlalchemy import Index

from recovery.models.cancel_flow import CancelSession
from recovery.models.cases import RecoveryCase

CASE_PAGE_INDEXES = (
    Index("ix_recovery_cases_opened_at_id", RecoveryCase.opened_at, RecoveryCase.id),
    Index(
        "ix_recovery_cases_status_page",
        RecoveryCase.status,
        RecoveryCase.opened_at,
        RecoveryCase.id,
    ),
    Index(
        "ix_recovery_cases_category_page",
        RecoveryCase.decline_category,
        RecoveryCase.opened_at,
        RecoveryCase.id,
    ),
    Index(
        "ix_recovery_cases_currency_page",
        RecoveryCase.currency,
        RecoveryCase.opened_at,
        RecoveryCase.id,
    ),
)
CANCEL_SESSION_PAGE_INDEXES = (
    Index("ix_cancel_sessions_created_at_id", CancelSession.created_at, CancelSession.id),
)
