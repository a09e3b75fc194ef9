"""`recovery demo --stripe localstripe`: the service against localstripe, a separate local
Stripe server speaking HTTP, so the real SDK gateway is exercised end to end.

Starts localstripe on loopback, points the service at it, registers the webhook endpoint with a
local signing secret, seeds customers and subscriptions (every fourth renewal fails, the way
Stripe fails them), and runs web + worker until Ctrl-C. Nothing leaves the machine. localstripe
has no Checkout, pause, coupons or prices, so the default demo (`--stripe fake`,
recovery/devtools/demo.py) uses the in-repo fake instead.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import click
import stripe

from recovery.config import Settings
from recovery.devtools.localstripe import (
    DEFAULT_SECRET_KEY,
    LocalStripe,
    fail_renewal,
    register_webhook,
    start_localstripe,
)
from recovery.migrate import upgrade
from recovery.runtime import Runtime
from recovery.services.registry import build_runtime

log = logging.getLogger(__name__)

DEMO_API_KEY = "demo-api-key"
DEMO_WEBHOOK_SECRET = "whsec_demo_local"
FIRST_NAMES = ["Ada", "Grace", "Alan", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Radia"]
LAST_NAMES = ["Lovelace", "Hopper", "Turing", "Torvalds", "Hamilton", "Thompson", "Liskov"]


@dataclass(frozen=True)
class SeedReport:
    customers: int
    subscriptions: int
    failed_renewals: int

    def __str__(self) -> str:
        return (
            f"{self.customers} customers, {self.subscriptions} subscriptions, "
            f"{self.failed_renewals} failed renewals"
        )


def seed(client: stripe.StripeClient, base_url: str, n_customers: int, seed: int = 7) -> SeedReport:
    """Customers on monthly and annual plans; every fourth renewal fails like a real decline."""
    rng = random.Random(seed)
    product = client.v1.products.create({"name": "Acme Pro"})
    plans = [
        client.v1.plans.create(
            {"product": product.id, "amount": amount, "currency": "usd", "interval": interval}
        )
        for amount, interval in ((1900, "month"), (4900, "month"), (19000, "year"))
    ]
    failed = 0
    for i in range(n_customers):
        name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
        customer = client.v1.customers.create(
            {"email": f"{name.lower().replace(' ', '.')}.{i}@example.com", "name": name}
        )
        good = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
        client.v1.customers.update(
            customer.id, {"invoice_settings": {"default_payment_method": good.id}}
        )
        subscription = client.v1.subscriptions.create(
            {"customer": customer.id, "items": [{"plan": rng.choice(plans).id}]}
        )
        if i % 4 != 3:
            continue
        fail_renewal(client, base_url, customer.id, subscription.id)
        failed += 1
    return SeedReport(n_customers, n_customers, failed)


def run_localstripe_demo(host: str, port: int, customers: int, exit_after_seed: bool) -> None:
    instance = Path(os.environ.get("RECOVERY_INSTANCE_PATH") or "instance").resolve()
    os.environ.setdefault("RECOVERY_DATABASE_URL", f"sqlite:///{instance / 'demo.db'}")
    stripe_server: LocalStripe = start_localstripe()
    try:
        os.environ.update(
            STRIPE_API_KEY=DEFAULT_SECRET_KEY,
            STRIPE_API_BASE=stripe_server.base_url,
            STRIPE_WEBHOOK_SECRETS=DEMO_WEBHOOK_SECRET,
            RECOVERY_API_KEYS=os.environ.get("RECOVERY_API_KEYS") or DEMO_API_KEY,
            RECOVERY_PUBLIC_URL=f"http://{host}:{port}",
        )
        settings = Settings.from_env()
        upgrade(settings.database_url)
        runtime = build_runtime(settings)

        from recovery.server import serve

        register_webhook(
            stripe_server.base_url, f"http://{host}:{port}/webhooks/stripe", DEMO_WEBHOOK_SECRET
        )
        click.echo(f"local Stripe stand-in (localstripe) on {stripe_server.base_url}")
        if customers:
            client = stripe.StripeClient(
                DEFAULT_SECRET_KEY,
                base_addresses={"api": stripe_server.base_url},
                max_network_retries=0,
            )
            # Seed while the server runs, so the webhooks it triggers are received.
            import threading

            def do_seed() -> None:
                report = seed(client, stripe_server.base_url, customers)
                click.echo(f"seeded {report}")
                click.echo(banner(host, port))
                if exit_after_seed:
                    wait_for_quiet_inbox(runtime)
                    os.kill(os.getpid(), signal.SIGTERM)

            threading.Timer(0.5, do_seed).start()
        else:
            click.echo(banner(host, port))
        serve(runtime, host, port, with_worker=True)
    finally:
        stripe_server.stop()


def wait_for_quiet_inbox(runtime: Runtime, quiet_seconds: float = 3, limit: float = 60) -> int:
    """Wait until localstripe's webhooks (sent about a second late) stop arriving."""
    from sqlalchemy import func, select

    from recovery.models import StripeEvent

    last, last_change, started = -1, time.monotonic(), time.monotonic()
    while time.monotonic() - started < limit:
        with runtime.db.transaction() as session:
            count = int(session.scalar(select(func.count()).select_from(StripeEvent)) or 0)
        if count != last:
            last, last_change = count, time.monotonic()
        elif time.monotonic() - last_change >= quiet_seconds:
            break
        time.sleep(0.2)
    return last


def banner(host: str, port: int) -> str:
    base = f"http://{host}:{port}"
    return "\n".join(
        [
            "",
            f"  recovery is running at {base}",
            f"  health:     {base}/healthz",
            f"  a customer: curl -H 'Authorization: Bearer {DEMO_API_KEY}' "
            f"{base}/api/v1/events?status=processed",
            "  stop with Ctrl-C",
            "",
        ]
    )
