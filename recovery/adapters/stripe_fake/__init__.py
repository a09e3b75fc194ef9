"""An in-memory `StripeGateway` for tests and the demo: Stripe's behaviour where we depend on it.

What it models: objects shaped like the pinned API version's (`tests/fixtures/stripe/`:
the invoice names its subscription under `parent.subscription_details`, periods sit on
subscription items, `discounts` instead of `coupon`); idempotent replay (same key and parameters
-> the first result again, no second effect; same key, other parameters -> `IdempotencyConflict`;
validation errors are not cached, payment failures are); newest-first pagination with
`starting_after`; the events a write causes. What it lets a test program: declines and 3-D Secure
per invoice or per card, and outages (transient errors on the next n calls).

Every call is appended to `.requests` as `(method_name, params, idempotency_key)`.
Ids are deterministic (`cus_fake000001`, ...).

The parts, by what they model: `store` (objects, ids, idempotent replay, outages, events,
pagination), `customers` (customers, card PaymentMethods), `subscriptions` (prices, coupons,
pause, price change, cancel), `invoices`, `payments` (attempts, programmed declines and 3-D
Secure), `checkout` (setup-mode Checkout, SetupIntents), `events` (the event history),
`outreach` (prices, invoice previews, price switches, schedules, subscription-mode Checkout).
"""

from __future__ import annotations

from recovery.adapters.stripe.protocol import StripeGateway
from recovery.adapters.stripe_fake.checkout import FakeCheckout
from recovery.adapters.stripe_fake.customers import FakeCustomers
from recovery.adapters.stripe_fake.events import FakeEvents
from recovery.adapters.stripe_fake.invoices import FakeInvoices
from recovery.adapters.stripe_fake.outreach import OutreachFakeMixin
from recovery.adapters.stripe_fake.payments import FakePayments
from recovery.adapters.stripe_fake.store import FakeRequest
from recovery.adapters.stripe_fake.subscriptions import FakeSubscriptions


class FakeStripeGateway(
    OutreachFakeMixin,
    FakeCheckout,
    FakeCustomers,
    FakeSubscriptions,
    FakeInvoices,
    FakePayments,
    FakeEvents,
):
    """`StripeGateway` in memory. Seed it with `add_*` (or `put` raw Stripe objects)."""


# mypy checks here that the fake has every member of the Protocol with its exact signature.
_CONFORMS: type[StripeGateway] = FakeStripeGateway

__all__ = ["FakeRequest", "FakeStripeGateway"]
