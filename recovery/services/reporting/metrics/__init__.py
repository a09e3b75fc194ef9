"""The billing dashboard's numbers: one code path for the overview page and GET /api/v1/metrics.

Every figure is for one currency and one period `[period_from, period_to)` (UTC). Amounts are in
the currency's minor units, exactly as Stripe reports them (cents; yen for JPY). One module per
group of figures, each with its definitions:

- `cohort`: failed, recovered, in progress, lost; recovered monthly revenue, median days to
  recover, by decline category, card brand and trigger - the cases opened in the period,
  each in the state it is in now;
- `weekly`: the same cohort per ISO week;
- `by_month`: recovery by failure month - the last 12 months' failed amount and the share of it
  paid within 30 / 60 / 90 days;
- `reminder_channels`: the channel of the last reminder before a customer's payment;
- `expiring_cards`: cards about to stop working, notices sent, cards replaced in time;
- `cancel_flow`: sessions, saves, reasons and revenue kept;
- `rollups`: the sums above read per day from the rollups the worker keeps
  (`rollup_refresh`), the days not rolled up yet computed directly; `held_rollups` the same
  for the saves validated and recoveries durable;
- `parameters`: the period and currency checks; `result`: the `Overview` shape;
  `compute`: all of them together, and the headline figures per currency side by side;
- `definitions`: what each figure counts, in the words the overview prints under it.
"""

from recovery.services.reporting.metrics.compute import compute_overview, currencies, overview
from recovery.services.reporting.metrics.definitions import COHORT, DEFINITIONS
from recovery.services.reporting.metrics.parameters import (
    DEFAULT_CURRENCY,
    BadPeriod,
    check_currency,
    currencies_in_use,
    default_currency,
    period_of,
)
from recovery.services.reporting.metrics.result import (
    Answer,
    Breakdown,
    CancelFlowStats,
    CurrencySummary,
    ExpiringCards,
    Keyed,
    MonthRecovery,
    Overview,
    Tally,
    Week,
    share,
)

__all__ = [
    "COHORT",
    "DEFAULT_CURRENCY",
    "DEFINITIONS",
    "Answer",
    "BadPeriod",
    "Breakdown",
    "CancelFlowStats",
    "CurrencySummary",
    "ExpiringCards",
    "Keyed",
    "MonthRecovery",
    "Overview",
    "Tally",
    "Week",
    "check_currency",
    "compute_overview",
    "currencies",
    "currencies_in_use",
    "default_currency",
    "overview",
    "period_of",
    "share",
]
