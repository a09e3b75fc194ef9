"""A case's timeline and the names of the work about it.

Every line a case's timeline shows is recorded here (once per dedupe key); every due action
about a case carries `subject(case_id)`, so one call finds or cancels all of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from recovery.db import insert_or_ignore
from recovery.models import (
    CaseEvent,
    RecoveryCase,
)
from recovery.runtime import note_case_moved

RETRY_KIND = "case.retry"
AUTO_ADVANCE_KIND = "case.auto_advance_off"
END_OF_DUNNING_KIND = "case.end_of_dunning"
WINDOW_END_KIND = "case.window_end"


def subject(case_id: int) -> str:
    """Every due action about a case (retries, reminders) carries this subject."""
    return f"case:{case_id}"


def record(
    session: Session,
    case: RecoveryCase,
    now: datetime,
    kind: str,
    summary: str,
    data: Mapping[str, Any] | None = None,
    dedupe_key: str | None = None,
) -> bool:
    """Add a line to the case's timeline (once per dedupe key). True when added."""
    values = {
        "case_id": case.id,
        "at": now,
        "kind": kind,
        "summary": summary,
        "data": dict(data or {}),
        "dedupe_key": dedupe_key,
    }
    if dedupe_key is None:
        session.add(CaseEvent(**values))
        added = True
    else:
        added = insert_or_ignore(session, CaseEvent, values, ["dedupe_key"])
    if added:  # what follows a case's state (its reminders) runs before this unit commits
        note_case_moved(session, case.id)
    return added
