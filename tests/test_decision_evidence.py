"""A retry decision reads its evidence in few statements (services/cases/evidence.py): the card
with the customer and the case's experiment arm in one, the timeline lines with the customer's
paid renewals in another. Each must say what the separate reads it replaced say, for every case
of a generated lifecycle, on both engines."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import event, func, select

from recovery.adapters.clock import FrozenClock
from recovery.db import Database
from recovery.domain.cases import ACTIVE
from recovery.domain.timezones import customer_timezone
from recovery.models import (
    AccountContact,
    CaseEvent,
    Customer,
    ExperimentSubject,
    Invoice,
    PaymentAttempt,
    RecoveryCase,
    Subscription,
)
from recovery.runtime import Runtime
from recovery.services.cases import attempts, cards, decision_lines, evidence, scheduling
from recovery.services.events import inbox
from recovery.services.experiments.assignment import placement_of_case
from tests.support import stripe_payloads as sp
from tests.support.lifecycle import generate_lifecycle


def _process_lifecycle(runtime: Runtime, clock: FrozenClock) -> None:
    for body in (sp.body_of(e) for e in generate_lifecycle(40, 11)):
        parsed, _ = inbox.parse_event(body)
        inbox.ingest(runtime.db, parsed, body, clock.now())
    while inbox.process_pending(runtime.db, runtime.processing_context, clock, 200):
        pass


def _cases_with_a_bank_call_and_an_arm(s: Any) -> tuple[datetime, Sequence[RecoveryCase]]:
    """The lifecycle's cases on its last day (the same cards' recent attempts elsewhere are in
    the window), the first with two bank calls and an experiment arm (the lifecycle has
    neither)."""
    latest = s.scalar(select(func.max(PaymentAttempt.created)))
    assert latest is not None
    now = datetime.fromtimestamp(latest, UTC) + timedelta(days=1)
    cases = s.scalars(select(RecoveryCase).order_by(RecoveryCase.id)).all()
    assert len(cases) >= 5
    first = cases[0]
    first.decline_category = "needs_customer"
    s.add(CaseEvent(case_id=first.id, at=now, kind="bank_called", summary="", data={}))
    s.add(CaseEvent(case_id=first.id, at=now - timedelta(hours=1), kind="bank_called", summary=""))
    assert first.customer_id is not None
    s.add(
        ExperimentSubject(
            experiment_key="gone",
            arm="holdout",
            customer_id=first.customer_id,
            case_id=first.id,
            assigned_at=now,
        )
    )
    s.flush()
    return now, cases


def test_the_decisions_few_reads_say_what_the_separate_reads_say(
    runtime: Runtime, clock: FrozenClock
) -> None:
    _process_lifecycle(runtime, clock)
    with runtime.db.transaction() as s:
        now, cases = _cases_with_a_bank_call_and_an_arm(s)
        first = cases[0]
        with_paydays = with_elsewhere = 0
        for case in cases:
            invoice = s.get(Invoice, case.invoice_id)
            assert invoice is not None
            statements: list[str] = []

            def count(*args: object, statements: list[str] = statements) -> None:
                statements.append(str(args[2]))

            event.listen(s.connection(), "before_cursor_execute", count)
            found = evidence.evidence(s, case, invoice, now)
            event.remove(s.connection(), "before_cursor_execute", count)
            placed = placement_of_case(s, runtime.rules, case.id)  # remembered: no statement
            assert len(statements) <= 5, statements

            customer = s.get(Customer, case.customer_id)
            assert customer is not None
            zone = customer_timezone(customer.address_country, customer.preferred_locales)
            assert found.ctx.customer_timezone == zone
            paid = evidence.first_attempt_success_days(s, case.customer_id, ZoneInfo(zone))
            assert sorted(found.ctx.past_success_days) == sorted(paid)
            with_paydays += bool(paid)
            assert found.ctx.bank_calls == evidence.bank_calls(s, case)
            card = cards.current_card(s, case)
            if card is not None:
                assert found.ctx.card is not None
                assert (found.ctx.card.brand, found.ctx.card.fingerprint) == (
                    card.brand,
                    card.fingerprint,
                )
            # The attempts: the invoice's, and the same cards' elsewhere (read apart before).
            on_invoice = evidence.attempts_for(s, case, invoice)
            fingerprints = {r.card_fingerprint for r in on_invoice if r.card_fingerprint}
            if card is not None and card.fingerprint:
                fingerprints.add(card.fingerprint)
            since = int((now - evidence.CAP_PERIOD).timestamp())
            elsewhere = s.scalars(
                select(PaymentAttempt.id).where(
                    PaymentAttempt.card_fingerprint.in_(fingerprints),
                    PaymentAttempt.created >= since,
                )
            ).all()
            mine = {r.id for r in on_invoice}
            assert sum(a.on_this_invoice for a in found.ctx.attempts) == len(mine)
            assert len(found.ctx.attempts) == len(mine | set(elsewhere))
            assert {r.id for r in found.failed} == {
                r.id for r in on_invoice if r.status == "failed"
            }
            with_elsewhere += bool(set(elsewhere) - mine)
            decisions = s.scalars(
                select(CaseEvent.dedupe_key).where(
                    CaseEvent.case_id == case.id, CaseEvent.kind == "decision"
                )
            ).all()
            assert found.decided == {key for key in decisions if key}
            if case.id == first.id:
                assert len(found.ctx.bank_calls) == 2
                assert placed is not None and (placed.experiment, placed.arm) == (
                    "gone",
                    "holdout",
                )
            else:
                assert placed is None
        assert with_paydays, "the lifecycle's customers pay renewals at the first attempt"
        assert with_elsewhere, "some cards were tried on other invoices in the period"


def test_the_renewals_read_with_the_lines_go_by_the_customer_index(sqlite_url: str) -> None:
    """The union keeps the paid renewals' read on the customer's own invoices
    (tests/test_decision_reads.py says why)."""
    statement = decision_lines.case_lines_statement().params(
        case_id=1, customer_id="cus_1", subject="case:1"
    )
    plan = _sqlite_plan(sqlite_url, statement)
    assert "ix_invoices_customer_id" in plan, plan
    assert "ix_invoices_status" not in plan, plan


def test_a_decision_made_again_on_the_same_facts_writes_nothing(
    runtime: Runtime, clock: FrozenClock
) -> None:
    """The usual re-evaluation (another event of the same failure) finds the same decision:
    no timeline line, no retry moved or re-inserted, no case update - only its reads."""
    _process_lifecycle(runtime, clock)
    now = clock.now()
    active = [s.value for s in ACTIVE]
    with runtime.db.transaction() as s:
        cases = s.scalars(
            select(RecoveryCase).where(RecoveryCase.status.in_(active)).order_by(RecoveryCase.id)
        ).all()
        assert cases, "the lifecycle ends with cases in dunning"
        retrying = 0
        for case in cases:
            scheduling.reevaluate(s, case, runtime.rules, now, "first")
            s.flush()
            lines = s.scalar(select(func.count()).where(CaseEvent.case_id == case.id))
            statements: list[str] = []

            def count(*args: object, statements: list[str] = statements) -> None:
                statements.append(str(args[2]).lstrip().split()[0].upper())

            event.listen(s.connection(), "before_cursor_execute", count)
            decision = scheduling.reevaluate(s, case, runtime.rules, now, "again")
            s.flush()
            event.remove(s.connection(), "before_cursor_execute", count)
            retrying += decision is not None and decision.at is not None
            assert set(statements) <= {"SELECT", "WITH"}, statements  # reads only
            assert s.scalar(select(func.count()).where(CaseEvent.case_id == case.id)) == lines
        assert retrying, "some of them have a retry planned"


def test_the_attempts_read_with_the_same_cards_go_by_indexes(sqlite_url: str) -> None:
    """The invoice's attempts and the same cards' elsewhere: every branch probes an index, none
    walks the charges table (at 300k charges a walk per decision was seconds)."""
    statement = attempts.attempts_and_same_card_statement().params(
        invoice_id="in_1",
        customer_id="cus_1",
        amount=1000,
        currency="usd",
        created=0,
        paid=2**40,
        since=0,
        card_fingerprint="fp_1",
    )
    plan = _sqlite_plan(sqlite_url, statement)
    assert "ix_payment_attempts_card_fingerprint" in plan, plan
    assert "SCAN payment_attempts" not in plan, plan


def _sqlite_plan(sqlite_url: str, statement: Any) -> str:
    """SQLite's plan for `statement` with its parameters bound."""
    db = Database(sqlite_url)
    try:
        sql = statement.compile(dialect=db.engine.dialect, compile_kwargs={"literal_binds": True})
        with db.engine.connect() as conn:
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}").all()
    finally:
        db.dispose()
    return "\n".join(str(row[-1]) for row in rows)


def test_a_rounds_evidence_read_together_says_what_each_cases_own_reads_say(
    runtime: Runtime, clock: FrozenClock
) -> None:
    """`evidence_many` (a worker's round of declined retries, a batch's noted re-evaluations)
    reads the cards, customers and arms of all the round's cases in one statement, their
    lines, renewals and retry actions in another, and on PostgreSQL their attempts in two:
    each case's evidence must be what its own reads give - customers with several cases, paid
    renewals, retries, an experiment arm, bank calls, decisions and the same cards' attempts
    on other invoices included."""
    _process_lifecycle(runtime, clock)
    with runtime.db.transaction() as s:
        now, cases = _cases_with_a_bank_call_and_an_arm(s)
        first = cases[0]
        pairs = [(case, s.get(Invoice, case.invoice_id)) for case in cases]
        round_ = [(case, invoice) for case, invoice in pairs if invoice is not None]
        assert len(round_) >= 5
        customers = [case.customer_id for case, _ in round_]
        assert len(set(customers)) < len(customers), "a customer with several cases"
        statements: list[str] = []

        def count(*args: object) -> None:
            statements.append(str(args[2]))

        event.listen(s.connection(), "before_cursor_execute", count)
        together = evidence.evidence_many(s, round_, now)
        event.remove(s.connection(), "before_cursor_execute", count)
        # two statements for the round, and its attempts: two more on PostgreSQL (over all
        # of them), one a case on SQLite
        postgres = s.get_bind().dialect.name == "postgresql"
        assert len(statements) == 2 + (2 if postgres else len(round_)), statements
        alone = {case.id: evidence.evidence(s, case, invoice, now) for case, invoice in round_}
    assert together.keys() == alone.keys()
    for case_id, found in together.items():
        assert _facts(found) == _facts(alone[case_id]), case_id
    assert any(found.ctx.past_success_days for found in together.values())
    assert any(found.retries for found in together.values())
    assert any(found.decided for found in together.values())
    assert together[first.id].ctx.bank_calls
    assert any(not a.on_this_invoice for f in together.values() for a in f.ctx.attempts)


def _facts(found: evidence.Evidence) -> tuple[Any, ...]:
    """Evidence as a decision reads it: its failed charges by what they say (a round reads
    them as rows, one case as ORM objects)."""
    fields = [name for name in dir(attempts.AttemptRow) if not name.startswith("_")]
    failed = [tuple(getattr(row, name) for name in fields) for row in found.failed]
    return (found.ctx, failed, found.decided, found.retries)


def test_a_rounds_cards_for_its_messages_read_together_are_each_cases_own(
    runtime: Runtime, clock: FrozenClock
) -> None:
    """`cards_and_customers` (the thank-you notes of a round's recovered cases) reads every
    case's current card, customer and whether it has account contacts in one statement: each
    must be what the case's own read gives - a customer with contacts, a deleted one with
    contacts (who gets nothing), a card known by id only, a customer with several cases."""
    _process_lifecycle(runtime, clock)
    with runtime.db.transaction() as s:
        _, cases = _cases_with_a_bank_call_and_an_arm(s)
        first, second, third = cases[0], cases[1], cases[2]
        assert first.customer_id and second.customer_id and third.customer_id
        assert len({first.customer_id, second.customer_id, third.customer_id}) == 3
        for customer_id in (first.customer_id, second.customer_id):
            s.add(
                AccountContact(
                    customer_id=customer_id,
                    role="billing",
                    email="billing@example.com",
                    source="api",
                    created_at=clock.now(),
                )
            )
        deleted = s.get(Customer, second.customer_id)
        assert deleted is not None
        deleted.deleted = True
        unmirrored = s.get(Customer, third.customer_id)
        assert unmirrored is not None
        unmirrored.default_payment_method_id = "pm_not_in_the_mirror"
        if third.subscription_id:  # the customer's card is the one charged
            subscription = s.get(Subscription, third.subscription_id)
            assert subscription is not None
            subscription.default_payment_method_id = None
            subscription.default_source_id = None
        s.flush()
        statements: list[str] = []

        def count(*args: object) -> None:
            statements.append(str(args[2]))

        event.listen(s.connection(), "before_cursor_execute", count)
        together = cards.cards_and_customers(s, cases)
        event.remove(s.connection(), "before_cursor_execute", count)
        assert len(statements) == 1, statements

        def plain(found: tuple[Any, Any, bool]) -> tuple[str | None, str | None, bool]:
            card, customer, contacts = found
            return (card.id if card else None, customer.id if customer else None, contacts)

        alone = {case.id: plain(cards.card_and_customer(s, case)) for case in cases}
    assert {case_id: plain(found) for case_id, found in together.items()} == alone
    assert alone[first.id][2] is True  # contacts
    assert alone[second.id][2] is False  # deleted: its contacts get nothing
    assert alone[third.id][0] == "pm_not_in_the_mirror"
    customers = [case.customer_id for case in cases]
    assert len(set(customers)) < len(customers), "a customer with several cases"
