"""Reactions that run only when the state they depend on moved.

Most events re-tell what the mirror already holds (a retried delivery, an older state arriving
late, a renewal that changes nothing a planner reads). The planners below are idempotent, so
running them anyway was correct, but it was most of the work of an event:

- the reminders planner runs for the recovery cases whose state moved in this event (a case
  moves when its timeline gets a line: opened, a decision, recovered, closed, lost, ...) and
  for the cases of a subscription whose status moved (an ended subscription gets its notice);
  a case moved by a due action or a page is planned before that unit of work commits
  (`sync_moved_cases`, run by the runtime);
- the expiring-card planner runs only when a card's expiry, a default card, or a
  subscription's renewal date or liveness changed in the mirror.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from recovery.models import RecoveryCase
from recovery.runtime import Payload, ProcessingContext, Runtime, take_moved_cases
from recovery.services.messaging import expiry, reminders


def sync_moved_cases(runtime: Runtime, session: Session, case_ids: Sequence[int]) -> None:
    """Make the reminders of these cases match their state now."""
    if not case_ids:
        return
    now = runtime.clock.now()
    cases = session.scalars(
        select(RecoveryCase).where(RecoveryCase.id.in_(case_ids)).order_by(RecoveryCase.id)
    ).all()
    for case in cases:
        reminders.sync_case(session, case, runtime.rules, runtime.settings, now)
    take_moved_cases(session)  # the planner's own timeline lines are not moves to follow


def reminders_for_moved_cases(ctx: ProcessingContext, event: Payload, obj: Payload) -> None:
    ids = take_moved_cases(ctx.session)
    ended = ctx.changes.subscription_status
    if ended:
        ids.update(
            ctx.session.scalars(
                select(RecoveryCase.id).where(RecoveryCase.subscription_id.in_(sorted(ended)))
            )
        )
    sync_moved_cases(ctx.runtime, ctx.session, sorted(ids))


def expiry_when_inputs_moved(ctx: ProcessingContext, event: Payload, obj: Payload) -> None:
    if ctx.changes.expiry_inputs:
        expiry.on_card_change(ctx, event, obj)
