"""A pause instead of a loss: the dates a pause offered from the final notice may run to.
Pure: `now` comes in as an argument."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class PauseChoice:
    months: int
    resumes_at: datetime  # Stripe's pause_collection[resumes_at]: collection restarts then


def add_months(at: datetime, months: int) -> datetime:
    """The same time `months` calendar months later; a day the month lacks becomes its last
    (31 January + 1 month = 28 or 29 February), as Stripe bills month ends."""
    index = at.month - 1 + months
    year, month = at.year + index // 12, index % 12 + 1
    return at.replace(year=year, month=month, day=min(at.day, calendar.monthrange(year, month)[1]))


def choices(start: datetime, pause_months: int) -> tuple[PauseChoice, ...]:
    """One choice per month, 1..pause_months (`retry.pause_months`), counted from `start`."""
    return tuple(PauseChoice(m, add_months(start, m)) for m in range(1, pause_months + 1))
