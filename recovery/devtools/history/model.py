"""What the history is made of: its calendar, the ways renewals fail and what follows them,
the subscribers, and the report of a run."""

from __future__ import annotations

from dataclasses import dataclass, field

from recovery.devtools import population as pop

DAY = 86_400
HISTORY_DAYS = 182
DAILY_JOBS_HOUR = 6  # UTC
# The worker's daily jobs (the expiry scan) run every 14th simulated day and on the last one.
# A scan plans the notices of renewals up to 45 days ahead, so one every 14 days still plans
# every notice before its first send date; each run reads every subscription (~0.3 s at 300),
# and 182 of them would double the seeding time.
DAILY_JOBS_EVERY = 14
# Renewals failing in the last days are left to their reminders (the customer has not acted
# yet), and these declines are added among them, so a few cases are open at the end.
OPEN_AT_END_DAYS = 10
OPEN_AT_END = (
    "generic_decline",
    "expired_card",
    "insufficient_funds",
    "authentication_required",
)
STORY_FLOOR_FROM_DAY = 60
STORY_FLOOR_BEFORE_END = 40 * DAY  # the retry window (28 days) and its last reminder fit
STORY_RECHECK = 14 * DAY  # a forced story's reminders and outcome take days to show
EXISTING_SHARE = 0.75  # customers who were subscribers before the history starts
CANCEL_FLOW_PER_DAY = 0.0013  # about 4% of active subscribers open the cancel flow a month
# Of the subscribers who accept an offer, some cancel after all within a few weeks: the
# dashboard shows such a save as reversed, not as a save.
SAVE_REVERSED_SHARE = 0.15
# Subscribers who act on an expiring-card notice: most do, as a business using this sees.
EXPIRY_RESPONSE_SHARE = 0.8
# Whatever the dice say, every history has these cancel-flow stories (customer number, script,
# day of the history): one who accepts an offer, one who cancels, one who accepts and cancels
# a week later. Customer 1 is left alone: the demo's banner sends newcomers to its cancel flow.
SCRIPTED_CANCEL_FLOW = ((2, "accept", 40), (3, "cancel", 60), (4, "accept_then_cancel", 80))


@dataclass(frozen=True)
class Decline:
    """A way a renewal fails, with the share of failures it has and what tends to follow.

    `outcomes` weighs: the bank approves a later retry (the card heals), the customer saves a
    new card through a link, the customer pays on the hosted invoice page, nothing (lost).
    Codes as Stripe reports them (docs.stripe.com/declines/codes), with Visa/Mastercard
    response codes (51 funds, 05 do not honor, 54 expired, 14 no such number, 41/43 lost and
    stolen) and Mastercard merchant advice codes (24 retry after an hour, 03 never again).
    """

    name: str
    weight: int
    code: str
    decline_code: str | None
    advice_code: str | None
    network_decline_code: str | None
    mastercard_advice: str | None
    outcomes: tuple[int, int, int, int]
    authenticate: bool = False
    heal_days: tuple[float, float] = (1.0, 10.0)


DECLINES: tuple[Decline, ...] = (
    Decline(
        "insufficient_funds", 30, "card_declined", "insufficient_funds", "try_again_later",
        "51", "24", (55, 10, 8, 27),
    ),
    Decline(
        "generic_decline", 13, "card_declined", "generic_decline", None, "05", None,
        (55, 10, 5, 30),
    ),
    Decline(
        "do_not_honor", 8, "card_declined", "do_not_honor", "try_again_later", "05", None,
        (45, 15, 5, 35),
    ),
    Decline(
        "processing_error", 6, "processing_error", None, None, None, None, (80, 5, 5, 10),
        heal_days=(0.5, 3.0),
    ),
    Decline(
        "expired_card", 10, "expired_card", "expired_card", "confirm_card_data", "54", None,
        (0, 55, 10, 35),
    ),
    Decline(
        "incorrect_number", 3, "incorrect_number", "incorrect_number", None, "14", None,
        (0, 50, 5, 45),
    ),
    Decline(
        "lost_card", 3, "card_declined", "lost_card", "do_not_try_again", "41", "03",
        (0, 40, 5, 55),
    ),
    Decline(
        "stolen_card", 2, "card_declined", "stolen_card", "do_not_try_again", "43", "03",
        (0, 35, 5, 60),
    ),
    Decline(
        "do_not_try_again", 3, "card_declined", "do_not_honor", "do_not_try_again", None, "03",
        (0, 35, 5, 60),
    ),
    # A decline code on the charge. The 3-D Secure variant (authenticate=True: the fake's
    # invoice.payment_action_required) is not played: the service reads its failure code as an
    # unknown soft decline and retries it daily, past max_attempts.
    Decline(
        "authentication_required", 10, "card_declined", "authentication_required",
        None, None, None, (0, 10, 55, 35),
    ),
    Decline(
        "call_issuer", 3, "card_declined", "call_issuer", None, None, None, (30, 25, 10, 35),
    ),
)  # fmt: skip
EXPIRED = next(d for d in DECLINES if d.name == "expired_card")
# The "nothing" weights above, scaled: with them as they are, about a third of the failed
# amount came back over 90 days; recovery services report about half (the range the demo
# should show a newcomer).
GIVE_UP_WEIGHT = 0.55
OUTCOMES = ("heal", "link", "hosted", "none")


@dataclass(frozen=True)
class Story:
    """What every history shows a newcomer, whatever the dice say (as the scripted cancel flows
    do): a case nobody answered (lost), recoveries by our retry and by the card-update link,
    a reminder by SMS. From STORY_FLOOR_FROM_DAY on, while the database does not show one yet
    (`told`, an SQL condition), the next routine charge of a customer who can tell it fails
    with `decline` and ends as `outcome`; then it looks again after STORY_RECHECK (the
    experiment's holdout gets no reminders, its email-only arm no SMS). At 60 customers, some
    end dates gave 15 failures and none lost, no recovery by a retry or by a link, or no SMS."""

    name: str
    outcome: str  # as in OUTCOMES
    decline: str
    needs_sms_consent: bool = False


STORIES = (
    Story("lost", "none", "insufficient_funds"),
    Story("our_retry", "heal", "insufficient_funds"),
    Story("card_update_link", "link", "insufficient_funds"),
    Story("sms", "none", "insufficient_funds", needs_sms_consent=True),
)


@dataclass
class Subscriber:
    number: int
    person: pop.Person
    customer_id: str
    subscription_id: str
    risk: float  # chance a renewal fails
    discount_renewals: int = 0
    expiry_decided: set[str] = field(default_factory=set)


@dataclass
class HistoryReport:
    customers: int = 0
    renewals: int = 0
    failed_renewals: int = 0
    declines: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    card_updates: dict[str, int] = field(default_factory=dict)
    cancel_sessions: dict[str, int] = field(default_factory=dict)
    cases: dict[str, int] = field(default_factory=dict)
    events: int = 0
    actions_run: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        cases = ", ".join(f"{n} {s}" for s, n in sorted(self.cases.items()))
        sessions = ", ".join(f"{n} {s}" for s, n in sorted(self.cancel_sessions.items()))
        return (
            f"{self.customers} customers, {self.renewals} renewals, {self.failed_renewals} "
            f"failed; cases: {cases}; cancel sessions: {sessions}; {self.events} Stripe events, "
            f"{self.actions_run} due actions run, in {self.seconds:.1f} s"
        )
