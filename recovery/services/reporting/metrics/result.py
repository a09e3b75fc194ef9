"""What the overview computes: the `Overview` and its parts, plain frozen dataclasses.

Amounts are in the currency's minor units, as Stripe reports them (cents; yen for JPY).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from recovery.i18n import major_units
from recovery.services.reporting.metrics.definitions import DEFINITIONS
from recovery.services.reporting.metrics.outreach import OutreachStats
from recovery.services.reporting.metrics.validated import Validated


@dataclass(frozen=True)
class Tally:
    count: int = 0
    amount: int = 0


@dataclass(frozen=True)
class Keyed:
    """A count and an amount under a key (a trigger, a channel, a reason for loss)."""

    key: str
    count: int
    amount: int


@dataclass(frozen=True)
class Breakdown:
    """Failed and recovered cases under one key (a decline category, a card brand)."""

    key: str
    failed_count: int
    failed_amount: int
    recovered_count: int
    recovered_amount: int
    recovered_share: float | None  # recovered amount / failed amount


@dataclass(frozen=True)
class Week:
    week: str  # ISO week, e.g. 2026-W45
    starts: date  # its Monday
    failed_count: int
    failed_amount: int
    recovered_count: int
    recovered_amount: int


@dataclass(frozen=True)
class ExpiringCards:
    within_30_days: int
    within_60_days: int
    notified: int
    replaced_in_time: int
    pending: int = 0  # notified, not replaced, and not expired yet: may still be replaced


@dataclass(frozen=True)
class MonthRecovery:
    """The cases that failed in one calendar month and what was paid within 30/60/90 days."""

    month: str  # 2026-07
    starts: date
    failed_count: int
    failed_amount: int
    recovered_30: int
    recovered_60: int
    recovered_90: int
    complete_30: bool  # the 30-day window of the month's last failure has passed
    complete_60: bool
    complete_90: bool

    def share(self, days: int) -> float | None:
        amount = {30: self.recovered_30, 60: self.recovered_60, 90: self.recovered_90}[days]
        return share(amount, self.failed_amount)

    def complete(self, days: int) -> bool:
        return {30: self.complete_30, 60: self.complete_60, 90: self.complete_90}[days]


@dataclass(frozen=True)
class CurrencySummary:
    """The period's headline figures in one currency (the overview's side-by-side table)."""

    currency: str
    failed: Tally
    recovered: Tally
    recovered_share: float | None
    in_progress: Tally
    lost: Tally
    recovered_monthly_revenue: int
    pauses: int = 0  # pauses instead of losses carried out in the period (metrics/outreach.py)
    pauses_resumed: int = 0  # of those, paying again since the pause ended


@dataclass(frozen=True)
class Answer:
    at: datetime
    reason: str | None
    text: str


@dataclass(frozen=True)
class CancelFlowStats:
    sessions: int
    saved: int  # saves kept: no cancel since
    saves_reversed: int  # accepted an offer, then cancelled after all (reporting/saves.py)
    cancelled: int
    abandoned: int
    undecided: int
    save_rate: float | None  # saved / (saved + saves_reversed + cancelled)
    saves_by_offer: tuple[Keyed, ...]  # amount: monthly revenue kept
    reasons: tuple[Keyed, ...]  # amount: monthly revenue of those sessions before deciding
    recent_answers: tuple[Answer, ...]
    revenue_saved: int  # monthly revenue the saves keep
    revenue_conceded: int  # monthly revenue the offers gave away


@dataclass(frozen=True)
class Overview:
    period_from: datetime
    period_to: datetime
    currency: str
    exponent: int  # decimals of the currency's major unit: amount / 10**exponent
    failed: Tally
    recovered: Tally
    recovered_share: float | None
    in_progress: Tally
    lost: Tally
    lost_reasons: tuple[Keyed, ...]
    recovered_monthly_revenue: int
    median_days_to_recover: float | None
    by_decline_category: tuple[Breakdown, ...]
    by_card_brand: tuple[Breakdown, ...]
    by_trigger: tuple[Keyed, ...]
    by_reminder_channel: tuple[Keyed, ...]
    weekly: tuple[Week, ...]
    expiring_cards: ExpiringCards
    cancel_flow: CancelFlowStats
    generated_at: datetime = field(compare=False)
    outreach: OutreachStats = field(default_factory=OutreachStats)  # annual offers, win-back
    by_month: tuple[MonthRecovery, ...] = ()
    by_currency: tuple[CurrencySummary, ...] = ()
    # Saves validated and recoveries durable at 30/60/90 days (`validated`), beside the raw
    # save rate and recovered figures.
    validated: Validated = field(default_factory=Validated)

    def as_json(self) -> dict[str, Any]:
        """The API's body: dates as ISO strings, amounts in minor units, and what each figure
        counts (`definitions`)."""
        data: dict[str, Any] = _jsonable(asdict(self))
        data["definitions"] = dict(DEFINITIONS)
        return data


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def share(part: int, whole: int) -> float | None:
    """A ratio to four decimals (0.4286 = 42.86 %); None when the whole is zero."""
    return None if whole == 0 else round(part / whole, 4)


def exponent_of(currency: str) -> int:
    exp = major_units(1, currency).as_tuple().exponent
    assert isinstance(exp, int)
    return -exp


def major(amount: int, currency: str) -> Decimal:
    return major_units(amount, currency)
