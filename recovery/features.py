"""Wires each feature's event reactions and due-action handlers into the shared registries."""

from __future__ import annotations


def register_all() -> None:
    """Idempotent: safe to call from every Runtime.build."""
    from recovery.services import case_actions, case_reactions, refetch

    refetch.register()
    case_reactions.register()
    case_actions.register()
