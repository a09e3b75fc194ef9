"""What opening a case and planning its reminders cost in statements: an invoice's failure
opens a case on ~1 event in 8 of the webhook mix, and every opened case has its reminders
planned at once (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from recovery.adapters.clock import FrozenClock
from recovery.domain.stripe_objects.states import card_state, customer_state
from recovery.models import CaseEvent, Customer, DueAction, Invoice, OutboxMessage, RecoveryCase
from recovery.runtime import Runtime
from recovery.services.cases import evidence
from recovery.services.cases.opening import open_case
from recovery.services.events import mirror
from recovery.services.messaging import reminders
from tests.support import stripe_payloads as sp


@contextmanager
def _statements(session: Session) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(*args: object) -> None:
        seen.append(" ".join(str(args[2]).split()))

    connection = session.connection()
    event.listen(connection, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(connection, "before_cursor_execute", count)


def _invoice(session: Session, invoice_id: str, customer_id: str) -> Invoice:
    invoice = Invoice(
        id=invoice_id,
        customer_id=customer_id,
        subscription_id=f"sub_{invoice_id}",
        status="open",
        currency="eur",
        amount_due=2500,
        amount_remaining=2500,
        collection_method="charge_automatically",
    )
    session.add(invoice)
    session.flush()
    return invoice


def test_a_case_opens_with_one_statement_for_it_and_one_for_its_due_actions(
    runtime: Runtime, clock: FrozenClock
) -> None:
    now = clock.now()
    with runtime.db.transaction() as s:
        invoice = _invoice(s, "in_open1", "cus_open1")
        with _statements(s) as seen:
            case = open_case(s, invoice, runtime.rules, now)
        assert case is not None
        # The case (written and read back at once), its opened line, its two due actions.
        assert sum("recovery_cases" in sql.split(" VALUES ")[0] for sql in seen) == 1, seen
        assert sum(sql.startswith("INSERT INTO due_actions") for sql in seen) == 1, seen
        assert (
            case.invoice_id,
            case.status,
            case.amount_due,
            case.our_attempts,
            case.amount_recovered,
            case.dunning_paused,
        ) == ("in_open1", "open", 2500, 0, 0, False)
        lines = s.scalars(select(CaseEvent.kind).where(CaseEvent.case_id == case.id)).all()
        assert lines == ["opened"]
        actions = s.execute(
            select(DueAction.dedupe_key, DueAction.due_at, DueAction.payload)
            .where(DueAction.subject == f"case:{case.id}")
            .order_by(DueAction.id)
        ).all()
        window = now + timedelta(days=runtime.rules.retry.window_days)
        assert [tuple(a) for a in actions] == [
            (f"case:{case.id}:window_end", window, {"case_id": case.id}),
            (f"case:{case.id}:auto_advance_off", now, {"case_id": case.id}),
        ]
        case_id = case.id
    with runtime.db.transaction() as s:
        # Asked again: the same case, nothing added.
        again = open_case(s, s.get(Invoice, "in_open1"), runtime.rules, now)  # type: ignore[arg-type]
        assert again is not None and again.id == case_id
        assert s.scalar(select(RecoveryCase.id).where(RecoveryCase.invoice_id == "in_open1"))
        assert len(s.scalars(select(DueAction.id)).all()) == 2


def test_a_plan_for_a_customer_not_in_the_mirror_reads_the_customer_once(
    runtime: Runtime, clock: FrozenClock
) -> None:
    """The customer's events may come later: each step of the plan asked for it again."""
    now = clock.now()
    with runtime.db.transaction() as s:
        invoice = _invoice(s, "in_plan1", "cus_not_mirrored")
        case = open_case(s, invoice, runtime.rules, now)
        assert case is not None
        case.decline_category = "soft"
        s.flush()
        with _statements(s) as seen:
            reminders.plan_case(s, case, runtime.rules, runtime.settings, now)
        reads = [sql for sql in seen if "FROM customers" in sql and "candidate" not in sql]
        assert reads == [], reads
        # Planned (its line), with nobody to write to.
        plans = s.scalars(
            select(CaseEvent.kind).where(
                CaseEvent.case_id == case.id, CaseEvent.kind == "reminders"
            )
        ).all()
        assert plans == ["reminders"]
        assert s.scalars(select(OutboxMessage.id)).all() == []


def test_a_case_just_opened_is_planned_without_reading_its_plans_and_re_planned_after(
    runtime: Runtime, clock: FrozenClock
) -> None:
    """The first plan of a case this unit of work opened has nothing to replace: its plans are
    not read. The next plan, in the same unit, reads the first and replaces it."""
    now = clock.now()
    with runtime.db.transaction() as s:
        invoice = _invoice(s, "in_fresh1", "cus_fresh1")
        case = open_case(s, invoice, runtime.rules, now)
        assert case is not None
        case.decline_category = "soft"
        s.flush()
        with _statements(s) as first:
            reminders.sync_cases(s, [case], runtime.rules, runtime.settings, now)
        case.decline_category = "needs_new_card"
        s.flush()
        with _statements(s) as second:
            reminders.sync_cases(s, [case], runtime.rules, runtime.settings, now)
        plans = s.execute(
            select(CaseEvent.dedupe_key, CaseEvent.data)
            .where(CaseEvent.case_id == case.id, CaseEvent.kind == "reminders")
            .order_by(CaseEvent.id)
        ).all()
    read_plans = "FROM case_events WHERE case_events.case_id"
    assert not [sql for sql in first if read_plans in sql], first
    assert [sql for sql in second if read_plans in sql], second
    assert [(key, data["sequence"], data["replaces"]) for key, data in plans] == [
        (f"case:{case.id}:reminders:1", "soft", None),
        (f"case:{case.id}:reminders:2", "new_card", "soft"),
    ]


def _mirror_customer(session: Session, cid: str, card_id: str, last4: str, ts: int) -> None:
    """The customer and their default card as their webhooks write them."""
    card = sp.card_payment_method(card_id, cid, brand="visa", last4=last4)
    mirror.apply_card(session, card_state(card), ts)
    obj = sp.customer(
        cid,
        email=f"{cid}@example.com",
        invoice_settings={"default_payment_method": card_id},
        preferred_locales=["en"],
    )
    mirror.apply_customer(session, customer_state(obj), ts)


def _reminder_bodies(session: Session, case: RecoveryCase) -> list[str]:
    return list(
        session.scalars(
            select(OutboxMessage.body)
            .where(OutboxMessage.case_id == case.id)
            .order_by(OutboxMessage.id)
        )
    )


def test_a_decision_and_its_reminder_plan_read_the_card_once_unless_it_changes(
    runtime: Runtime, clock: FrozenClock
) -> None:
    """A decision reads the case's card and customer, and the reminders planner, next, needs
    them too: it reads them again only when the mirror was written in between - and then its
    reminders name the card the customer has now."""
    now = clock.now()
    ts = int(now.timestamp())
    read_card = "AS candidate"  # the current-card read (cards.py)
    with runtime.db.transaction() as s:
        for n in (1, 2):
            _mirror_customer(s, f"cus_read{n}", f"pm_old{n}", "1111", ts - 60)
        for n, changed in ((1, False), (2, True)):
            invoice = _invoice(s, f"in_read{n}", f"cus_read{n}")
            case = open_case(s, invoice, runtime.rules, now)
            assert case is not None
            case.decline_category = "soft"
            s.flush()
            with _statements(s) as seen:
                evidence.evidence(s, case, invoice, now)
                if changed:  # the customer's new default card arrives between the two
                    _mirror_customer(s, f"cus_read{n}", f"pm_new{n}", "4444", ts)
                reminders.plan_case(s, case, runtime.rules, runtime.settings, now)
            reads = [sql for sql in seen if read_card in sql]
            bodies = _reminder_bodies(s, case)
            assert bodies, "the plan wrote its reminders"
            if changed:
                assert len(reads) == 2, reads
                assert "Visa card ending in 4444" in bodies[0], bodies[0]
                assert not any("1111" in body for body in bodies)
            else:
                assert len(reads) == 1, reads  # the decision's, with the customer and contacts
                assert "Visa card ending in 1111" in bodies[0], bodies[0]


def test_a_decision_reads_the_customer_as_it_is_now_in_the_same_unit_of_work(
    runtime: Runtime, clock: FrozenClock
) -> None:
    """The decision reads the customer as an object (for the planner after it): when the
    customer moved country since the session loaded them - a mirror write is a plain statement
    the loaded object does not see - the next decision times its retry in their new zone."""
    now = clock.now()
    ts = int(now.timestamp())
    with runtime.db.transaction() as s:
        _mirror_customer(s, "cus_moved", "pm_moved", "1111", ts - 60)
        invoice = _invoice(s, "in_moved", "cus_moved")
        case = open_case(s, invoice, runtime.rules, now)
        assert case is not None
        before = evidence.evidence(s, case, invoice, now).ctx.customer_timezone
        held = s.get(Customer, "cus_moved")  # as something in the unit of work may hold it
        moved = sp.customer(
            "cus_moved",
            email="cus_moved@example.com",
            invoice_settings={"default_payment_method": "pm_moved"},
            preferred_locales=["ja"],
            address={"country": "JP", "city": "Tokyo", "line1": "1-1", "postal_code": "100-0001"},
        )
        mirror.apply_customer(s, customer_state(moved), ts)
        after = evidence.evidence(s, case, invoice, now).ctx.customer_timezone
    assert before != "Asia/Tokyo"
    assert after == "Asia/Tokyo"
    assert held is not None and held.address_country == "JP"
