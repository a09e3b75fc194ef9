"""Wires each feature's event reactions and due-action handlers into the shared registries."""

from __future__ import annotations


def register_all() -> None:
    """Idempotent: safe to call from every Runtime.build."""
    from recovery.services import (
        card_update_completion,
        case_actions,
        case_reactions,
        expiry,
        outbox,
        refetch,
        reminders,
    )

    refetch.register()
    case_reactions.register()
    case_actions.register()
    # After case_reactions: reminders react to what the case just became.
    outbox.register()
    reminders.register()
    expiry.register()
    card_update_completion.register()  # card-update links: webhooks finish a closed tab
