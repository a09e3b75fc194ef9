"""How Stripe events move recovery cases: registered as reactions, run after the mirror.

Failure signals open or re-steer a case; money closes it as recovered; a voided invoice or a
subscription the business cancelled closes it; a new or updated card re-steers every active
case of the customer (a needs-a-new-card case is retried at once).

In a worker's batch an existing case is re-steered once, not once per event: an invoice's
failure arrives as four or five events (charge.failed, payment_intent.payment_failed,
invoice.updated, invoice.payment_failed, customer.subscription.updated), each of which asked
the retry policy again - a quarter of the processing's CPU. The re-evaluation an event asks for
is noted (`defer_reevaluations`) and made once, with everything the batch told, before anything
else reads or moves the case: its reminders (services/events/gates.py), a payment or a closing
(below), any other reaction (services/events/dispatch.py), or the batch's end
(services/events/processing.py). A newly opened case is decided at once (its first reminders
depend on it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from recovery.domain.cases import ACTIVE, CaseStatus, CloseReason, attribute_recovery
from recovery.domain.experiments import arm_retry
from recovery.domain.stripe_objects.fields import ref
from recovery.domain.stripe_objects.states import invoice_state
from recovery.models import (
    ExperimentSubject,
    Invoice,
    InvoicePayment,
    PaymentAttempt,
    RecoveryCase,
)
from recovery.rules import Rules
from recovery.runtime import ProcessingContext, Runtime, has_moved_cases
from recovery.services.cases import log as case_log
from recovery.services.cases import opening as case_opening
from recovery.services.cases import scheduling as case_scheduling
from recovery.services.cases import state as case_state
from recovery.services.experiments.assignment import placement_of_case, remember_placement
from recovery.services.messaging import outbox
from recovery.services.work import due_actions

Obj = Mapping[str, Any]


def _rules(ctx: ProcessingContext) -> Rules:
    rules: Rules = ctx.runtime.rules
    return rules


def _intent_of(obj: Obj) -> str | None:
    """The PaymentIntent a charge or PaymentIntent event is about."""
    if obj.get("object") == "payment_intent":
        return str(obj["id"]) if obj.get("id") else None
    return ref(obj.get("payment_intent"))


# The invoice that links the PaymentIntent, else the one an attempt of it names: one prepared
# statement (two before, on every charge and PaymentIntent failure).
_INVOICE_OF_INTENT = select(
    func.coalesce(
        func.nullif(
            select(InvoicePayment.invoice_id)
            .where(InvoicePayment.payment_intent_id == bindparam("intent"))
            .limit(1)
            .scalar_subquery(),
            "",
        ),
        select(PaymentAttempt.invoice_id)
        .where(
            PaymentAttempt.payment_intent_id == bindparam("intent"),
            PaymentAttempt.invoice_id.is_not(None),
        )
        .limit(1)
        .scalar_subquery(),
    )
)


def _steer(
    ctx: ProcessingContext,
    invoice_id: str,
    event: Obj,
    *,
    may_open: bool,
    found: tuple[RecoveryCase | None, Invoice | None] | None = None,
) -> RecoveryCase | None:
    """Open (when `may_open`), re-steer or close the invoice's case. Returns the case, locked.
    `found`: the case (locked) and invoice when the caller has read them ((None, None): it has
    no case)."""
    if found is None and ctx.facts is not None and invoice_id not in ctx.facts.invoices_with_cases:
        found = (None, None)  # the batch knows it has none (its first failure): nothing to lock
    case, invoice = found if found is not None else case_and_invoice(ctx.session, invoice_id)
    if case is None:
        if not may_open:
            return None
        invoice = ctx.session.get(Invoice, invoice_id)
        if invoice is None:
            return None  # the invoice event that opens the case is on its way
        case = case_opening.open_case(ctx.session, invoice, _rules(ctx), ctx.clock.now())
        if case is None:
            return None
        _hold(ctx.session, case)
    assert invoice is not None
    now = ctx.clock.now()
    if not _settled(invoice):
        _reevaluate(ctx, case, event)
        return case
    # A re-evaluation noted for it is moot: it would read the invoice settled.
    deferred(ctx.session).pop(case.id, None)
    if invoice.status == "paid":
        _recovered(ctx, case, invoice, {})
    elif invoice.status in ("void", "uncollectible", "deleted") or (
        invoice.status == "open" and invoice.amount_remaining == 0
    ):
        reasons = {"void": CloseReason.VOIDED, "deleted": CloseReason.DELETED}
        reason = reasons.get(invoice.status or "", CloseReason.UNCOLLECTIBLE)
        if invoice.status == "uncollectible" and case.status == CaseStatus.LOST:
            return case  # our own end of dunning wrote it off
        case_state.mark_closed(ctx.session, case, reason, now)
    return case


def case_and_invoice(
    session: Session, invoice_id: str
) -> tuple[RecoveryCase | None, Invoice | None]:
    """The invoice's case, locked, with the invoice: one statement (a read of the invoice and
    a locking read of the case before, on every event that steers a case). (None, None) when
    it has no case."""
    row = session.execute(_CASE_AND_INVOICE, {"invoice_id": invoice_id}).first()
    if row is None:
        return None, None
    case, invoice, experiment, arm = row
    _hold(session, case)
    # Its experiment arm, which a recovery's attribution and the reminders planner ask next
    # (a statement of its own on every recovery).
    remember_placement(session, case.id, experiment, arm)
    return case, invoice


_CASE_AND_INVOICE = (
    select(RecoveryCase, Invoice, ExperimentSubject.experiment_key, ExperimentSubject.arm)
    .join(Invoice, Invoice.id == RecoveryCase.invoice_id)
    .outerjoin(ExperimentSubject, ExperimentSubject.case_id == RecoveryCase.id)
    .where(RecoveryCase.invoice_id == bindparam("invoice_id"))
    .with_for_update(of=RecoveryCase)
)
_ACTIVE_CASES_AND_LINK = (
    select(RecoveryCase, _INVOICE_OF_INTENT.scalar_subquery().label("linked"))
    .where(RecoveryCase.customer_id == bindparam("customer_id"))
    .where(RecoveryCase.status.in_([s.value for s in ACTIVE]))
    .order_by(RecoveryCase.id)
    .with_for_update(of=RecoveryCase)
)


def _settled(invoice: Invoice) -> bool:
    """Paid, voided, written off, or nothing left to pay: the case closes, it is not steered."""
    return invoice.status in ("paid", "void", "uncollectible", "deleted") or (
        invoice.status == "open" and invoice.amount_remaining == 0
    )


def on_invoice_failure(ctx: ProcessingContext, event: Obj, obj: Obj) -> None:
    if obj.get("id"):
        _steer(ctx, str(obj["id"]), event, may_open=True)


def on_invoice_action_required(ctx: ProcessingContext, event: Obj, obj: Obj) -> None:
    case = _steer(ctx, str(obj["id"]), event, may_open=True) if obj.get("id") else None
    if case is not None:
        reevaluate_deferred(ctx.runtime, ctx.session, [case.id])  # decided, then awaiting
    if case is not None and case.status in ACTIVE:
        case_state.await_authentication(
            ctx.session, case, invoice_state(obj).hosted_invoice_url, ctx.clock.now()
        )


def on_payment_failure(ctx: ProcessingContext, event: Obj, obj: Obj) -> None:
    invoice_id = ref(obj.get("invoice"))
    if invoice_id:
        _steer(ctx, invoice_id, event, may_open=True)
        return
    intent, customer_id = _intent_of(obj), ref(obj.get("customer"))
    cases: list[RecoveryCase] = []
    linked = None
    if intent and customer_id and _without_active_case(ctx, customer_id):
        # The batch knows the customer has no active case (a renewal's first failure, the
        # usual): the link alone, where the statement below found no row and read it next.
        linked = ctx.session.scalar(_INVOICE_OF_INTENT, {"intent": intent})
    elif intent and customer_id:
        # The customer's active cases, each row with the intent's invoice: one statement where
        # the usual (a charge of current API versions, which names no invoice) took two.
        rows = ctx.session.execute(
            _ACTIVE_CASES_AND_LINK, {"customer_id": customer_id, "intent": intent}
        ).all()
        cases, linked = [row[0] for row in rows], (rows[0][1] if rows else None)
        if not rows:  # (no row, no link read)
            linked = ctx.session.scalar(_INVOICE_OF_INTENT, {"intent": intent})
    elif intent:
        linked = ctx.session.scalar(_INVOICE_OF_INTENT, {"intent": intent})
    elif customer_id:
        cases = list(case_opening.active_cases_of_customer(ctx.session, customer_id))
    if linked:
        _steer(ctx, str(linked), event, may_open=True)
        return
    # No link to an invoice (current API versions): re-steer the customer's active cases,
    # whose attempt queries match the charge by customer and amount.
    for case in cases:
        _hold(ctx.session, case)
        _reevaluate(ctx, case, event)


def _without_active_case(ctx: ProcessingContext, customer_id: str) -> bool:
    """In a batch, whether the customer has no active case: the batch's facts name every
    customer that may have one (read for its events' customers, grown as its events open and
    move cases; services/events/gates.py)."""
    return ctx.facts is not None and customer_id not in ctx.facts.customers_with_active_cases


def _recovered(ctx: ProcessingContext, case: RecoveryCase, invoice: Invoice, obj: Obj) -> None:
    # A holdout case's retries are Stripe's, whatever [retry] says for the others.
    retry, _ = arm_retry(_rules(ctx).retry, placement_of_case(ctx.session, _rules(ctx), case.id))
    via = attribute_recovery(
        paid_at=ctx.clock.now(),
        paid_out_of_band=obj.get("paid_out_of_band") is True,
        retry_owner=retry.retry_owner,
        stripe_next_attempt=case.stripe_next_attempt_at,
    )
    amount = invoice.amount_paid or case.amount_due
    case_state.mark_recovered(ctx.session, case, via, amount, ctx.clock.now())


def on_invoice_paid(ctx: ProcessingContext, event: Obj, obj: Obj) -> None:
    invoice_id = obj.get("id")
    if not invoice_id:
        return
    case, invoice = case_and_invoice(ctx.session, str(invoice_id))
    if case is None or invoice is None:
        return
    if invoice.status == "paid":
        reevaluate_deferred(
            ctx.runtime, ctx.session, [case.id]
        )  # the mirror holds the newest state, whatever the order
        _recovered(ctx, case, invoice, obj)


def on_invoice_updated(ctx: ProcessingContext, event: Obj, obj: Obj) -> None:
    """invoice.updated fires on every change: only steer cases that already exist."""
    if obj.get("id"):
        _steer(ctx, str(obj["id"]), event, may_open=False)


def on_subscription_deleted(ctx: ProcessingContext, event: Obj, obj: Obj) -> None:
    sub_id = obj.get("id")
    details = obj.get("cancellation_details") or {}
    now = ctx.clock.now()
    cases = ctx.session.scalars(
        select(RecoveryCase)
        .where(RecoveryCase.subscription_id == sub_id)
        .where(RecoveryCase.status.in_([s.value for s in ACTIVE]))
        .order_by(RecoveryCase.id)
        .with_for_update()
    ).all()
    # What the ended subscription's cases were: their noted decisions first (only theirs).
    reevaluate_deferred(ctx.runtime, ctx.session, [case.id for case in cases])
    for case in cases:
        if case.status not in ACTIVE:
            continue  # the noted decision ended it
        if isinstance(details, Mapping) and details.get("reason") == "payment_failed":
            # Stripe's own dunning ran out and cancelled it: lost, not closed.
            case.status = CaseStatus.LOST
            case.closed_at = now
            due_actions.cancel_pending(ctx.session, case_log.subject(case.id), now)
            outbox.cancel(ctx.session, case_log.subject(case.id), now)
            case_log.record(
                ctx.session,
                case,
                now,
                "lost",
                "Stripe cancelled the subscription after failed payments",
                dedupe_key=f"case:{case.id}:lost",
            )
        else:
            case_state.mark_closed(ctx.session, case, CloseReason.SUBSCRIPTION_CANCELLED, now)


def on_card_change(ctx: ProcessingContext, event: Obj, obj: Obj) -> None:
    """A card was attached, updated by the card updater, or made the default."""
    if obj.get("object") == "customer":
        customer_id = obj.get("id")
    elif obj.get("object") == "setup_intent":
        customer_id = ref(obj.get("customer"))
    else:
        customer_id = ref(obj.get("customer"))
    if not customer_id:
        return
    for case in case_opening.active_cases_of_customer(ctx.session, str(customer_id)):
        _reevaluate(ctx, case, event)


# ---- one re-evaluation per case per batch ------------------------------------------------------

_DEFERRED = "recovery.deferred_reevaluations"


@dataclass
class Deferred:
    """A case's re-evaluation asked for in this batch: the latest cause, who asked, and the
    case's customer (a reaction about a customer needs only that customer's made first)."""

    cause: str
    events: list[str] = field(default_factory=list)
    customer_id: str | None = None


def defer_reevaluations(session: Session) -> None:
    """Until `stop_deferring`, note the re-evaluations events ask for (a worker's batch)."""
    session.info[_DEFERRED] = {}
    session.info[_HELD] = {}


def stop_deferring(session: Session) -> None:
    session.info.pop(_DEFERRED, None)
    session.info.pop(_HELD, None)


_HELD = "recovery.cases_held"


def _hold(session: Session, case: RecoveryCase) -> None:
    """Keep a case this batch loaded in its session's identity map (which holds clean objects
    weakly): the reminders planner that follows its move takes it from there rather than
    reading it again (services/events/gates.py). The batch's expunge after each event lets go
    of it in the session; this only keeps the object alive until the batch ends."""
    held: dict[int, RecoveryCase] | None = session.info.get(_HELD)
    if held is not None:
        held[case.id] = case


def deferred(session: Session) -> dict[int, Deferred]:
    """The re-evaluations noted and not made yet, by case id (the live dict: empty outside a
    batch)."""
    pending: dict[int, Deferred] = session.info.get(_DEFERRED) or {}
    return pending


def restore_deferred(session: Session, saved: dict[int, Deferred]) -> None:
    """Put back what was noted before an event whose savepoint was rolled back."""
    if _DEFERRED in session.info:
        session.info[_DEFERRED] = saved


def _reevaluate(ctx: ProcessingContext, case: RecoveryCase, event: Obj) -> None:
    cause = str(event["type"])
    pending: dict[int, Deferred] | None = ctx.session.info.get(_DEFERRED)
    # A case this event opened or moved is decided now: its reminders are planned next.
    if pending is None or has_moved_cases(ctx.session) or case.status not in ACTIVE:
        case_scheduling.reevaluate(ctx.session, case, _rules(ctx), ctx.clock.now(), cause)
        return
    entry = pending.setdefault(case.id, Deferred(cause, customer_id=case.customer_id))
    entry.cause = cause
    entry.events.append(str(event.get("id")))


def note_reevaluation(session: Session, case_id: int, customer_id: str | None, event: Obj) -> bool:
    """Note an active case's re-evaluation for later, as `_reevaluate` does, without loading
    the case (a batch's gate that knows it, services/events/gates.py). False when it cannot
    be noted (no batch, or this event moved a case already): the reaction must run."""
    pending: dict[int, Deferred] | None = session.info.get(_DEFERRED)
    if pending is None or has_moved_cases(session):
        return False
    cause = str(event["type"])
    entry = pending.setdefault(case_id, Deferred(cause, customer_id=customer_id))
    entry.cause = cause
    entry.events.append(str(event.get("id")))
    return True


def reevaluate_deferred(
    runtime: Runtime,
    session: Session,
    case_ids: Iterable[int] | None = None,
    *,
    customer: str | None = None,
) -> dict[int, Deferred]:
    """Make the noted re-evaluations of these cases (all when None; with `customer`, that
    customer's) now. Returns those made."""
    pending = deferred(session)
    if not pending:
        return {}
    wanted = sorted(pending if case_ids is None else set(case_ids) & pending.keys())
    if customer is not None:  # (a case noted without its customer counts as anyone's)
        wanted = [i for i in wanted if pending[i].customer_id in (customer, None)]
    taken = {case_id: pending.pop(case_id) for case_id in wanted}
    if not taken:
        return taken
    # The cases with their invoices in one statement, re-planned together (their decision
    # lines and next retries written in one statement each: `reevaluate_many`).
    steer = []
    for case, invoice in session.execute(_CASES, {"ids": wanted}).all():
        _hold(session, case)
        if invoice is not None and _settled(invoice):
            continue  # the event that settled it closes the case (a batch's later event)
        steer.append((case, taken[case.id].cause))
    case_scheduling.reevaluate_many(session, steer, runtime.rules, runtime.clock.now())
    return taken


_CASES = (
    select(RecoveryCase, Invoice)
    .outerjoin(Invoice, Invoice.id == RecoveryCase.invoice_id)
    .where(RecoveryCase.id.in_(bindparam("ids", expanding=True)))
    .order_by(RecoveryCase.id)
    .with_for_update(of=RecoveryCase)
)
