"""What a charge retry's result writes: the timeline line of our payment or of its decline, and
the mirror rows behind it (the paid invoice; the declined attempt and its invoice's link to the
PaymentIntent) - kept now, because the webhooks with the same facts may come later, or never.

One action writes its rows at once (`mirror_handlers.apply_ops`, a statement or two each, as a
webhook's would); a round's recording writes all of its rows together through the events' batch
writer (`mirror_together`: one statement a table to read and lock them, one to write them).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from recovery.adapters.stripe.errors import AuthenticationRequired, CardDeclined
from recovery.db import dialect_of, in_list
from recovery.domain import stripe_objects as so
from recovery.models import PaymentMethod, RecoveryCase
from recovery.runtime import ActionContext, Changes
from recovery.services.cases import cards as case_cards
from recovery.services.cases.lines import Line
from recovery.services.events import mirror
from recovery.services.events.mirror_batch import MirrorBatch
from recovery.services.events.mirror_handlers import Attempt, Link, Op

_CARDS = functools.cache(
    lambda dialect: select(PaymentMethod).where(in_list(PaymentMethod.id, "ids", dialect))
)


def cards_by_id(session: Session, pm_ids: Sequence[str]) -> dict[str, PaymentMethod]:
    """A round's declined cards, in one statement."""
    if not pm_ids:
        return {}
    found = session.scalars(_CARDS(dialect_of(session)), {"ids": list(pm_ids)})
    return {pm.id: pm for pm in found}


def now_ts(ctx: ActionContext) -> int:
    return int(ctx.clock.now().timestamp())


def payment_result(
    ctx: ActionContext, case: RecoveryCase, attempt: int, key: str, paid: dict[str, Any]
) -> tuple[Line, list[Op]]:
    """Our payment: its timeline line and its invoice's mirror write (before its webhooks),
    both to be written."""
    case.our_attempts = attempt
    data = {"attempt": attempt, "succeeded": True}
    summary = f"our retry {attempt} succeeded"
    line = Line(case.id, ctx.clock.now(), "our_attempt", summary, f"{key}:result", data)
    return line, [mirror.invoice_write(so.invoice_state(paid), now_ts(ctx))]


def mirror_together(session: Session, ops: Sequence[Op]) -> None:
    """A round's mirror writes through the events' batch writer: the same rules (newest
    version wins, a tie asks Stripe, an attempt merges field by field), the same end state as
    writing them one by one (`mirror_handlers.apply_ops`)."""
    batch = MirrorBatch(session, dialect_of(session), keeps_writes=True)
    batch.prefetch(ops)
    batch.commit(batch.plan(list(ops), Changes()))
    batch.flush()


def card_of(
    ctx: ActionContext,
    case: RecoveryCase,
    exc: CardDeclined | AuthenticationRequired,
    cards: Mapping[str, PaymentMethod],
) -> PaymentMethod | None:
    """The card as we know it: without its fingerprint the policy could not count this attempt
    against the card's limit (an intent that needs 3D Secure has no charge to tell it later).
    `cards`: those read for a round already, by id."""
    pm_id = exc.payment_method_id
    card = (cards.get(pm_id) or ctx.session.get(PaymentMethod, pm_id)) if pm_id else None
    return card if card is not None else case_cards.current_card(ctx.session, case)


def declined_result(
    ctx: ActionContext,
    case: RecoveryCase,
    attempt: int,
    exc: CardDeclined | AuthenticationRequired,
    card: PaymentMethod | None,
) -> tuple[Line, list[Op]]:
    """The declined attempt: its timeline line and its mirror writes (the attempt, and its
    invoice's link to the PaymentIntent), to be written."""
    attempt_id = exc.charge_id or f"{exc.payment_intent_id or case.invoice_id}:{attempt}"
    state = so.AttemptState(
        id=attempt_id,
        payment_intent_id=exc.payment_intent_id,
        invoice_id=case.invoice_id,
        customer_id=case.customer_id,
        payment_method_id=exc.payment_method_id,
        status="failed",
        amount=case.amount_due,
        currency=case.currency,
        failure_code=exc.code,
        failure_message=exc.message[:1000] if exc.message else None,
        decline_code=exc.decline_code,
        outcome_type=None,
        outcome_reason=None,
        network_status=None,
        advice_code=exc.advice_code,
        network_advice_code=exc.network_advice_code,
        network_decline_code=exc.network_decline_code,
        card_brand=so.normalize_brand(exc.card_brand or (card.brand if card else None)),
        card_last4=card.last4 if card else None,
        card_funding=card.funding if card else None,
        card_fingerprint=card.fingerprint if card else None,
        created=now_ts(ctx),
    )
    ops: list[Op] = []
    if state.invoice_id and state.payment_intent_id:
        ops.append(Link(state.invoice_id, state.payment_intent_id))
    ops.append(Attempt(state, now_ts(ctx)))
    summary = f"our retry {attempt} declined: {exc.decline_code or exc.code or 'declined'}"
    data = {
        "attempt": attempt,
        "attempt_id": attempt_id,
        "succeeded": False,
        "decline_code": exc.decline_code,
        "failure_code": exc.code,
        "network_advice_code": exc.network_advice_code,
    }
    key = f"case:{case.id}:attempt:{attempt}:result"
    return Line(case.id, ctx.clock.now(), "our_attempt", summary, key, data), ops
