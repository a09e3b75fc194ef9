"""What the retry policy needs to know about a case: its attempts (Stripe's and ours, on this
invoice and on the same card elsewhere), the card Stripe will charge, the customer's zone and
usual payment days."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    bindparam,
    select,
)
from sqlalchemy.orm import Session

from recovery.db import dialect_of, in_list, utcnow_from
from recovery.domain.business_days import customer_country
from recovery.domain.declines import Decline
from recovery.domain.retry_policy import (
    Attempt,
    CardInfo,
    Funding,
    RetryContext,
)
from recovery.domain.timezones import customer_timezone
from recovery.models import (
    CaseEvent,
    ExperimentSubject,
    Invoice,
    PaymentMethod,
    RecoveryCase,
)
from recovery.services.cases import cards
from recovery.services.cases.attempts import (
    AttemptRow,
    attempt_params,
    attempts_and_same_card_statement,
    attempts_of_cases,
)
from recovery.services.cases.attempts import attempts_for as attempts_for
from recovery.services.cases.decision_lines import (
    BANK_CALL_KIND,
    DECISION_KIND,
    CaseLines,
    RetryRow,
    case_lines,
    case_lines_many,
    paid_renewals_statement,
)
from recovery.services.experiments.assignment import remember_placement

CAP_PERIOD = timedelta(days=30)


def decline_of(row: AttemptRow) -> Decline:
    return Decline(
        failure_code=row.failure_code,
        decline_code=row.decline_code,
        advice_code=row.advice_code,
        network_advice_code=row.network_advice_code,
        network_decline_code=row.network_decline_code,
        card_brand=row.card_brand,
        outcome_type=row.outcome_type,
        outcome_reason=row.outcome_reason,
    )


def _our_charge_ids(lines: list[Any]) -> set[str]:
    return {
        str(line.data.get("attempt_id"))
        for line in lines
        if line.kind == "our_attempt" and line.data.get("attempt_id")
    }


def _to_attempt(row: AttemptRow, ours: set[str], on_invoice: bool) -> Attempt:
    return Attempt(
        at=utcnow_from(row.created or row.version_ts) or datetime.min,
        card_fingerprint=row.card_fingerprint,
        card_brand=row.card_brand,
        decline=None if row.status == "succeeded" else decline_of(row),
        succeeded=row.status == "succeeded",
        by="recovery" if row.id in ours else "stripe",
        on_this_invoice=on_invoice,
    )


# A decision's card, its customer (their country and locales: their zone, their payment days;
# the reminders planner, next, needs the rest), whether the customer has contacts and the case's
# experiment arm, in one statement: a decision read the customer and the arm with a statement
# each, and the planner the card and the customer again. The objects as the database holds them
# now, even when the session loaded them before a mirror write (plain statements) changed them.
_DECISION_READ = (
    cards.CARD_WITH_CUSTOMER.add_columns(ExperimentSubject.experiment_key, ExperimentSubject.arm)
    .outerjoin(ExperimentSubject, ExperimentSubject.case_id == bindparam("case_id"))
    .execution_options(populate_existing=True)
)


_FUNDING: dict[str | None, Funding] = {"credit": "credit", "debit": "debit", "prepaid": "prepaid"}


def _funding(value: str | None) -> Funding:
    return _FUNDING.get(value, "unknown")


@dataclass(frozen=True)
class Evidence:
    """What a decision reads: the policy's context, the invoice's failed attempts (oldest
    first), the dedupe keys of the decisions on the case's timeline already, and the case's
    retry actions."""

    ctx: RetryContext
    failed: list[AttemptRow]
    decided: frozenset[str]
    retries: tuple[RetryRow, ...]


def retry_context(
    session: Session, case: RecoveryCase, invoice: Invoice, now: datetime
) -> tuple[RetryContext, list[AttemptRow]]:
    found = evidence(session, case, invoice, now)
    return found.ctx, found.failed


def evidence(session: Session, case: RecoveryCase, invoice: Invoice, now: datetime) -> Evidence:
    """Everything a decision reads, in three statements, each prepared once: the card with the
    customer and the case's experiment arm; the attempts on the invoice with the same cards'
    elsewhere; the case's timeline lines with the customer's paid renewals and the case's
    retry actions."""
    return _evidence(session, case, invoice, now, _card_and_customer(session, case), None)


def evidence_many(
    session: Session, cases: Sequence[tuple[RecoveryCase, Invoice]], now: datetime
) -> dict[int, Evidence]:
    """`evidence` for a round's cases (by case id): the cards, customers and experiment arms of
    all of them in one statement, their timeline lines, paid renewals and retry actions in
    another; their attempts in two on PostgreSQL (`attempts_of_cases`), one a case on SQLite
    (each invoice's own rules; SQLite has no LATERAL). Three statements a case before - most
    of the worker's statements in a round of declined retries. The reads come before any of
    the round's decisions is made, as each decision reads only its own case's rows, which the
    others' do not write."""
    if len(cases) < 2:
        return {case.id: evidence(session, case, invoice, now) for case, invoice in cases}
    only = [case for case, _ in cases]
    cards = _cards_and_customers(session, only)
    lines = case_lines_many(session, only)
    attempts: dict[int, tuple[list[AttemptRow], list[AttemptRow]]] = {}
    if dialect_of(session) == "postgresql":
        current = {case_id: pm.fingerprint if pm else None for case_id, (pm, _, _) in cards.items()}
        attempts = attempts_of_cases(session, cases, current, _since(now))
    return {
        case.id: _evidence(
            session, case, invoice, now, cards[case.id], lines[case.id], attempts.get(case.id)
        )
        for case, invoice in cases
    }


def _by_time(row: AttemptRow) -> tuple[int, str]:
    return (row.created or 0, row.id)


def _since(now: datetime) -> int:
    """The start of the card networks' cap period: the same cards' attempts since then count."""
    return int((now - CAP_PERIOD).timestamp())


def _evidence(
    session: Session,
    case: RecoveryCase,
    invoice: Invoice,
    now: datetime,
    card_read: tuple[PaymentMethod | None, str | None, list[str]],
    lines_read: CaseLines | None,
    attempts_read: tuple[list[AttemptRow], list[AttemptRow]] | None = None,
) -> Evidence:
    pm, country, locales = card_read
    if attempts_read is not None:
        rows, same_card_elsewhere = attempts_read
    else:
        params = attempt_params(case, invoice)
        # ('' is no fingerprint, as NULL is: it names no card)
        params.update(since=_since(now), card_fingerprint=(pm.fingerprint or None) if pm else None)
        rows, same_card_elsewhere = [], []
        for attempt, on_invoice in session.execute(attempts_and_same_card_statement(), params):
            (rows if on_invoice else same_card_elsewhere).append(attempt)
    # In one order however they were read (one statement a case, or a round's together).
    rows = sorted(rows, key=_by_time)
    same_card_elsewhere = sorted(same_card_elsewhere, key=_by_time)
    lines, paid, retries = lines_read if lines_read is not None else case_lines(session, case)
    ours = _our_charge_ids(lines)
    failed = sorted((r for r in rows if r.status == "failed"), key=lambda r: r.created or 0)
    last_failed = failed[-1] if failed else None
    card = None
    if pm is not None:
        card = CardInfo(brand=pm.brand, funding=_funding(pm.funding), fingerprint=pm.fingerprint)
    elif last_failed is not None:
        card = CardInfo(
            brand=last_failed.card_brand,
            funding=_funding(last_failed.card_funding),
            fingerprint=last_failed.card_fingerprint,
        )
    changed = False
    if pm is not None and last_failed is not None:
        changed = (
            (last_failed.payment_method_id is not None and pm.id != last_failed.payment_method_id)
            # the card updater or the customer changed this card after it failed
            or (pm.version_ts or 0) > (last_failed.created or 0)
        )
    zone = customer_timezone(country, locales)
    attempts = [_to_attempt(r, ours, True) for r in rows] + [
        _to_attempt(r, ours, False) for r in same_card_elsewhere
    ]
    tried = _tried_by_the_card_update_page(lines, pm, rows)
    if tried is not None:
        attempts.append(tried)
        changed = False  # the new card was charged when it was saved, and declined
    ctx = RetryContext(
        case_opened_at=case.opened_at,
        attempts=attempts,
        card=card,
        card_changed_since_last_failure=changed,
        customer_timezone=zone,
        amount=invoice.amount_remaining,
        currency=invoice.currency,
        past_success_days=_days_of(paid, ZoneInfo(zone)),
        customer_country=customer_country(country, locales or ()),
        retries_made=case.our_attempts,
        bank_calls=_bank_calls_in(case, lines),
    )
    decided = frozenset(
        line.dedupe_key for line in lines if line.kind == DECISION_KIND and line.dedupe_key
    )
    return Evidence(ctx, failed, decided, retries)


def _card_and_customer(
    session: Session, case: RecoveryCase
) -> tuple[PaymentMethod | None, str | None, list[str]]:
    """The card Stripe will charge (as `current_card`) and the customer's country and locales
    (none: no customer); the card and the customer remembered for the reminders planner."""
    if not case.subscription_id and not case.customer_id:
        return None, None, []  # (a case always has both: the placement is read when asked)
    *read, experiment, arm = session.execute(
        _DECISION_READ,
        {
            "subscription_id": case.subscription_id,
            "customer_id": case.customer_id,
            "case_id": case.id,
        },
    ).one()
    # The decision asks for it next, and the reminders planner after: read here, remembered.
    remember_placement(session, case.id, experiment, arm)
    return _remembered(session, case.id, cards.read_as(*read))


def _remembered(
    session: Session, case_id: int, found: cards.CardAndCustomer
) -> tuple[PaymentMethod | None, str | None, list[str]]:
    cards.remember(session, case_id, found)
    card, customer, _ = found
    if customer is None:
        return card, None, []
    return card, customer.address_country, list(customer.preferred_locales or ())


def _cards_and_customers(
    session: Session, cases: Sequence[RecoveryCase]
) -> dict[int, tuple[PaymentMethod | None, str | None, list[str]]]:
    """`_card_and_customer` for many cases, in one statement (by the cases' rows: their
    subscription and customer never change)."""
    found: dict[int, tuple[PaymentMethod | None, str | None, list[str]]] = {}
    ids = []
    for case in cases:
        if not case.subscription_id and not case.customer_id:
            found[case.id] = (None, None, [])  # as for one: its placement read when asked
        else:
            ids.append(case.id)
    if not ids:
        return found
    statement = _cards_and_customers_statement(dialect_of(session))
    for case_id, *read, experiment, arm in session.execute(statement, {"ids": sorted(ids)}):
        remember_placement(session, case_id, experiment, arm)
        found[case_id] = _remembered(session, case_id, cards.read_as(*read))
    return found


@functools.cache
def _cards_and_customers_statement(dialect: str) -> Any:
    return (
        cards.cases_cards(ExperimentSubject.experiment_key, ExperimentSubject.arm)
        .outerjoin(ExperimentSubject, ExperimentSubject.case_id == RecoveryCase.id)
        .where(in_list(RecoveryCase.id, "ids", dialect))
        .execution_options(populate_existing=True)  # (as _DECISION_READ)
    )


def _bank_calls_in(case: RecoveryCase, lines: list[Any]) -> tuple[datetime, ...]:
    """`bank_calls`, from the lines read already."""
    if case.decline_category != "needs_customer":
        return ()
    return tuple(sorted(line.at for line in lines if line.kind == BANK_CALL_KIND))


def bank_calls(session: Session, case: RecoveryCase) -> tuple[datetime, ...]:
    """When the customer said "I've contacted my bank - try again" (timeline lines). Only a
    decline that needs the customer has them: other cases skip the read."""
    if case.decline_category != "needs_customer":
        return ()
    return tuple(
        session.scalars(
            select(CaseEvent.at)
            .where(CaseEvent.case_id == case.id, CaseEvent.kind == BANK_CALL_KIND)
            .order_by(CaseEvent.at)
        )
    )


def first_attempt_success_days(
    session: Session, customer_id: str | None, zone: ZoneInfo
) -> list[int]:
    """The customer-local day of the month of each recent renewal whose first attempt
    succeeded (paid with one attempt): the policy calls a day seen twice their own payment day
    (`paydays.own_payment_days`). Retries that succeeded are not counted: they landed on days
    we chose."""
    if not customer_id:
        return []
    paid = session.scalars(paid_renewals_statement(), {"customer_id": customer_id}).all()
    return _days_of(paid, zone)


def _days_of(paid: Sequence[datetime | None], zone: ZoneInfo) -> list[int]:
    return [_aware(at).astimezone(zone).day for at in paid if at is not None]


def _tried_by_the_card_update_page(
    lines: list[Any], pm: PaymentMethod | None, rows: list[AttemptRow]
) -> Attempt | None:
    """The card-update page charges a new card the moment it is saved; when that charge was
    declined and its webhook has not arrived yet, the decline is known only from the case's
    timeline. Without it the new card would look untried ("trying the new card at once") and be
    charged a second time right after its decline."""
    if pm is None or pm.id is None:
        return None
    events = [e for e in lines if e.kind in ("card_updated", "card_update_declined")][:20]
    saved = next(
        (
            e
            for e in events
            if e.kind == "card_updated"
            and e.data.get("payment_method") == pm.id
            and e.data.get("outcome") == "declined"
        ),
        None,
    )
    if saved is None or any(
        r.payment_method_id == pm.id and r.status == "failed" and (r.created or 0) >= _ts(saved.at)
        for r in rows
    ):
        return None  # no such decline, or its charge is mirrored already
    prefix = (saved.dedupe_key or "").removesuffix(":card")
    declined = next(
        (
            e
            for e in events
            if e.kind == "card_update_declined" and e.dedupe_key == f"{prefix}:declined"
        ),
        None,
    )
    code = (
        str(declined.data.get("decline_code"))
        if declined and declined.data.get("decline_code")
        else None
    )
    return Attempt(
        at=_aware(saved.at),
        card_fingerprint=pm.fingerprint,
        card_brand=pm.brand,
        decline=Decline(failure_code="card_declined", decline_code=code, card_brand=pm.brand),
        succeeded=False,
        by="recovery",
    )


def _aware(at: datetime) -> datetime:
    # SQLite hands back naive datetimes; every stored time is UTC.
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _ts(at: datetime) -> int:
    return int(_aware(at).timestamp())
