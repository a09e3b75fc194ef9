"""Who exported what: every CSV export of customer data is written to the audit log before its
first row is sent, with the filters it used and whether it carried whole email addresses (an
admin's export) or masked ones (a viewer's)."""

from __future__ import annotations

from collections.abc import Mapping

from recovery.runtime import Runtime
from recovery.services.accounts import users as accounts

EXPORTS = ("cases", "cancel_sessions", "overview", "experiments")


def record_export(
    rt: Runtime,
    *,
    user_id: int,
    actor: str,
    what: str,
    filters: Mapping[str, str],
    full_emails: bool,
) -> None:
    """One audit row per export, in its own transaction (committed before the file streams)."""
    if what not in EXPORTS:
        raise ValueError(f"unknown export {what!r}")
    with rt.db.transaction() as session:
        accounts.audit(
            session,
            at=rt.clock.now(),
            user_id=user_id,
            actor=actor,
            action=f"export_{what}",
            details={"filters": dict(filters), "emails": "full" if full_emails else "masked"},
        )
