"""Issue 15, item 4: a case's attempts are its invoice's.

Since API 2025-03-31 a charge does not name its invoice, so unlinked charges of the customer for
the invoice's amount are matched to it - but a later renewal's charges (same customer, same
amount, after the next invoice was created or after this one was paid) are not this case's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete

from recovery.models import Invoice, PaymentAttempt, RecoveryCase
from recovery.runtime import Runtime
from recovery.services.cases import evidence
from tests.conftest import API_KEY, START

MONTH = 30 * 86_400
T0 = int(START.timestamp())


def _invoice(n: int, created: int, *, paid_at: int | None, amount: int = 900) -> Invoice:
    return Invoice(
        id=f"in_{n}",
        customer_id="cus_1",
        subscription_id="sub_1",
        status="paid" if paid_at else "open",
        currency="usd",
        amount_due=amount,
        amount_remaining=0 if paid_at else amount,
        paid_at=datetime.fromtimestamp(paid_at, UTC) if paid_at else None,
        created=created,
    )


def _charge(n: int, at: int, status: str, *, invoice_id: str | None = None) -> PaymentAttempt:
    return PaymentAttempt(
        id=f"ch_{n}",
        payment_intent_id=f"pi_{n}",
        invoice_id=invoice_id,
        customer_id="cus_1",
        status=status,
        amount=900,
        currency="usd",
        decline_code="insufficient_funds" if status == "failed" else None,
        created=at,
    )


def _case(session: Any) -> RecoveryCase:
    case = RecoveryCase(
        invoice_id="in_0",
        customer_id="cus_1",
        subscription_id="sub_1",
        status="recovered",
        currency="usd",
        amount_due=900,
        amount_recovered=900,
        opened_at=START,
    )
    session.add(case)
    session.flush()
    return case


def test_later_renewals_charges_are_not_the_cases(runtime: Runtime, client: Any) -> None:
    """The demo's case 10: one failure, paid by a new card 11 days later, then five monthly
    renewals paid at once on the same card - whose invoices the mirror may never see."""
    with runtime.db.transaction() as session:
        session.add(_invoice(0, T0 - 3600, paid_at=T0 + 11 * 86_400))
        session.add(_charge(1, T0, "failed"))
        session.add(_charge(2, T0 + 11 * 86_400 - 2, "succeeded"))  # the one that paid it
        for month in range(1, 6):
            session.add(_charge(10 + month, T0 + month * MONTH, "succeeded"))
        case_id = _case(session).id
    body = client.get(f"/api/v1/cases/{case_id}", headers={"Authorization": f"Bearer {API_KEY}"})
    assert body.status_code == 200
    attempts = body.get_json()["attempts"]
    assert [(a["id"], a["status"]) for a in attempts] == [
        ("ch_1", "failed"),
        ("ch_2", "succeeded"),
    ]


def test_an_open_invoices_attempts_stop_at_the_next_invoice(runtime: Runtime) -> None:
    """Unpaid: its failures until the customer's next invoice for the amount was created; a
    charge linked to the invoice by id is its own whenever it came."""
    with runtime.db.transaction() as session:
        session.add(_invoice(0, T0 - 3600, paid_at=None))
        session.add(_invoice(1, T0 + MONTH, paid_at=None))
        session.add(_charge(1, T0, "failed"))
        session.add(_charge(2, T0 + 3 * 86_400, "failed"))
        session.add(_charge(3, T0 + MONTH + 3600, "failed"))  # the next invoice's
        session.add(_charge(4, T0 + MONTH + 7200, "failed", invoice_id="in_0"))  # linked
        case = _case(session)
        invoice = session.get(Invoice, "in_0")
        assert invoice is not None
        found = sorted(a.id for a in evidence.attempts_for(session, case, invoice))
    assert found == ["ch_1", "ch_2", "ch_4"]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    offsets=st.lists(st.integers(min_value=0, max_value=8 * MONTH), min_size=1, max_size=12),
    paid_after=st.one_of(st.none(), st.integers(min_value=3600, max_value=40 * 86_400)),
    renewals=st.integers(min_value=0, max_value=6),
)
def test_no_attempt_after_the_invoice_was_paid_or_renewed(
    sqlite_url: str,
    tmp_path: Path,
    offsets: list[int],
    paid_after: int | None,
    renewals: int,
) -> None:
    """Whatever the charges: every attempt found is on or after the invoice's creation, at the
    latest a minute after it was paid, and before the next invoice for the amount - and every
    unlinked charge inside that window is found."""
    from recovery.db import Database

    db = Database(sqlite_url)
    try:
        with db.transaction() as session:
            for table in (PaymentAttempt, Invoice, RecoveryCase):
                session.execute(delete(table))
            paid_at = T0 + paid_after if paid_after is not None else None
            session.add(_invoice(0, T0, paid_at=paid_at))
            next_invoice = T0 + MONTH if renewals else None
            for k in range(renewals):
                session.add(_invoice(k + 1, T0 + (k + 1) * MONTH, paid_at=None))
            for n, offset in enumerate(offsets):
                status = "succeeded" if n % 3 == 2 else "failed"
                session.add(_charge(n, T0 + offset, status))
            case = _case(session)
            invoice = session.get(Invoice, "in_0")
            assert invoice is not None
            found = {a.id for a in evidence.attempts_for(session, case, invoice)}
        expected = set()
        for n, offset in enumerate(offsets):
            at = T0 + offset
            if paid_at is not None and at > paid_at + 60:
                continue
            if next_invoice is not None and at >= next_invoice:
                continue
            expected.add(f"ch_{n}")
        assert found == expected
    finally:
        db.dispose()
