"""SQLAlchemy models. Importing this package registers every table on `Base.metadata`."""

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
from recovery.models.work import ActionStatus, DueAction, JobRun, WorkerHeartbeat

__all__ = [
    "ActionStatus",
    "CaseEvent",
    "Customer",
    "DueAction",
    "EventStatus",
    "Invoice",
    "InvoicePayment",
    "JobRun",
    "PaymentAttempt",
    "PaymentMethod",
    "RecoveryCase",
    "StripeEvent",
    "Subscription",
    "SubscriptionItem",
    "WorkerHeartbeat",
]
