"""Is the Stripe side ready? The key (live or test, secret or restricted) and the permissions
the service needs, probed with harmless reads; a webhook endpoint at our public URL sending
every event type we react to, on the API version we are built for; and the settings no API
shows, printed as steps to check by hand (docs/stripe.md, "Retries by Stripe")."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from recovery.adapters.stripe.errors import AccessDenied, GatewayError, InvalidRequest, NotFound
from recovery.adapters.stripe.protocol import PINNED_API_VERSION, StripeDict, StripeGateway
from recovery.config import Settings
from recovery.rules import Rules
from recovery.services.ops.checks import Check, ManualStep, fail, ok, warn

WEBHOOK_PATH = "/webhooks/stripe"
PROBE = "recovery_doctor_probe"  # an id no object has: a 404 proves the key may read the kind

# What the service reads (and, for most, writes), each probed by reading an object that does
# not exist: Stripe checks a restricted key's permission before it looks the object up.
PROBES: dict[str, Callable[[StripeGateway], object]] = {
    "customers": lambda g: g.retrieve_customer(f"cus_{PROBE}"),
    "subscriptions": lambda g: g.retrieve_subscription(f"sub_{PROBE}"),
    "invoices": lambda g: g.retrieve_invoice(f"in_{PROBE}"),
    "payment methods": lambda g: g.retrieve_payment_method(f"pm_{PROBE}"),
    "setup intents": lambda g: g.retrieve_setup_intent(f"seti_{PROBE}"),
    "Checkout sessions": lambda g: g.retrieve_checkout_session(f"cs_{PROBE}"),
}
RESTRICTED_KEY_NEEDS = (
    "Write: Customers, Subscriptions, Invoices, Payment methods (Payment Methods / SetupIntents), "
    "Checkout Sessions; Read: Events, Webhook Endpoints"
)


def stripe_event_types(on_event: Iterable[str]) -> list[str]:
    """The Stripe event types the service reacts to (ours, `recovery.*`, are not Stripe's)."""
    return sorted(t for t in on_event if not t.startswith("recovery."))


def key(settings: Settings) -> Check:
    api_key = settings.stripe_api_key
    if not api_key:
        return warn(
            "Stripe key",
            "STRIPE_API_KEY is not set: the built-in stand-in answers; nothing reaches Stripe",
            "set STRIPE_API_KEY to a restricted key (rk_live_...) with the permissions below",
        )
    kind = "restricted" if api_key.startswith("rk_") else "secret"
    mode = "live" if "_live_" in api_key[:8] else "test"
    detail = f"{kind} key, {mode} mode"
    if mode == "live" and not settings.is_production:
        return warn(
            "Stripe key",
            f"{detail} with RECOVERY_ENV={settings.env}: this machine acts on real customers",
            "set RECOVERY_ENV=production where the live key runs, or use a test key here",
        )
    if mode == "test" and settings.is_production:
        return warn(
            "Stripe key",
            f"{detail} in production: no real customer is charged or reminded",
            "switch to the live key (rk_live_...) when the trial run is over",
        )
    if kind == "secret" and settings.is_production:
        return warn(
            "Stripe key",
            f"{detail}: a secret key may do anything on the account",
            f"create a restricted key with {RESTRICTED_KEY_NEEDS}",
        )
    return ok("Stripe key", detail)


def _refused(exc: AccessDenied) -> Check:
    return fail(
        "Stripe permissions",
        f"Stripe refused the key ({exc.http_status}): it is wrong, rolled or expired",
        "create a key in the Stripe Dashboard (Developers > API keys) and set STRIPE_API_KEY",
    )


def permissions(gateway: StripeGateway, now: datetime) -> tuple[Check, list[StripeDict] | None]:
    """Probe each kind the service needs; also returns the webhook endpoints (one of the reads)."""
    missing = []
    probes: dict[str, Callable[[StripeGateway], Any]] = {
        **PROBES,
        "events": lambda g: next(
            iter(g.iter_events(int((now - timedelta(minutes=5)).timestamp()))), None
        ),
        "webhook endpoints": lambda g: g.list_webhook_endpoints(),
    }
    endpoints: list[StripeDict] | None = None
    for name, probe in probes.items():
        try:
            result = probe(gateway)
        except (NotFound, InvalidRequest):
            continue  # past the permission check: readable
        except AccessDenied as exc:
            if exc.http_status == 401:
                return _refused(exc), None
            missing.append(name)
            continue
        except GatewayError as exc:
            return (
                fail(
                    "Stripe permissions",
                    f"Stripe did not answer ({exc.http_status or exc.__class__.__name__})",
                    "check that this machine reaches api.stripe.com (or STRIPE_API_BASE), "
                    "then run again",
                ),
                None,
            )
        if name == "webhook endpoints":
            endpoints = list(result)
    if missing:
        return (
            fail(
                "Stripe permissions",
                f"the key may not read: {', '.join(missing)}",
                f"give the restricted key {RESTRICTED_KEY_NEEDS} (Developers > API keys > edit)",
            ),
            endpoints,
        )
    return ok("Stripe permissions", f"reads {', '.join(probes)} (writes are not probed)"), endpoints


def webhook(
    settings: Settings, endpoints: list[StripeDict] | None, event_types: list[str]
) -> list[Check]:
    if endpoints is None:
        return [fail("Stripe webhook", "not checked: the endpoints could not be read", "see above")]
    url = settings.public_url.rstrip("/") + WEBHOOK_PATH
    ours = [e for e in endpoints if str(e.get("url", "")).rstrip("/") == url]
    create = (
        f"in the Stripe Dashboard (Developers > Webhooks) add an endpoint {url} on API version "
        f"{PINNED_API_VERSION} with the events {', '.join(event_types)}; put its signing secret "
        "in STRIPE_WEBHOOK_SECRETS"
    )
    if not ours:
        others = ", ".join(str(e.get("url")) for e in endpoints) or "none"
        return [
            fail(
                "Stripe webhook", f"no endpoint sends to {url} (the account has: {others})", create
            )
        ]
    enabled = [e for e in ours if e.get("status", "enabled") == "enabled"]
    if not enabled:
        return [
            fail(
                "Stripe webhook",
                f"the endpoint {ours[0].get('id')} to {url} is disabled: no event arrives",
                "enable it in Developers > Webhooks (Stripe disables endpoints that keep "
                "failing: check /healthz and the web server's log first)",
            )
        ]
    endpoint = enabled[0]
    events = set(endpoint.get("enabled_events") or [])
    missing = [] if "*" in events else [t for t in event_types if t not in events]
    checks = []
    if missing:
        checks.append(
            fail(
                "Stripe webhook",
                f"{endpoint.get('id')} does not send: {', '.join(missing)}",
                f"add these events to the endpoint {url} (Developers > Webhooks > Update details)",
            )
        )
    else:
        checks.append(
            ok("Stripe webhook", f"{endpoint.get('id')} sends all {len(event_types)} event types")
        )
    version = endpoint.get("api_version")
    if version == PINNED_API_VERSION:
        checks.append(ok("Stripe API version", f"{version}, the version recovery is built for"))
    else:
        checks.append(
            warn(
                "Stripe API version",
                f"the endpoint uses {version or 'the account default version'}; recovery is "
                f"built for {PINNED_API_VERSION} (older versions are understood)",
                f"add an endpoint on {PINNED_API_VERSION}, move STRIPE_WEBHOOK_SECRETS to it "
                "(both secrets while switching), then delete the old one",
            )
        )
    return checks


def manual_steps(rules: Rules) -> list[ManualStep]:
    """Stripe's own retries and emails cannot be read through the API."""
    emails = ManualStep(
        where="Stripe Dashboard > Billing > Revenue recovery > Emails",
        what="turn off Stripe's emails about failed card payments (and its reminders for "
        "payments that need confirming)",
        why="recovery sends its own reminders; with Stripe's on too, customers get two emails "
        "for every failed payment",
    )
    if rules.retry.retry_owner == "stripe":
        retries = ManualStep(
            where="Stripe Dashboard > Billing > Revenue recovery > Retries",
            what='keep Smart Retries on (the rules say retry_owner = "stripe")',
            why="recovery then only observes and reminds: with Stripe's retries off nobody "
            "retries a failed payment",
        )
    else:  # the networks' limits and fees: docs/card-networks.md
        retries = ManualStep(
            where="Stripe Dashboard > Billing > Revenue recovery > Retries",
            what="turn Smart Retries (or a custom retry schedule) off",
            why="recovery runs the retries; with Stripe's on too, two systems retry the same "
            "card, spending the card networks' retry allowance (which counts every attempt) "
            "and inviting excessive-retry fees",
        )
    return [retries, emails]


def stripe(
    settings: Settings, rules: Rules, gateway: StripeGateway, event_types: list[str], now: datetime
) -> tuple[list[Check], list[ManualStep]]:
    if not settings.stripe_api_key:  # the built-in stand-in: nothing at Stripe to check
        return [key(settings)], manual_steps(rules)
    checked, endpoints = permissions(gateway, now)
    return [key(settings), checked, *webhook(settings, endpoints, event_types)], manual_steps(rules)
