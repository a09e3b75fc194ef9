"""Helpers for the dashboard tests: accounts, signing in through the real form, CSRF tokens
read from the pages, cases and cancel sessions written as the services would leave them, and a
SQL statement counter."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event

from recovery.models import CancelSession, Customer, Invoice, PaymentAttempt, RecoveryCase
from recovery.runtime import Runtime
from recovery.services.accounts import users as accounts

PASSWORD = "correct horse battery staple"
ADMIN = "admin@example.com"
VIEWER = "viewer@example.com"
TOKEN = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf_token"')


def add_user(rt: Runtime, email: str, role: str, password: str = PASSWORD) -> int:
    with rt.db.transaction() as db:
        user = accounts.create_user(
            db, email=email, role=role, password=password, now=rt.clock.now()
        )
        return user.id


def csrf_from(html: str) -> str:
    match = TOKEN.search(html)
    assert match, "no CSRF token on the page"
    return match.group(1) or match.group(2)


def login(client: Any, email: str, password: str = PASSWORD, next_url: str = "") -> Any:
    page = client.get("/login")
    token = csrf_from(page.get_data(as_text=True))
    data = {"email": email, "password": password, "csrf_token": token, "next": next_url}
    return client.post("/login", data=data)


def token_for(client: Any, path: str) -> str:
    return csrf_from(client.get(path).get_data(as_text=True))


def add_customer(session: Any, cid: str, email: str | None, name: str | None = None) -> None:
    session.add(Customer(id=cid, email=email, name=name))


def add_case(
    session: Any,
    *,
    n: int,
    opened_at: datetime,
    status: str = "retrying",
    category: str | None = "soft",
    currency: str = "usd",
    amount: int = 4900,
    customer_id: str | None = None,
    brand: str | None = "visa",
) -> RecoveryCase:
    case = RecoveryCase(
        invoice_id=f"in_{n:06d}",
        customer_id=customer_id or f"cus_{n:06d}",
        subscription_id=f"sub_{n:06d}",
        status=status,
        decline_category=category,
        decline_code="do_not_honor" if category else None,
        card_brand=brand,
        currency=currency,
        amount_due=amount,
        opened_at=opened_at,
        next_step_reason="next try soon",
    )
    session.add(case)
    session.flush()
    return case


def add_failed_invoice(
    session: Any, case: RecoveryCase, *, failed_at: datetime, decline_code: str
) -> None:
    """The mirror rows the retry policy reads: the open invoice and its declined charge."""
    session.add(
        Invoice(
            id=case.invoice_id,
            customer_id=case.customer_id,
            subscription_id=case.subscription_id,
            status="open",
            currency=case.currency,
            amount_due=case.amount_due,
            amount_remaining=case.amount_due,
            attempt_count=1,
            attempted=True,
        )
    )
    session.add(
        PaymentAttempt(
            id=f"ch_{case.invoice_id}",
            invoice_id=case.invoice_id,
            customer_id=case.customer_id,
            status="failed",
            amount=case.amount_due,
            currency=case.currency,
            failure_code="card_declined",
            decline_code=decline_code,
            card_brand="visa",
            card_last4="4242",
            card_fingerprint="fp_test",
            created=int(failed_at.timestamp()),
        )
    )


def add_cancel_session(
    session: Any,
    *,
    n: int,
    created_at: datetime,
    outcome: str | None,
    reason: str | None = "too_expensive",
    reason_text: str | None = None,
    customer_id: str = "cus_000001",
) -> None:
    session.add(
        CancelSession(
            id=f"cs_{n:06d}",
            token_hash=f"{n:064d}",
            source="api",
            customer_id=customer_id,
            subscription_id=f"sub_{n:06d}",
            return_url="https://example.com/account",
            variant="default",
            created_at=created_at,
            expires_at=created_at + timedelta(hours=24),
            reason=reason,
            reason_text=reason_text,
            outcome=outcome,
            currency="eur",
            mrr_before=2900,
            mrr_after=1450 if outcome and outcome.startswith("saved") else None,
        )
    )


@contextmanager
def count_queries(rt: Runtime) -> Iterator[list[str]]:
    """Every SQL statement the app sends while the block runs."""
    statements: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not statement.lstrip().upper().startswith(("PRAGMA", "BEGIN", "SAVEPOINT", "RELEASE")):
            statements.append(statement)

    engine = rt.db.engine
    event.listen(engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", before)
