"""What a dunning arm changes, pure: the holdout's rules, a fixed retry schedule that still
obeys every rule on whether to charge, and an arm's reminder steps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from recovery.domain.declines import Decline
from recovery.domain.experiments import (
    HOLDOUT,
    DunningOptions,
    Placement,
    arm_retry,
    arm_sequence,
)
from recovery.domain.reminders import ReminderStep
from recovery.domain.retry_policy import (
    Attempt,
    CardInfo,
    NetworkCaps,
    RetryContext,
    RetryRules,
    decide_next_retry,
)

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday
CARD = CardInfo("visa", "credit", "fp_a")
FIXED = (3, 5, 7)


def failed(at: datetime, code: str = "do_not_honor", by: str = "stripe") -> Attempt:
    decline = Decline(failure_code="card_declined", decline_code=code, card_brand="visa")
    return Attempt(at, "fp_a", "visa", decline, False, "recovery" if by == "recovery" else "stripe")


def ctx(*attempts: Attempt) -> RetryContext:
    return RetryContext(T0, attempts, CARD, False, "Europe/Berlin", 2000, "eur")


def test_the_holdout_leaves_retries_and_the_end_of_dunning_to_stripe() -> None:
    rules, days = arm_retry(RetryRules(), Placement("x", HOLDOUT, None))
    assert (rules.retry_owner, rules.end_of_dunning, days) == ("stripe", "leave_past_due", ())
    decision = decide_next_retry(ctx(failed(T0)), rules, T0)
    assert decision.at is None and not decision.stop
    assert arm_retry(RetryRules(), None) == (RetryRules(), ())


def test_a_fixed_arm_charges_on_its_days_after_the_case_opened() -> None:
    options = DunningOptions(retry_days=FIXED)
    rules, days = arm_retry(RetryRules(), Placement("x", "fixed", options))
    assert days == FIXED and rules == RetryRules()
    first = decide_next_retry(ctx(failed(T0)), rules, T0, fixed_days=days)
    assert first.at == T0 + timedelta(days=3)
    assert "day 3 of the fixed schedule" in first.reason
    second = decide_next_retry(
        ctx(failed(T0), failed(T0 + timedelta(days=3), by="recovery")),
        rules,
        T0 + timedelta(days=3),
        fixed_days=days,
    )
    assert second.at == T0 + timedelta(days=5)
    done = decide_next_retry(
        ctx(*(failed(T0 + timedelta(days=d), by="recovery") for d in (0, 3, 5, 7))),
        rules,
        T0 + timedelta(days=7),
        fixed_days=days,
    )
    assert done.at is None and done.stop and "has no day left" in done.reason


def test_a_fixed_schedule_never_retries_what_must_not_be_retried() -> None:
    decision = decide_next_retry(ctx(failed(T0, "stolen_card")), RetryRules(), T0, fixed_days=FIXED)
    assert decision.at is None and decision.stop


def test_a_fixed_schedule_keeps_the_gap_between_charges_and_the_network_cap() -> None:
    # A charge of Stripe's on day 2.5: day 3 is too close (min_gap_hours 20), so day 5.
    late = decide_next_retry(
        ctx(failed(T0), failed(T0 + timedelta(days=2.5))),
        RetryRules(),
        T0 + timedelta(days=2.5),
        fixed_days=FIXED,
    )
    assert late.at == T0 + timedelta(days=5)
    # A Visa cap of 2 charges in 30 days, both used: no day of the schedule fits.
    capped = decide_next_retry(
        ctx(failed(T0 - timedelta(days=1)), failed(T0)),
        RetryRules(network_caps=NetworkCaps(visa=2)),
        T0,
        fixed_days=FIXED,
    )
    assert capped.at is None and capped.stop


def test_an_arm_has_its_own_steps_on_its_own_channels() -> None:
    steps = (
        ReminderStep(channel="email", template="soft_decline", day=0),
        ReminderStep(channel="sms", template="soft_decline", day=1),
    )
    email_only = DunningOptions(channels=("email",))
    assert arm_sequence(email_only, "soft", steps) == steps[:1]
    own = (ReminderStep(channel="email", template="final_notice", days_before_end=2),)
    replaced = DunningOptions(sequences={"soft": own})
    assert arm_sequence(replaced, "soft", steps) == own
    assert arm_sequence(replaced, "new_card", steps) == steps
    assert arm_sequence(DunningOptions(channels=()), "soft", steps) == ()
