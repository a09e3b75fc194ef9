"""A round's timeline lines written together: one multi-row INSERT ... ON CONFLICT DO NOTHING
for many cases' lines, where `log.record` is one statement a line. The same rows and the same
once-per-dedupe-key rule as `log.record`; a line added notes its case as moved, as there."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.orm import Session

from recovery.db import insert_ignoring
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


@functools.cache
def _insert(dialect: str) -> Any:
    # Built once: executed with a list of rows, SQLAlchemy sends them as one multi-row INSERT
    # ("insertmanyvalues") and returns the keys of the rows it added.
    return insert_ignoring(dialect, _LINES, ["dedupe_key"]).returning(
        _LINES.c.case_id, _LINES.c.dedupe_key
    )


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
    dialect = session.get_bind().dialect.name
    added = session.execute(_insert(dialect), rows).all()
    for case_id, _ in added:  # its reminders follow before this unit of work commits
        note_case_moved(session, case_id)
    return {key for _, key in added}
