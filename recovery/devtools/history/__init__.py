"""Months of billing history, played through the real service on a frozen clock.

A `FrozenClock` starts about six months before `end` and steps from one moment to the next:
the next renewal or customer action of the simulation, the next due action in the database
(retries, reminders, Stripe changes), or the next day's daily jobs. Stripe is the in-repo fake;
each of its events goes through the real inbox (`recovery.services.inbox.receive_events`), so
the mirror, the case machinery, the retry policy, the reminder planner and the outbox do what
they do in production, and the worker runs what comes due against the fake.

The population, their declines and what they do about them come from one seeded
`random.Random`: a seed and an end time give the same history.

The parts: `model` (the declines and what follows them, the subscribers, the report),
`simulation` (the schedule, webhook delivery through the inbox, running what is due),
`customers` (what customers do: new cards, the hosted page, the cancel flow), `billing` (the
catalogue, sign-ups, renewals and their declines) and `loop` (the run, day by day).
"""

from __future__ import annotations

from recovery.devtools.history.loop import History
from recovery.devtools.history.model import HistoryReport

__all__ = ["History", "HistoryReport"]
