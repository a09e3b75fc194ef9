"""What each figure of the overview counts, in the words the page shows under it.

These sentences are the definitions: the modules that compute the figures (`cohort`,
`weekly`, `by_month`, `expiring_cards`, `cancel_flow`) implement exactly them and point here,
and the overview prints them under each tile, so the page and the code cannot say different
things. The API's figures are the same numbers (GET /api/v1/metrics returns these texts too,
under `definitions`).
"""

from __future__ import annotations

COHORT = (
    "Counts the invoices whose payment first failed in the period (one recovery case each), "
    "each as it stands now."
)

DEFINITIONS: dict[str, str] = {
    "failed": "Invoices whose payment first failed in the period, and what they asked for.",
    "recovered": (
        "Of those, the ones paid since (late payments after dunning included): the money "
        "actually collected, once per invoice."
    ),
    "recovered_share": "Recovered amount ÷ failed amount.",
    "in_progress": (
        "Of those, the ones still being worked on: a retry planned or waiting for the "
        "customer. What they ask for."
    ),
    "lost": (
        "Of those, the ones that ended unpaid: dunning ran out, or the invoice was voided, "
        "written off or its subscription cancelled. What they asked for."
    ),
    "recovered_monthly_revenue": (
        "The monthly price of the subscriptions behind the recovered invoices, at their "
        "current plan (a yearly plan counts 1/12): the revenue kept each month from now on - "
        "unlike Recovered, the one-off money those invoices brought in."
    ),
    "median_days_to_recover": (
        "Half of the recovered invoices were paid within this many days of the failure."
    ),
    "expiring_30": (
        "Default cards of live subscriptions that stop working within 30 days from now."
    ),
    "expiring_60": (
        "Default cards of live subscriptions that stop working within 60 days from now."
    ),
    "replaced_in_time": (
        "Of the cards we sent an expiry notice for in the period: replaced before they stopped "
        "working (or updated by the card network). Pending: not expired and not replaced yet."
    ),
    "cancel_sessions": "Cancel-flow sessions started in the period.",
    "save_rate": (
        "Saves that held ÷ subscribers who decided (accepted an offer or cancelled). A save "
        "cancelled afterwards, in a later session or in Stripe, is not a save."
    ),
    "revenue_saved": (
        "Monthly revenue the saves that held go on paying (a discount or downgrade at its "
        "reduced price)."
    ),
    "by_month": (
        "Invoices that failed in each calendar month (UTC), and the share of their failed "
        "amount paid within 30, 60 and 90 days of the failure. A window that has not ended yet "
        "is shown as pending: its share can still grow."
    ),
    "validated": (
        "Checked against billing 30, 60 and 90 days later. A save (an accepted offer, started "
        "in the period) is validated, and a recovery (an invoice of the period paid) durable, "
        "when the subscription was not cancelled by then and every invoice due in those days "
        "was paid in them. Pending: that day has not come yet - not counted as lost."
    ),
    "lost_by_reason": "The lost invoices of the period, by why they ended unpaid.",
    "term_offers": (
        "Annual-term offers emailed in the period, those accepted in the period, and the "
        "yearly amount the accepted switches bill."
    ),
    "win_backs": (
        "Win-back notes sent in the period, customers who restarted through one in the "
        "period, and the monthly revenue they brought back."
    ),
    "pauses": (
        "Subscriptions paused in the period from the final notice's offer instead of ending "
        "(retry.end_of_dunning = offer_pause): the unpaid invoice voided, so its case counts "
        "as lost above, but the customer stays. Resumed paying: of those, the ones that have "
        "paid an invoice since their pause ended."
    ),
    "by_currency": (
        "The same period in every currency that has cases, side by side. Amounts are not "
        "converted: each column is in its own currency."
    ),
}
