"""Steering an active case: ask the retry policy what comes next and make it so (a retry due
at the chosen time, or the end of dunning)."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from recovery.db import dialect_of, in_list
from recovery.domain import cases as machine
from recovery.domain.cases import CaseStatus
from recovery.domain.declines import classify
from recovery.domain.experiments import arm_retry
from recovery.domain.retry_policy import (
    RetryDecision,
    decide_next_retry,
    decline_read,
)
from recovery.models import (
    ActionStatus,
    DueAction,
    Invoice,
    RecoveryCase,
)
from recovery.rules import Rules
from recovery.services.cases.decision_lines import RetryRow
from recovery.services.cases.evidence import Evidence, decline_of, evidence, evidence_many
from recovery.services.cases.lines import Line, record_lines
from recovery.services.cases.log import END_OF_DUNNING_KIND, RETRY_KIND, record, subject
from recovery.services.experiments.assignment import placement_of_case
from recovery.services.messaging import outbox
from recovery.services.work import due_actions


def _retries(session: Session, case: RecoveryCase) -> list[RetryRow]:
    """Every retry action of the case, whatever its status: a handful over its life (one per
    attempt; plan_retry is their only writer). A decision reads them with its evidence."""
    rows = session.execute(_RETRIES, {"subject": subject(case.id), "kind": RETRY_KIND})
    return [RetryRow(*row) for row in rows]


# Built once; one read for both what is pending and which keys shadow mode used up (two
# statements before, on every decision).
_RETRIES = (
    select(DueAction.id, DueAction.dedupe_key, DueAction.status, DueAction.due_at)
    .where(DueAction.subject == bindparam("subject"), DueAction.kind == bindparam("kind"))
    .order_by(DueAction.id)
)
# The other pending attempts a new plan replaces.
_ACTIONS = cast(Table, DueAction.__table__)  # Core: no ORM bookkeeping for rows not loaded
_CANCEL = functools.cache(
    lambda dialect: (
        update(_ACTIONS)
        .where(in_list(_ACTIONS.c.id, "ids", dialect))
        .values(
            status=ActionStatus.CANCELLED,
            finished_at=bindparam("now", type_=_ACTIONS.c.finished_at.type),
        )
    )
)


def retry_key(case: RecoveryCase) -> str:
    """The next retry's due-action key: one per attempt number, so one charge per attempt."""
    return f"case:{case.id}:attempt:{case.our_attempts + 1}"


def stripe_key(action_key: str, payload: Mapping[str, Any]) -> str:
    """The idempotency key of the charge a retry action makes. A revived attempt (see
    plan_retry) gets a fresh one: Stripe replays the stored answer to a reused key for 24 h."""
    revival = int(payload.get("revival") or 0)
    return f"{action_key}:r{revival}" if revival else action_key


def _past_shadows(retries: Sequence[RetryRow], key: str) -> str:
    """Shadow mode finishes a retry as `shadow` without charging, so the attempt it stood for is
    planned again (Stripe's next failure moves the plan): under a key of its own, since a shadow
    action is finished for good and never revived (`key`, then `key:s1`, `key:s2`...)."""
    statuses = {action.dedupe_key: action.status for action in retries}
    n, candidate = 0, key
    while statuses.get(candidate) == ActionStatus.SHADOW:
        n += 1
        candidate = f"{key}:s{n}"
    return candidate


def plan_retry(
    session: Session,
    case: RecoveryCase,
    due_at: datetime,
    now: datetime,
    reason: str,
    retries: Sequence[RetryRow] | None = None,
    new: list[dict[str, Any]] | None = None,
) -> None:
    """Make the case's next attempt due at `due_at`: a pending one moves, any other pending
    retry is cancelled. An action for this attempt that ended without charging (cancelled by a
    pause, skipped because Stripe was about to charge, refused) comes back: attempt n is not
    made until our_attempts says so, and its key must not stop it for good. `retries`: the
    case's retry actions when the caller has read them in this transaction (None: read them).
    `new`: a round's list to add a new action to, written with the others' (`reevaluate_many`)."""
    attempt = case.our_attempts + 1
    if retries is None:
        retries = _retries(session, case)
    key = _past_shadows(retries, retry_key(case))
    others = [a.id for a in retries if a.status == ActionStatus.PENDING and a.dedupe_key != key]
    if others:
        session.execute(_CANCEL(dialect_of(session)), {"ids": others, "now": now})
    mine = next((action for action in retries if action.dedupe_key == key), None)
    if mine is not None and mine.status == ActionStatus.PENDING and mine.due_at == due_at:
        return  # planned so already (the usual answer): nothing to write, nothing to lock
    payload = {"case_id": case.id, "attempt": attempt, "reason": reason}
    values: dict[str, Any] = {"kind": RETRY_KIND, "subject": subject(case.id)}
    values.update(dedupe_key=key, due_at=due_at)
    if mine is None and new is not None:
        new.append({**values, "payload": payload})
        return
    if mine is None and due_actions.schedule(session, **values, now=now, payload=payload):
        return
    existing = session.scalars(
        select(DueAction).where(DueAction.dedupe_key == key).with_for_update(),
        # Read unlocked before (maybe loaded): take the row as it is now that it is locked.
        execution_options={"populate_existing": True},
    ).one()
    if existing.status == ActionStatus.RUNNING:
        return  # its worker decides; the next decision follows from what it finds
    if existing.status == ActionStatus.PENDING:
        if existing.due_at != due_at:  # the policy learnt more (a late decline detail)
            existing.due_at = due_at
            existing.payload = {**existing.payload, "reason": reason}
        return
    revival = int(existing.payload.get("revival") or 0) + 1
    existing.status = ActionStatus.PENDING
    existing.due_at = due_at
    existing.finished_at = None
    existing.attempts = 0
    existing.last_error = None
    existing.lease_owner = None
    existing.lease_expires_at = None
    existing.payload = {**payload, "revival": revival}


def _schedule_retry(
    session: Session,
    case: RecoveryCase,
    decision: RetryDecision,
    now: datetime,
    retries: Sequence[RetryRow],
    new: list[dict[str, Any]] | None = None,
) -> None:
    assert decision.at is not None
    plan_retry(session, case, decision.at, now, decision.reason, retries, new)


def reevaluate(
    session: Session, case: RecoveryCase, rules: Rules, now: datetime, cause: str
) -> RetryDecision | None:
    """Ask the retry policy what comes next for an active case, and make it so."""
    if case.status in machine.TERMINAL or case.dunning_paused:
        return None
    invoice = session.get(Invoice, case.invoice_id)
    if invoice is None:
        return None
    decision, line = steer(session, case, invoice, rules, now, cause)
    if line is not None:
        record_lines(session, [line])
    return decision


def reevaluate_many(
    session: Session, cases: Sequence[tuple[RecoveryCase, str]], rules: Rules, now: datetime
) -> None:
    """`reevaluate` for a round's cases (each with its cause), in id order: their invoices read
    in one statement (those the unit of work holds from the session), their evidence read
    together (`evidence_many`: two statements for all, plus each one's attempts), their
    decision lines written in one."""
    todo = sorted(
        (
            (c, cause)
            for c, cause in cases
            if c.status not in machine.TERMINAL and not c.dunning_paused
        ),
        key=lambda item: item[0].id,
    )
    if not todo:
        return
    invoices = _invoices(session, [case.invoice_id for case, _ in todo])
    found = evidence_many(
        session, [(c, invoices[c.invoice_id]) for c, _ in todo if c.invoice_id in invoices], now
    )
    lines = []
    new: list[dict[str, Any]] = []  # the cases' next retries, written together
    planned: dict[str, tuple[RecoveryCase, Any]] = {}
    for case, cause in todo:
        invoice = invoices.get(case.invoice_id)
        if invoice is None:
            continue
        before = len(new)
        # (a case twice in the round: its second decision reads what its first wrote)
        known = found.pop(case.id, None)
        decision, line = steer(session, case, invoice, rules, now, cause, new, known)
        if len(new) > before:
            planned[new[-1]["dedupe_key"]] = (case, decision)
        if line is not None:
            lines.append(line)
    added = due_actions.schedule_many(session, new, now)
    for key in planned.keys() - added:  # (a row the case's read did not see: as for one)
        case, decision = planned[key]
        plan_retry(session, case, decision.at, now, decision.reason)
    record_lines(session, lines)


def _invoices(session: Session, ids: Sequence[str]) -> dict[str, Invoice]:
    held: dict[str, Invoice] = {}
    for invoice_id in ids:
        found = session.identity_map.get(Session.identity_key(Invoice, invoice_id))
        if isinstance(found, Invoice):
            held[invoice_id] = found
    missing = sorted(set(ids) - held.keys())
    if missing:
        held.update(
            (i.id, i) for i in session.scalars(_INVOICES(dialect_of(session)), {"ids": missing})
        )
    return held


_INVOICES = functools.cache(
    lambda dialect: select(Invoice).where(in_list(Invoice.id, "ids", dialect))
)


def steer(
    session: Session,
    case: RecoveryCase,
    invoice: Invoice,
    rules: Rules,
    now: datetime,
    cause: str,
    new: list[dict[str, Any]] | None = None,
    known: Evidence | None = None,
) -> tuple[RetryDecision, Line | None]:
    """The decision for an active case made so; its timeline line returned to be written
    (None: the same decision again, or written already because dunning ended after it).
    `known`: its evidence, read already with a round's others (`evidence_many`)."""
    found = known if known is not None else evidence(session, case, invoice, now)
    ctx, failed = found.ctx, found.failed
    # An experiment's arm: a fixed schedule, or (the holdout) Stripe's retries alone.
    placed = placement_of_case(session, rules, case.id)
    retry, fixed_days = arm_retry(rules.retry, placed)
    decision = decide_next_retry(ctx, retry, now, fixed_days=fixed_days)
    if placed is not None and placed.holdout and decision.at is None and not decision.stop:
        why = f"the holdout of experiment {placed.experiment}: Stripe's own retries alone"
        decision = replace(decision, reason=why)
    if failed:
        last = failed[-1]
        verdict = classify(decline_of(last))
        case.decline_category = verdict.category.value
        case.decline_code = last.decline_code or last.failure_code
        case.card_brand = last.card_brand or case.card_brand
    case.stripe_next_attempt_at = invoice.next_payment_attempt or case.stripe_next_attempt_at
    step = machine.after_decision(CaseStatus(case.status), decision)
    if (
        case.status == CaseStatus.AWAITING_CUSTOMER
        and case.awaiting == "authentication"
        and (decision.at is None and not decision.stop)
    ):
        step = machine.Step(
            CaseStatus.AWAITING_CUSTOMER, machine.AwaitingReason.AUTHENTICATION, False
        )
    case.status = step.status
    case.awaiting = step.awaiting.value if step.awaiting else None
    case.next_retry_at = decision.at
    case.next_step_reason = decision.reason
    if decision.at is not None:
        _schedule_retry(session, case, decision, now, found.retries, new)
    elif any(retry.status == ActionStatus.PENDING for retry in found.retries):
        # (plan_retry is their only writer, and the case is locked: none came since the read)
        due_actions.cancel_pending(session, subject(case.id), now, (RETRY_KIND,))
    digest = hashlib.sha256(decision.reason.encode()).hexdigest()[:12]
    key = f"case:{case.id}:decision:{case.our_attempts}:{len(failed)}:{digest}"
    line = None
    if key not in found.decided:  # the same decision again (the usual answer): no line, no move
        data = {
            "cause": cause,
            "next_retry_at": decision.at.isoformat() if decision.at else None,
            "stop": decision.stop,
            "wait_for_new_card": decision.wait_for_new_card,
        }
        read = decline_read(ctx)  # (a card declined on the card-update page, not yet mirrored)
        if read is not None:
            data["decline_category"], data["decline_code"] = read
        line = Line(case.id, now, "decision", decision.reason, key, data)
    if step.end_dunning:
        if line is not None:  # before the end's line, in the timeline's order
            record_lines(session, [line])
            line = None
        case.closed_at = now
        due_actions.cancel_pending(session, subject(case.id), now)
        outbox.cancel(session, subject(case.id), now)
        record(
            session,
            case,
            now,
            "lost",
            f"dunning ended: {retry.end_of_dunning}",
            dedupe_key=f"case:{case.id}:lost",
        )
        if retry.end_of_dunning != "leave_past_due":
            due_actions.schedule(
                session,
                kind=END_OF_DUNNING_KIND,
                subject=f"case-end:{case.id}",
                dedupe_key=f"case:{case.id}:end_of_dunning",
                due_at=now,
                now=now,
                payload={"case_id": case.id, "apply": retry.end_of_dunning},
            )
    return decision, line
