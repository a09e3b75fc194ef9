"""The recovery case state machine. Pure: a state and a happening in, the next state out.

    open -> retrying | awaiting_customer -> recovered | lost | closed

`recovered` means money arrived; `lost` means dunning ended without it; `closed` means there is
nothing left to collect for another reason (voided, written off by the business, subscription
cancelled by the business, or paused by the customer instead of being lost: close reason
`paused`). Terminal states absorb everything, except that money arriving
after a case was lost still makes it recovered: the customer paid late, and the billing team
should count it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from recovery.domain.retry_policy import RetryDecision


class CaseStatus(StrEnum):
    OPEN = "open"
    RETRYING = "retrying"  # a retry of ours is scheduled
    AWAITING_CUSTOMER = "awaiting_customer"  # a new card, authentication or a call to the bank
    RECOVERED = "recovered"
    LOST = "lost"
    CLOSED = "closed"


TERMINAL = frozenset({CaseStatus.RECOVERED, CaseStatus.LOST, CaseStatus.CLOSED})
ACTIVE = frozenset({CaseStatus.OPEN, CaseStatus.RETRYING, CaseStatus.AWAITING_CUSTOMER})


class AwaitingReason(StrEnum):
    NEW_CARD = "new_card"
    AUTHENTICATION = "authentication"
    CUSTOMER = "customer"  # call the bank, or Stripe runs the retries and we only remind


class RecoveredVia(StrEnum):
    OUR_RETRY = "our_retry"
    CARD_UPDATE_LINK = "card_update_link"
    HOSTED_INVOICE_PAGE = "hosted_invoice_page"  # the customer paid on Stripe's page
    STRIPE_RETRY = "stripe_retry"
    OUT_OF_BAND = "out_of_band"


class CloseReason(StrEnum):
    VOIDED = "voided"
    UNCOLLECTIBLE = "marked_uncollectible"
    SUBSCRIPTION_CANCELLED = "subscription_cancelled"
    NOTHING_DUE = "nothing_due"
    DELETED = "deleted"
    # The customer took the pause the final notice offered (retry.end_of_dunning =
    # "offer_pause"): collection stopped until a date they chose, instead of a loss.
    PAUSED = "paused"


@dataclass(frozen=True)
class Step:
    status: CaseStatus
    awaiting: AwaitingReason | None
    end_dunning: bool  # true exactly when this step makes the case lost


def after_decision(status: CaseStatus, decision: RetryDecision) -> Step:
    """Where a retry-policy decision takes an active case."""
    if status in TERMINAL:
        return Step(status, None, False)
    if decision.at is not None:
        return Step(CaseStatus.RETRYING, None, False)
    if decision.stop and not decision.wait_for_new_card:
        return Step(CaseStatus.LOST, None, True)
    if decision.wait_for_new_card:
        return Step(CaseStatus.AWAITING_CUSTOMER, AwaitingReason.NEW_CARD, False)
    return Step(CaseStatus.AWAITING_CUSTOMER, AwaitingReason.CUSTOMER, False)


def after_authentication_required(status: CaseStatus) -> Step:
    if status in TERMINAL:
        return Step(status, None, False)
    return Step(CaseStatus.AWAITING_CUSTOMER, AwaitingReason.AUTHENTICATION, False)


def after_payment(status: CaseStatus) -> CaseStatus:
    """Money arrived. A closed (voided) invoice cannot be paid; anything else is recovered."""
    return status if status in (CaseStatus.CLOSED, CaseStatus.RECOVERED) else CaseStatus.RECOVERED


def after_close(status: CaseStatus) -> CaseStatus:
    return status if status in TERMINAL else CaseStatus.CLOSED


# Stripe's own retry lands at next_payment_attempt, give or take its processing delay.
STRIPE_RETRY_WINDOW = timedelta(hours=2)


def attribute_recovery(
    *,
    paid_at: datetime,
    paid_out_of_band: bool,
    retry_owner: str,
    stripe_next_attempt: datetime | None,
) -> RecoveredVia:
    """What made the money arrive, when a webhook is all we know.

    Payments we ask for ourselves (our retry, paying right after a card update) are attributed
    where we ask, from Stripe's answer, and override this guess if the webhook came first.
    Otherwise: Stripe says it was paid outside Stripe; or it came around the time Stripe had
    scheduled its own retry; or the customer paid on Stripe's hosted invoice page.
    """
    if paid_out_of_band:
        return RecoveredVia.OUT_OF_BAND
    if (
        retry_owner == "stripe"
        and stripe_next_attempt is not None
        and abs(paid_at - stripe_next_attempt) <= STRIPE_RETRY_WINDOW
    ):
        return RecoveredVia.STRIPE_RETRY
    return RecoveredVia.HOSTED_INVOICE_PAGE
