"""Issue 15, item 2: a reversed save is not a save. Whatever the sessions and cancellations, the
overview's cancel-flow figures and the session list agree with a plain reading of the rule:
a save is reversed by a later cancel of the same subscription, in a later session or in
Stripe."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete

from recovery.db import Database
from recovery.models import CancelSession, Subscription
from recovery.services.reporting import cancel_sessions, saves
from recovery.services.reporting.cancel_sessions import SessionFilters
from recovery.services.reporting.metrics.cancel_flow import cancel_flow

T0 = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
OUTCOMES = ("saved_by_pause", "saved_by_discount", "cancelled", "abandoned")

session_st = st.tuples(
    st.integers(min_value=0, max_value=2),  # subscription
    st.sampled_from(OUTCOMES),
    st.integers(min_value=0, max_value=60 * 24),  # minutes after T0
)


def _session(n: int, sub: int, outcome: str, minutes: int) -> CancelSession:
    at = T0 + timedelta(minutes=minutes)
    saved = outcome.startswith("saved_by_")
    return CancelSession(
        id=f"cs_{n}",
        token_hash=f"{n:064d}",
        source="api",
        customer_id=f"cus_{sub}",
        subscription_id=f"sub_{sub}",
        return_url="https://example.com",
        variant="default",
        created_at=at,
        expires_at=at + timedelta(hours=1),
        decided_at=at,
        outcome=outcome,
        currency="usd",
        mrr_before=2900,
        mrr_after=2000 if saved else 0,
    )


def _subscription(sub: int, cancelled_minutes: int | None) -> Subscription:
    at = None if cancelled_minutes is None else T0 + timedelta(minutes=cancelled_minutes)
    return Subscription(
        id=f"sub_{sub}",
        customer_id=f"cus_{sub}",
        status="canceled" if at else "active",
        canceled_at=at,
    )


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    sessions=st.lists(session_st, min_size=1, max_size=8, unique_by=lambda s: s[2]),
    stripe_cancels=st.lists(
        st.one_of(st.none(), st.integers(min_value=0, max_value=60 * 24)), min_size=3, max_size=3
    ),
)
def test_reversed_saves_leave_every_figure_and_list(
    sqlite_url: str,
    tmp_path: Path,
    sessions: list[tuple[int, str, int]],
    stripe_cancels: list[int | None],
) -> None:
    # the plain reading of the rule
    reversed_ids, held_ids, cancelled = set(), set(), 0
    for n, (sub, outcome, minutes) in enumerate(sessions):
        if outcome == "cancelled":
            cancelled += 1
        if not outcome.startswith("saved_by_"):
            continue
        later_session = any(s == sub and o == "cancelled" and m > minutes for s, o, m in sessions)
        in_stripe = stripe_cancels[sub] is not None and stripe_cancels[sub] > minutes
        (reversed_ids if later_session or in_stripe else held_ids).add(f"cs_{n}")
    decided = len(held_ids) + len(reversed_ids) + cancelled

    db = Database(sqlite_url)
    try:
        with db.transaction() as session:
            session.execute(delete(CancelSession))
            session.execute(delete(Subscription))
            for sub, at in enumerate(stripe_cancels):
                session.add(_subscription(sub, at))
            for n, (sub, outcome, minutes) in enumerate(sessions):
                session.add(_session(n, sub, outcome, minutes))
        with db.reading() as session:
            stats = cancel_flow(session, "usd", T0, T0 + timedelta(days=2))
            listed = cancel_sessions.list_sessions(session, SessionFilters(), limit=50).rows
            only_reversed = cancel_sessions.list_sessions(
                session, SessionFilters(outcome=saves.REVERSED), limit=50
            ).rows
            paused = cancel_sessions.list_sessions(
                session, SessionFilters(outcome="saved_by_pause"), limit=50
            ).rows
    finally:
        db.dispose()

    assert stats.saved == len(held_ids)
    assert stats.saves_reversed == len(reversed_ids)
    assert stats.cancelled == cancelled
    assert stats.sessions == len(sessions)
    assert stats.save_rate == (None if decided == 0 else round(len(held_ids) / decided, 4))
    assert stats.revenue_saved == 2000 * len(held_ids)  # only saves that held keep revenue
    assert sum(k.count for k in stats.saves_by_offer) == len(held_ids)
    assert {r.id for r in only_reversed} == reversed_ids
    assert {r.id for r in listed if r.shown_outcome == saves.REVERSED} == reversed_ids
    assert all(r.id in held_ids for r in paused)
    assert {r.id for r in listed if r.save_reversed_at is not None} == reversed_ids
