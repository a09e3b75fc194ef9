"""SQLAlchemy models. Importing this package registers every table on `Base.metadata`."""

from recovery.models.cancel_flow import CancelSession, OfferAcceptance
from recovery.models.card_update_links import CardUpdateLink
from recovery.models.cases import CaseEvent, RecoveryCase
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
from recovery.models.work import ActionStatus, DueAction, JobRun, WorkerHeartbeat

__all__ = [
    "ActionStatus",
    "CancelSession",
    "CardUpdateLink",
    "CaseEvent",
    "Customer",
    "DueAction",
    "EventStatus",
    "Invoice",
    "InvoicePayment",
    "JobRun",
    "MessageStatus",
    "OfferAcceptance",
    "OutboxMessage",
    "PaymentAttempt",
    "PaymentMethod",
    "RecoveryCase",
    "SmsOptOut",
    "StripeEvent",
    "Subscription",
    "SubscriptionItem",
    "WorkerHeartbeat",
]
