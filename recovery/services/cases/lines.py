"""A round's timeline lines written together: one multi-row INSERT ... ON CONFLICT DO NOTHING
for many cases' lines, where `log.record` is one statement a line. The same rows and the same
once-per-dedupe-key rule as `log.record`; a line added notes its case as moved, as there."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.orm import Session

from recovery.db import insert_rows_ignoring
from recovery.models import CaseEvent
from recovery.runtime import note_case_moved

_LINES = cast(Table, CaseEvent.__table__)


@dataclass(frozen=True)
class Line:
    """One timeline line to write (always with a dedupe key: written once)."""

    case_id: int
    at: datetime
    kind: str
    summary: str
    dedupe_key: str
    data: Mapping[str, Any] = field(default_factory=dict)


def record_lines(session: Session, lines: Sequence[Line]) -> set[str]:
    """Add the lines not written before (once per dedupe key), in their order; returns the keys
    of those added."""
    if not lines:
        return set()
    rows = [
        {
            "case_id": line.case_id,
            "at": line.at,
            "kind": line.kind,
            "summary": line.summary,
            "data": dict(line.data),
            "dedupe_key": line.dedupe_key,
        }
        for line in lines
    ]
    returning = ("case_id", "dedupe_key")
    added = insert_rows_ignoring(session, _LINES, rows, ["dedupe_key"], returning).all()
    for case_id, _ in added:  # its reminders follow before this unit of work commits
        note_case_moved(session, case_id)
    return {key for _, key in added}
