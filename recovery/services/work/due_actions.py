"""Durable due actions: scheduled with a unique dedupe key, claimed under a lease, run once.
What callers use, in one place: the rows (`claims`), the three steps (`steps`), the worker's
loop (`runner`).

Claims use `FOR UPDATE SKIP LOCKED` on PostgreSQL, so any number of workers on any number of
hosts split the work without blocking each other; SQLite (one writer) uses a conditional UPDATE
and checks the row count. A worker that dies leaves its claims `running` until the lease
expires, then anyone reclaims them. Completing re-checks the lease in the same transaction as
the action's own writes, so a worker whose lease was taken over commits nothing.

No transaction is ever open while a provider is called (`ActionRunner`): a batch is claimed and
decided in one transaction, the provider calls of the batch run on a pool of threads with no
transaction open, each under a deadline well inside the lease, and their outcomes are recorded
in a second transaction, committing only while each lease is still held. Deciding and recording
go by the round, not by the action: a kind with `decide_many` reads its rows for the round in
one query per table, `RecordTogether` writes the common outcomes (a message sent, a charge
paid or declined) in set-based statements, the rest share one savepoint; any failure redoes
its group one action at a time, each in a savepoint, so it stays with its own action. Actions
about one subject (a case, a message's case, a cancel session) run one after the other, in due
order; different subjects at once.

In shadow mode (RECOVERY_MODE=shadow) a three-step action that decided to call a provider is
finished as `shadow` with a note of what it would have done (`services.work.shadow`), and
nothing is called; a shadow action is finished for good and never claimed again.
"""

from __future__ import annotations

from recovery.db import take_writers_turn
from recovery.runtime import Claimed, Runtime
from recovery.services.work.claims import DEFAULT_LEASE as DEFAULT_LEASE
from recovery.services.work.claims import LeaseLost as LeaseLost
from recovery.services.work.claims import PermanentError as PermanentError
from recovery.services.work.claims import action_backoff as action_backoff
from recovery.services.work.claims import cancel_by_keys as cancel_by_keys
from recovery.services.work.claims import cancel_pending as cancel_pending
from recovery.services.work.claims import cancel_pending_many as cancel_pending_many
from recovery.services.work.claims import claim as claim
from recovery.services.work.claims import claim_in as claim_in
from recovery.services.work.claims import schedule as schedule
from recovery.services.work.claims import schedule_many as schedule_many
from recovery.services.work.runner import DEFAULT_BATCH as DEFAULT_BATCH
from recovery.services.work.runner import ActionRunner as ActionRunner
from recovery.services.work.steps import Called as Called
from recovery.services.work.steps import Decided as Decided
from recovery.services.work.steps import call as call
from recovery.services.work.steps import decide as decide
from recovery.services.work.steps import record as record


def run_claimed(runtime: Runtime, action: Claimed, owner: str) -> str:
    """Run one claimed action through its steps, each transaction on its own (tests, drills)."""
    with runtime.db.transaction() as session:
        take_writers_turn(session, exclusive=False)
        decided = decide(runtime, session, action, owner)
    if not isinstance(decided, Decided):
        return decided
    called = call(runtime, decided)
    with runtime.db.transaction() as session:
        take_writers_turn(session, exclusive=False)
        return record(runtime, session, called, owner)
