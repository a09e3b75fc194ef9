"""A round's charge retries recorded together (`actions.record_retries`: cases locked in one
statement, timeline lines, recoveries, re-plans and thank-you emails written set-based) leave
every case exactly as recording them one by one does: the same status, attempts, next retry,
timeline, pending actions and messages, and the same mirror rows (the paid invoice, the declined
attempts, the invoice's links), written in one statement a table. Two identical groups of cases,
one recorded each way, on SQLite and PostgreSQL."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import re
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import event, select, update

from recovery.adapters.clock import FrozenClock
from recovery.models import (
    ActionStatus,
    CaseEvent,
    Customer,
    DueAction,
    Invoice,
    InvoicePayment,
    OutboxMessage,
    PaymentAttempt,
    RecoveryCase,
)
from recovery.runtime import ActionContext, RecordTogether, Runtime, ThreePhase
from recovery.services.cases import actions as case_actions
from recovery.services.cases.log import RETRY_KIND
from recovery.services.work import due_actions
from tests.support.scenario import Story

# Per pair of cases: how our retry's charge ends (None: paid).
OUTCOMES = ("insufficient_funds", None, "do_not_honor", None, "expired_card")


def _open_cases(story: Story) -> list[tuple[int, str]]:
    invoices = []
    for _ in OUTCOMES:
        billing = story.customer()
        story.deliver()
        story.stripe_charges(billing.invoice, decline_code="insufficient_funds")
        invoices.append(billing.invoice)
    story.run_due()  # Stripe's own retries turned off
    return [(story.case(invoice).id, invoice) for invoice in invoices]


def _charge_now(story: Story, cases: Sequence[tuple[int, str]]) -> None:
    """Their retries due now, each charge ending as OUTCOMES says; then one worker round."""
    now = story.clock.now()
    case_ids = [case_id for case_id, _ in cases]
    for (_, invoice), decline in zip(cases, OUTCOMES, strict=True):
        if decline is not None:
            story.fake.fail_next_payment(invoice, decline_code=decline)
    with story.rt.db.transaction() as s:
        s.execute(
            update(DueAction)
            .where(DueAction.kind == RETRY_KIND, DueAction.status == ActionStatus.PENDING)
            .where(DueAction.subject.in_([f"case:{i}" for i in case_ids]))
            .values(due_at=now)
        )
    runner = due_actions.ActionRunner(story.rt, "round-worker", threads=1, batch_size=50)
    runner.drain()
    assert runner.statuses.get("done", 0) >= len(case_ids)


@contextlib.contextmanager
def _mirror_writes(runtime: Runtime) -> Iterator[collections.Counter[str]]:
    """How many statements wrote each mirror table a retry's result writes."""
    writes: collections.Counter[str] = collections.Counter()
    pattern = re.compile(
        r"^\s*(?:INSERT INTO|UPDATE) (invoices|payment_attempts|invoice_payments)\b"
    )

    def count(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if found := pattern.match(statement):
            writes[found.group(1)] += 1

    event.listen(runtime.db.engine, "before_cursor_execute", count)
    try:
        yield writes
    finally:
        event.remove(runtime.db.engine, "before_cursor_execute", count)


def _snapshot(runtime: Runtime, case_id: int) -> dict[str, Any]:
    """What a case's page and its pending work show, its id taken out of keys and texts."""

    def plain(value: Any) -> Any:
        text = (
            str(value).replace(f"case:{case_id}:", "case:#:").replace(f"case:{case_id}", "case:#")
        )
        return text.replace(f"case-end:{case_id}", "case-end:#")

    with runtime.db.transaction() as s:
        case = s.get(RecoveryCase, case_id)
        assert case is not None
        lines = s.scalars(
            select(CaseEvent).where(CaseEvent.case_id == case_id).order_by(CaseEvent.id)
        )
        actions = s.scalars(
            select(DueAction)
            .where(DueAction.subject.in_([f"case:{case_id}", f"case-end:{case_id}"]))
            .order_by(DueAction.dedupe_key)
        )
        messages = s.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.case_id == case_id)
            .order_by(OutboxMessage.dedupe_key)
        )
        customer = s.get(Customer, case.customer_id)
        assert customer is not None and customer.email
        name = customer.name or "(no name)"
        invoice = s.get(Invoice, case.invoice_id)
        assert invoice is not None
        attempts = s.scalars(
            select(PaymentAttempt)
            .where(PaymentAttempt.invoice_id == case.invoice_id)
            .order_by(PaymentAttempt.created, PaymentAttempt.status, PaymentAttempt.id)
        )
        links = s.scalars(
            select(InvoicePayment.id).where(InvoicePayment.invoice_id == case.invoice_id)
        )
        return {
            "case": (
                case.status,
                case.awaiting,
                case.our_attempts,
                case.decline_category,
                case.decline_code,
                case.next_retry_at,
                plain(case.next_step_reason),
                case.recovered_via,
                case.amount_recovered,
                case.closed_at,
            ),
            "timeline": [
                (
                    line.kind,
                    plain(line.summary),
                    plain(line.dedupe_key),
                    {k: v for k, v in line.data.items() if k not in ("attempt_id", "invoice")},
                )
                for line in lines
            ],
            "actions": [
                (a.kind, plain(a.dedupe_key), a.status, a.due_at, a.attempts) for a in actions
            ],
            # (each to its own customer, in their words)
            "messages": [
                (
                    m.template,
                    m.step,
                    m.status,
                    plain(m.dedupe_key),
                    m.send_after,
                    m.subject,
                    m.recipient == customer.email,
                    m.locale,
                    plain(m.body).replace(name, "#"),
                )
                for m in messages
            ],
            # What the dashboard's figures and the next decisions read: the invoice as our
            # payment left it, each attempt as its decline told it, the invoice's links.
            "mirror": (
                (
                    invoice.status,
                    invoice.amount_paid,
                    invoice.amount_remaining,
                    invoice.attempt_count,
                    invoice.paid_at,
                    invoice.version_ts,
                ),
                [
                    (
                        a.status,
                        a.amount,
                        a.currency,
                        a.failure_code,
                        a.decline_code,
                        a.card_brand,
                        a.card_last4,
                        a.created,
                        a.version_ts,
                    )
                    for a in attempts
                ],
                len(list(links)),
            ),
        }


def test_a_rounds_retries_recorded_together_as_one_by_one(
    runtime: Runtime, fake_gateway: Any, clock: FrozenClock
) -> None:
    story = Story(runtime, fake_gateway, clock)
    together_group, alone_group = _open_cases(story), _open_cases(story)
    rounds: list[int] = []
    handler = case_actions.run_retry
    assert handler.together is not None

    def counted(ctx: ActionContext, items: Sequence[Any]) -> None:
        rounds.append(len(items))
        case_actions.record_retries(ctx, items)

    together = RecordTogether(handler.together.applies, counted)
    runtime.handlers = runtime.handlers.with_action(
        RETRY_KIND, dataclasses.replace(handler, together=together)
    )
    with _mirror_writes(runtime) as writes:
        _charge_now(story, together_group)
    assert rounds == [len(OUTCOMES)]  # all of them in one set-based record
    # Two payments and three declines mirrored in one statement a table (one by one: five
    # invoice and attempt writes and three links, each its own statement).
    assert writes == {"invoices": 1, "payment_attempts": 1, "invoice_payments": 1}

    one_by_one: ThreePhase[Any, Any] = dataclasses.replace(handler, together=None)
    runtime.handlers = runtime.handlers.with_action(RETRY_KIND, one_by_one)
    _charge_now(story, alone_group)
    assert rounds == [len(OUTCOMES)]

    for (mine, _), (theirs, _) in zip(together_group, alone_group, strict=True):
        assert _snapshot(runtime, mine) == _snapshot(runtime, theirs)
    statuses = [_snapshot(runtime, i)["case"][0] for i, _ in together_group]
    assert statuses.count("recovered") == 2 and "recovered" not in statuses[::2]
    recovered = _snapshot(runtime, together_group[1][0])
    thanks = [(m[0], m[2]) for m in recovered["messages"] if m[1] == "confirmation"]
    assert thanks == [("recovered", "sent")]  # written once, and sent in the same drain
    assert "pending" not in [m[2] for m in recovered["messages"]]  # its reminders cancelled
    declined = _snapshot(runtime, together_group[0][0])
    assert [a[0] for a in declined["actions"] if a[2] == "pending"].count(RETRY_KIND) == 1
