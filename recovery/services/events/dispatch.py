"""What each Stripe event type does, looked up in the runtime's handler table.

The table (`recovery.services.registry`) lists for every event type first the mirror update
(newest state wins), then every reaction, in order; all run in the event's savepoint of the
batch's transaction (services/events/inbox.py). The mirror update records what it changed in
`ctx.changes`, which the reactions that depend on one kind of state read.
Processing only touches the database: anything that calls out (Stripe, email, SMS) is written
as a due action and done by the worker after commit.
"""

from __future__ import annotations

from collections.abc import Callable

from recovery.runtime import Gated, Handlers, Payload, ProcessingContext, Reaction
from recovery.services.cases import reactions as case
from recovery.services.events import gates
from recovery.services.events.mirror_handlers import MirrorHandler
from recovery.services.outreach import contacts


def is_handled(handlers: Handlers, event_type: str) -> bool:
    return bool(handlers.on_event.get(event_type))


MirrorWriter = Callable[[MirrorHandler, Payload], None]


def process_payload(
    ctx: ProcessingContext, event: Payload, write_mirror: MirrorWriter | None = None
) -> bool:
    """Apply one event. False when its type is not one we act on (stored, nothing to do).
    `write_mirror`, when given, writes the event's mirror rows in place of its mirror handler
    (the worker's batch does, with the rows it has read already)."""
    reactions = ctx.runtime.handlers.on_event.get(event["type"], ())
    obj = event["data"]["object"]
    for reaction in reactions:
        if write_mirror is not None and isinstance(reaction, MirrorHandler):
            write_mirror(reaction, event)
            continue
        if case.deferred(ctx.session) and not _takes_deferred(reaction):
            # A reaction that may read or move a case: the batch's noted re-evaluations first,
            # as if each had been made when asked (services/cases/reactions.py); those of the
            # event's customer, whose cases are all such a reaction reads.
            if isinstance(reaction, Gated) and not reaction.needed(ctx, event, obj):
                continue
            case.reevaluate_deferred(ctx.runtime, ctx.session, customer=gates.customer_of(obj))
        reaction(ctx, event, obj)
    return bool(reactions)


# The reactions that make a noted re-evaluation themselves before they read or move its case,
# and those that read no case's decision (a customer's contacts follow its metadata).
_TAKE_DEFERRED: frozenset[object] = frozenset(
    (
        contacts.on_customer,
        case.on_invoice_failure,
        case.on_invoice_action_required,
        case.on_payment_failure,
        case.on_invoice_paid,
        case.on_invoice_updated,
        case.on_subscription_deleted,
        case.on_card_change,
        gates.reminders_for_moved_cases.reaction,
    )
)


def _takes_deferred(reaction: Reaction) -> bool:
    if isinstance(reaction, MirrorHandler):
        return True
    inner = reaction.reaction if isinstance(reaction, Gated) else reaction
    return inner in _TAKE_DEFERRED
