"""The Stripe gateway of shadow mode (RECOVERY_MODE=shadow): reads go through, every call that
would change the account is refused before it leaves the process.

Shadow mode's due actions never reach their call step (`services.work.shadow`) and its hosted
pages say the service is not active yet (`web.shadow_pages`); this is the net under both, so a
path that was missed fails loudly instead of charging a customer.
"""

from __future__ import annotations

from typing import Any

from recovery.adapters.stripe.errors import GatewayError

# Every method of `StripeGateway` that changes something at Stripe; the others only read.
WRITES = frozenset(
    {
        "pay_invoice",
        "update_invoice",
        "mark_uncollectible",
        "void_invoice",
        "update_customer_default_payment_method",
        "update_subscription",
        "pause_subscription",
        "resume_subscription",
        "change_subscription_price",
        "set_subscription_default_payment_method",
        "cancel_subscription",
        "apply_subscription_coupon",
        "create_checkout_setup_session",
        "switch_subscription_price",
        "schedule_price_at_renewal",
        "create_checkout_subscription_session",
    }
)


class ShadowModeRefused(GatewayError):
    """A call that would change Stripe, made in shadow mode: never sent.

    Transient: it would succeed later (in live mode), so a caller that defers what Stripe
    cannot take now (the cancel flow's decision) schedules it as a due action - which shadow
    mode then records as shadow, with what it would have done - rather than failing it."""

    transient = True


class ShadowGateway:
    """Wraps a gateway: the read methods (and anything else, e.g. a stand-in's helpers) are
    the wrapped gateway's own; the `WRITES` raise `ShadowModeRefused`."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        if name in WRITES:

            def refused(*args: Any, **kwargs: Any) -> Any:
                raise ShadowModeRefused(
                    f"RECOVERY_MODE=shadow: {name} would change Stripe and was not sent",
                    code="shadow_mode",
                )

            return refused
        return getattr(self.inner, name)

    @property
    def livemode(self) -> bool:
        return bool(self.inner.livemode)
