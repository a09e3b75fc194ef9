"""What each Stripe event type does, looked up in the runtime's handler table.

The table (`recovery.services.registry`) lists for every event type first the mirror update
(newest state wins), then every reaction, in order; all run in the event's savepoint of the
batch's transaction (services/events/inbox.py). The mirror update records what it changed in
`ctx.changes`, which the reactions that depend on one kind of state read.
Processing only touches the database: anything that calls out (Stripe, email, SMS) is written
as a due action and done by the worker after commit.
"""

from __future__ import annotations

from recovery.runtime import Handlers, Payload, ProcessingContext


def is_handled(handlers: Handlers, event_type: str) -> bool:
    return bool(handlers.on_event.get(event_type))


def process_payload(ctx: ProcessingContext, event: Payload) -> bool:
    """Apply one event. False when its type is not one we act on (stored, nothing to do)."""
    reactions = ctx.runtime.handlers.on_event.get(event["type"], ())
    obj = event["data"]["object"]
    for reaction in reactions:
        reaction(ctx, event, obj)
    return bool(reactions)
