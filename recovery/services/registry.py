"""Everything the service does, in one place: for each Stripe event type the handlers that run,
in order; the handler of each due-action kind; the daily jobs; and which check decides, right
before sending, whether a message is still wanted.

For an event, the mirror update comes first, then the recovery case's reaction, then the
reminders planner (for the cases the event moved: `plan_reminders`), then the expiry tracker
(only when a card's expiry, a default card or a renewal moved: `plan_expiry`) and the
card-update completion. `recovery.services.events.dispatch` runs them, a batch of events in one
transaction with a savepoint each; `build_runtime` puts this table into the runtime that the
web app, the worker and the CLI share.

A due action that calls a provider is three steps (`ThreePhase`: decide in a transaction, call
with none open, record in a second one that checks the lease); the others are one function.
"""

from __future__ import annotations

from recovery.adapters.clock import Clock
from recovery.adapters.stripe.protocol import StripeGateway
from recovery.config import Settings
from recovery.runtime import (
    ActionHandler,
    CasesMoved,
    DailyJob,
    Handlers,
    MaintenanceJob,
    Reaction,
    Runtime,
    StillWanted,
)
from recovery.services.cancel import actions as cancel_actions
from recovery.services.cancel import decisions as cancel_decisions
from recovery.services.cancel import messages as cancel_messages
from recovery.services.cancel.flow import EXPIRE_ACTION
from recovery.services.card_update import completion as card_update
from recovery.services.cases import actions as case_actions
from recovery.services.cases import log as case_log
from recovery.services.cases import reactions as case
from recovery.services.events import gates, mirror, refetch
from recovery.services.events import mirror_handlers as into_mirror
from recovery.services.experiments import routing as experiment_routing
from recovery.services.messaging import expiry, outbox, reminders
from recovery.services.outreach import contacts, relevance, term_offers, win_back
from recovery.services.pauses import notices as pause_notices
from recovery.services.pauses import offer as pause_offer
from recovery.services.reporting.metrics import rollup_refresh
from recovery.services.work import retention

# The reminders planner, for the recovery cases this event moved (and those of a subscription
# whose status moved); the expiring-card planner, when a card's expiry, a default card or a
# renewal changed. Both were idempotent before and run only when their inputs moved now.
plan_reminders = gates.reminders_for_moved_cases
plan_expiry = gates.expiry_when_inputs_moved
# A case reaction runs only where there is a case to act on (otherwise it does nothing).
when_case = gates.if_invoice_has_case
when_active_case = gates.if_customer_has_active_case
when_subscription_case = gates.if_subscription_has_case
# A renewal's subscription update stops no win-back unless the customer has one.
when_win_back = gates.if_customer_has_win_back
# An invoice's update whose case's re-evaluation can wait for the batch's end is noted only.
when_update_steers = gates.if_invoice_update_steers
when_failure_steers = gates.if_invoice_failure_steers  # (a failure with no case opens one)
# A subscription's update re-steers cases only when its default card changed.
when_card_moved = gates.if_card_moved_for_active_case
# The metadata contacts follow a customer that names some or has some.
when_contacts = gates.if_metadata_contacts

# ---- Stripe events ------------------------------------------------------------------------------

ON_EVENT: dict[str, tuple[Reaction, ...]] = {
    # customers and their cards
    "customer.created": (into_mirror.customer, when_contacts(contacts.on_customer)),
    "customer.updated": (
        into_mirror.customer,
        when_contacts(contacts.on_customer),  # first: reminders planned next reach them
        when_active_case(case.on_card_change),
        plan_reminders,
        plan_expiry,
    ),
    "customer.deleted": (into_mirror.customer,),
    "customer.source.expiring": (into_mirror.card,),
    "payment_method.attached": (
        into_mirror.card,
        when_active_case(case.on_card_change),
        plan_reminders,
        plan_expiry,
    ),
    "payment_method.updated": (
        into_mirror.card,
        when_active_case(case.on_card_change),
        plan_reminders,
        plan_expiry,
    ),
    "payment_method.automatically_updated": (
        into_mirror.card,
        when_active_case(case.on_card_change),
        plan_reminders,
        plan_expiry,
    ),
    "payment_method.detached": (into_mirror.card, plan_expiry),
    "setup_intent.succeeded": (
        into_mirror.setup_intent,
        when_active_case(case.on_card_change),
        plan_reminders,
        plan_expiry,
        card_update.on_setup_intent_succeeded,
    ),
    "checkout.session.completed": (card_update.on_checkout_completed,),
    # subscriptions
    "customer.subscription.created": (
        into_mirror.subscription,
        when_win_back(win_back.on_subscription_started),
    ),
    "customer.subscription.updated": (
        into_mirror.subscription,
        when_card_moved(case.on_card_change),
        plan_reminders,
        plan_expiry,
        when_win_back(win_back.on_subscription_started),
    ),
    "customer.subscription.deleted": (
        into_mirror.subscription,
        when_subscription_case(case.on_subscription_deleted),
        plan_reminders,
        plan_expiry,
        win_back.on_subscription_ended,  # after the case: a loss to dunning is named as such
    ),
    "customer.subscription.paused": (into_mirror.subscription,),
    "customer.subscription.resumed": (into_mirror.subscription,),
    "customer.subscription.trial_will_end": (into_mirror.subscription,),
    "customer.subscription.pending_update_applied": (into_mirror.subscription,),
    # invoices: a failure opens or steers a case, a payment closes it
    "invoice.created": (into_mirror.invoice,),
    "invoice.finalized": (into_mirror.invoice, when_case(case.on_invoice_updated), plan_reminders),
    "invoice.updated": (
        into_mirror.invoice,
        when_update_steers(case.on_invoice_updated),
        plan_reminders,
    ),
    "invoice.payment_failed": (
        into_mirror.invoice,
        when_failure_steers(case.on_invoice_failure),
        plan_reminders,
    ),
    "invoice.payment_action_required": (
        into_mirror.invoice,
        case.on_invoice_action_required,
        plan_reminders,
    ),
    "invoice.paid": (into_mirror.invoice, when_case(case.on_invoice_paid), plan_reminders),
    "invoice.payment_succeeded": (
        into_mirror.invoice,
        when_case(case.on_invoice_paid),
        plan_reminders,
    ),
    "invoice.marked_uncollectible": (
        into_mirror.invoice,
        when_case(case.on_invoice_updated),
        plan_reminders,
    ),
    "invoice.voided": (into_mirror.invoice, when_case(case.on_invoice_updated), plan_reminders),
    "invoice.deleted": (into_mirror.invoice, when_case(case.on_invoice_updated), plan_reminders),
    "invoice.upcoming": (into_mirror.upcoming,),
    "invoice_payment.paid": (into_mirror.invoice_payment,),
    # payment attempts: a failed one carries the decline details the retry policy reads
    "charge.failed": (into_mirror.charge, case.on_payment_failure, plan_reminders),
    "charge.succeeded": (into_mirror.charge,),
    "charge.pending": (into_mirror.charge,),
    "payment_intent.payment_failed": (
        into_mirror.payment_intent,
        case.on_payment_failure,
        plan_reminders,
    ),
    "payment_intent.succeeded": (into_mirror.payment_intent,),
    "payment_intent.requires_action": (into_mirror.payment_intent,),
    # our own events: an object re-read from Stripe (`events.refetch`) after a doubtful update
    "recovery.refetched.customer": (
        when_contacts(contacts.on_customer),  # its contacts follow, as on every customer event
        when_active_case(case.on_card_change),
        plan_reminders,
    ),
    "recovery.refetched.payment_method": (when_active_case(case.on_card_change), plan_reminders),
    "recovery.refetched.subscription": (when_active_case(case.on_card_change), plan_reminders),
    "recovery.refetched.invoice": (when_case(case.on_invoice_updated), plan_reminders),
}

# ---- due actions, by kind -----------------------------------------------------------------------

ACTIONS: dict[str, ActionHandler] = {
    mirror.REFETCH_KIND: refetch.run_refetch,
    case_log.RETRY_KIND: case_actions.run_retry,
    case_log.AUTO_ADVANCE_KIND: case_actions.run_auto_advance_off,
    case_log.WINDOW_END_KIND: case_actions.run_window_end,
    case_log.END_OF_DUNNING_KIND: case_actions.run_end_of_dunning,
    outbox.SEND_KIND: outbox.run_send,
    card_update.ACTION_KIND: card_update.run_complete,
    cancel_decisions.APPLY_ACTION: cancel_actions.run_apply,
    EXPIRE_ACTION: cancel_actions.run_expire,
    cancel_decisions.WEBHOOK_ACTION: cancel_actions.run_webhook,
    cancel_decisions.EMAIL_CANCELLED: cancel_actions.run_cancel_confirmation,
    cancel_decisions.EMAIL_PAUSE_ENDING: cancel_actions.run_pause_ending,
    pause_offer.APPLY_KIND: pause_offer.run_apply,  # a pause instead of a loss, carried out
}

# ---- once a day, cluster-wide -------------------------------------------------------------------

DAILY_JOBS: dict[str, DailyJob] = {
    expiry.JOB_NAME: expiry.daily_job,
    term_offers.JOB_NAME: term_offers.daily_job,
    win_back.JOB_NAME: win_back.daily_job,
    experiment_routing.JOB_NAME: experiment_routing.daily_job,  # Thompson: today's shares
}

# ... and those that work in many small transactions of their own
MAINTENANCE: dict[str, MaintenanceJob] = {
    retention.JOB_NAME: retention.daily_job,  # RECOVERY_RETENTION_DAYS
}

# ... and every minute: the overview's rollups brought up to date (its dirty days recomputed)
PERIODIC: dict[str, MaintenanceJob] = {rollup_refresh.JOB_NAME: rollup_refresh.refresh}

# ---- whenever a case moved (in an event, a due action or a page), before that commits ----------

ON_CASES_MOVED: tuple[CasesMoved, ...] = (gates.sync_moved_cases,)

# ---- is this message still wanted? (by the first part of its subject) ---------------------------

STILL_WANTED: dict[str, StillWanted] = {
    "case": reminders.still_wanted,
    "expiry": expiry.still_wanted,
    cancel_messages.ABOUT_PREFIX: cancel_messages.still_wanted,
    "outreach": relevance.still_wanted,  # annual offers and win-back notes
    pause_notices.ABOUT_PREFIX: pause_notices.still_wanted,  # billing resumes after a pause
}

HANDLERS = Handlers(
    on_event=ON_EVENT,
    actions=ACTIONS,
    daily_jobs=DAILY_JOBS,
    maintenance=MAINTENANCE,
    periodic=PERIODIC,
    on_cases_moved=ON_CASES_MOVED,
    still_wanted=STILL_WANTED,
)


def build_runtime(
    settings: Settings, *, clock: Clock | None = None, gateway: StripeGateway | None = None
) -> Runtime:
    """The runtime with every handler above: what the web app, the worker and the CLI run on."""
    runtime = Runtime.build(settings, HANDLERS, clock=clock, gateway=gateway)
    # [[experiments]] are read when a case opens: a mistake in them stops the start, naming
    # its key, rather than every failed payment's event later.
    runtime.rules.experiments  # noqa: B018 - parsing it is the check
    return runtime
