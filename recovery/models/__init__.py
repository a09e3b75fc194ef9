"""SQLAlchemy models. Importing this package registers every table on `Base.metadata`."""

from recovery.models import dashboard_indexes  # noqa: F401 - attaches the list indexes
from recovery.models.cancel_flow import CancelSession, OfferAcceptance
from recovery.models.card_update_links import CardUpdateLink
from recovery.models.cases import CaseEvent, RecoveryCase
from recovery.models.experiments import (
    ExperimentAssignment,
    ExperimentRouting,
    ExperimentSubject,
)
from recovery.models.inbox import EventStatus, StripeEvent
from recovery.models.mirror import (
    Customer,
    Invoice,
    InvoicePayment,
    PaymentAttempt,
    PaymentMethod,
    Subscription,
    SubscriptionItem,
)
from recovery.models.outbox import MessageStatus, OutboxMessage, SmsOptOut
from recovery.models.outreach import (
    AccountContact,
    MarketingOptOut,
    OutreachLink,
    TermOffer,
    WinBack,
)
from recovery.models.pauses import DunningPause
from recovery.models.rollups import (
    CancelDayRollup,
    CaseDayRollup,
    ChannelDayRollup,
    HeldDayRollup,
    OverviewDirtyDay,
)
from recovery.models.users import AuditEntry, User
from recovery.models.work import ActionStatus, DueAction, JobRun, WorkerHeartbeat

__all__ = [
    "AccountContact",
    "ActionStatus",
    "AuditEntry",
    "CancelDayRollup",
    "CancelSession",
    "CardUpdateLink",
    "CaseDayRollup",
    "CaseEvent",
    "ChannelDayRollup",
    "Customer",
    "DueAction",
    "DunningPause",
    "EventStatus",
    "ExperimentAssignment",
    "ExperimentRouting",
    "ExperimentSubject",
    "HeldDayRollup",
    "Invoice",
    "InvoicePayment",
    "JobRun",
    "MarketingOptOut",
    "MessageStatus",
    "OfferAcceptance",
    "OutboxMessage",
    "OutreachLink",
    "OverviewDirtyDay",
    "PaymentAttempt",
    "PaymentMethod",
    "RecoveryCase",
    "SmsOptOut",
    "StripeEvent",
    "Subscription",
    "SubscriptionItem",
    "TermOffer",
    "User",
    "WinBack",
    "WorkerHeartbeat",
]
