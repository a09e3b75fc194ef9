""" "I've contacted my bank - try again": for a decline only the customer's bank can clear
(`needs_customer`), the card-update page offers a button (`POST /update/<token>/bank`). A press
plans one retry within the hour - the retry policy decides (`answer_bank_call`: at most twice
per case, inside the window, the card's budget and the networks' caps) - and the case's
timeline records it. No provider is called here: the retry is a due action like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from recovery.domain.bank_calls import BANK_CALLS_PER_CASE, answer_bank_call
from recovery.models import CardUpdateLink, Invoice, RecoveryCase
from recovery.rules import Rules
from recovery.services.card_update.reminder_links import offers_bank_call
from recovery.services.cases import decision_lines, evidence, scheduling
from recovery.services.cases import log as case_log

BANK_CALL_KIND = decision_lines.BANK_CALL_KIND


@dataclass(frozen=True)
class Section:
    """The page's bank section. `outcome` after a press: planned (a try at `at`, within the
    hour), already (a try was planned before, at `at`), limit (pressed twice already),
    no_room (no try fits within the hour: a cap, a network's wait, the window's end) or
    not_needed (this card is not charged again: its budget is spent or the window is over);
    None on a plain visit."""

    offered: bool
    calls: int
    outcome: str | None = None
    at: datetime | None = None


def section(session: Session, link: CardUpdateLink, rules: Rules) -> Section | None:
    """The section for a visit: shown for a case whose decline needs the customer's bank."""
    case = session.get(RecoveryCase, link.case_id) if link.case_id is not None else None
    if case is None or not offers_bank_call(case, rules):
        return None
    calls = len(evidence.bank_calls(session, case))
    if calls and case.next_retry_at is not None:  # the try a press planned has not run yet
        return Section(offered=False, calls=calls, outcome="already", at=case.next_retry_at)
    return Section(offered=calls < BANK_CALLS_PER_CASE, calls=calls)


def press(session: Session, link: CardUpdateLink, rules: Rules, now: datetime) -> Section | None:
    """The customer says they contacted their bank: plan the try, or say why not. Runs in the
    page's transaction, the case row locked: two tabs pressing at once plan one try."""
    case = (
        session.get(RecoveryCase, link.case_id, with_for_update=True)
        if link.case_id is not None
        else None
    )
    invoice = session.get(Invoice, case.invoice_id) if case is not None else None
    if case is None or invoice is None or not offers_bank_call(case, rules):
        return None  # not offered for this case: the page as it is
    ctx, _failed = evidence.retry_context(session, case, invoice, now)
    calls = len(ctx.bank_calls)
    answer = answer_bank_call(ctx, rules.retry, now, calls)
    if answer.refusal == "planned":
        return Section(offered=False, calls=calls, outcome="already", at=answer.at)
    if answer.refusal is not None:
        case_log.record(
            session,
            case,
            now,
            "bank_call_refused",
            f"the customer said they contacted their bank; no try planned: {answer.reason}",
            {"refusal": answer.refusal, "calls": calls},
            f"case:{case.id}:bank_call_refused:{calls}:{answer.refusal}",
        )
        return Section(offered=False, calls=calls, outcome=answer.refusal)
    case_log.record(
        session,
        case,
        now,
        BANK_CALL_KIND,
        f"the customer says they contacted their bank ({calls + 1} of {BANK_CALLS_PER_CASE}): "
        "one try within the hour",
        {"call": calls + 1},
        f"case:{case.id}:bank_call:{calls + 1}",
    )
    decision = scheduling.reevaluate(session, case, rules, now, "the customer contacted their bank")
    at = decision.at if decision is not None else answer.at
    return Section(offered=False, calls=calls + 1, outcome="planned", at=at)
