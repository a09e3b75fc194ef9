"""Every table of a database as comparable text: what two runs of the same history (before and
after a change to how it is played) must agree on, row for row, beyond the figures' fingerprint
of bench/demo_seed.py.

Left out, because they differ between two runs of the same story: what is drawn at random (a
cancel-flow session's id, `cxs_` and 32 hex digits, and its token's hash), the ids of rows kept
by triggers, and the columns named in `ignore` (by default when the inbox received and processed
an event: what a change to when events are delivered moves).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Set

from sqlalchemy import Engine, inspect, text

RANDOM = re.compile(r"cxs_[0-9a-f]{32}")
RANDOM_COLUMNS = {
    "cancel_sessions": frozenset({"token_hash"}),
    # Rows the database's triggers delete and insert again whenever the mirror replaces a
    # subscription's items (migration 0020): their ids count those rewrites, not the story.
    "recovered_prices": frozenset({"id"}),
}
# The inbox's own times: when an event was received, processed or is to be tried again.
RECEIPT = {"stripe_events": frozenset({"received_at", "processed_at", "next_attempt_at"})}


def tables(engine: Engine, ignore: Mapping[str, Set[str]] = RECEIPT) -> dict[str, list[str]]:
    """Table -> its rows (JSON text, sorted), random parts and `ignore`d columns left out."""
    found: dict[str, list[str]] = {}
    with engine.connect() as conn:
        for table in sorted(inspect(conn).get_table_names()):
            result = conn.execute(text(f'SELECT * FROM "{table}"'))
            skip = RANDOM_COLUMNS.get(table, frozenset()) | ignore.get(table, frozenset())
            names = result.keys()  # a Result's columns, not a dict's
            columns = [c for c in names if c not in skip]
            rows = [{c: row[c] for c in columns} for row in result.mappings()]
            found[table] = sorted(RANDOM.sub("cxs_", json.dumps(r, default=str)) for r in rows)
    return found


def differences(before: Mapping[str, list[str]], after: Mapping[str, list[str]]) -> list[str]:
    """One line per table whose rows differ: how many are only in `before`, only in `after`."""
    lines = []
    for table in sorted(set(before) | set(after)):
        old, new = before.get(table, []), after.get(table, [])
        if old != new:
            gone, came = _multiset(old, new), _multiset(new, old)
            lines.append(
                f"{table}: {len(old)} -> {len(new)} rows, {gone} only before, {came} after"
            )
    return lines


def _multiset(rows: list[str], other: list[str]) -> int:
    """How many of `rows` are not in `other` (counting repeats)."""
    return sum((Counter(rows) - Counter(other)).values())
