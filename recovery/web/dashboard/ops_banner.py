"""The banner every dashboard page shows an admin when something needs them: parked Stripe
events, overdue actions, failing sends - linking to /dashboard/health. And, to everyone, that
the service runs in shadow mode (nothing is charged or sent), linking to the shadow report."""

from __future__ import annotations

from typing import Any

from recovery.services.ops.attention import CAP, attention
from recovery.web import runtime
from recovery.web.dashboard.auth import current_user
from recovery.web.dashboard.blueprint import bp


def _counted(n: int, one: str, many: str) -> str:
    shown = f"{CAP}+" if n >= CAP else str(n)
    return f"{shown} {one if n == 1 else many}"


def attention_lines() -> list[str]:
    """What needs an admin, one phrase each; empty for viewers and when all is well."""
    user = current_user()
    if user is None or not user.is_admin:
        return []
    found = attention(runtime())
    lines = []
    if found.parked_events:
        lines.append(
            _counted(found.parked_events, "Stripe event is parked", "Stripe events are parked")
            + " after repeated errors"
        )
    if found.overdue_actions:
        lines.append(
            _counted(found.overdue_actions, "action is overdue", "actions are overdue")
            + ": no worker is getting it done"
        )
    if found.failing_sends:
        lines.append(
            _counted(found.failing_sends, "message is failing", "messages are failing") + " to send"
        )
    return lines


@bp.context_processor
def ops_banner() -> dict[str, Any]:
    return {
        "attention_lines": attention_lines,
        "shadow_mode": runtime().settings.is_shadow,
    }
