"""A localstripe server on loopback for tests and the demo.

Run it as ``python -m recovery.devtools.localstripe --port P`` or start it from code with
:func:`start_localstripe`. Never use localstripe's stock command: it listens on every interface
(``::``) and pickles its whole store to ``/tmp/localstripe.pickle`` on every write, so concurrent
runs would share and clobber one file (see ``docs/testing-parts.md#localstripe``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import stripe

DEFAULT_SECRET_KEY = "sk_test_recovery"
PUBLISHABLE_KEY = "pk_test_recovery"  # `_authenticate` and friends accept a `pk_` key in the form


def _serve(host: str, port: int, parent_pid: int | None) -> None:
    from aiohttp import web
    from localstripe import resources

    # localstripe 1.15.10 calls Store.dump_to_disk from Store.__setitem__/__delitem__ *and* from
    # a middleware after every POST/PUT/DELETE; both look the method up on the class.
    resources.Store.dump_to_disk = lambda self: None

    from localstripe.server import app

    if parent_pid is not None:

        async def exit_with_parent(app: web.Application) -> AsyncIterator[None]:
            async def watch() -> None:
                while os.getppid() == parent_pid:
                    await asyncio.sleep(0.5)
                # Orphaned (the test run was killed): shut down like on `kill`.
                os.kill(os.getpid(), signal.SIGTERM)

            task = asyncio.create_task(watch())
            yield
            task.cancel()

        app.cleanup_ctx.append(exit_with_parent)

    # No access log; localstripe reports webhook deliveries ("webhook ... delivered/failed") on
    # the aiohttp.access logger at INFO: keep those, they explain a missing webhook.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.INFO)
    web.run_app(app, host=host, port=port, print=None, access_log=None, handle_signals=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="localstripe on loopback, no pickle file")
    parser.add_argument("--port", type=int, default=8420)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--parent-pid",
        type=int,
        default=None,
        help="exit when this process is no longer our parent",
    )
    args = parser.parse_args(argv)
    _serve(args.host, args.port, args.parent_pid)


@dataclass
class LocalStripe:
    """A running localstripe subprocess; ``base_url`` goes in ``base_addresses={"api": ...}``."""

    base_url: str
    port: int
    process: subprocess.Popen[bytes]
    _log: IO[bytes] = field(repr=False)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.close()

    def log(self) -> str:
        """The server's output so far: errors and webhook deliveries (for a failing test)."""
        if self._log.closed:
            return ""
        # pread: the child shares this file offset, seeking would move its writes.
        size = os.fstat(self._log.fileno()).st_size
        return os.pread(self._log.fileno(), size, 0).decode(errors="replace")

    def __enter__(self) -> LocalStripe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(base_url: str) -> bool:
    request = urllib.request.Request(
        base_url + "/v1/customers?limit=1",
        headers={"Authorization": f"Bearer {DEFAULT_SECRET_KEY}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def start_localstripe(*, timeout: float = 20.0) -> LocalStripe:
    """Start localstripe as a subprocess on a free loopback port and wait until it answers.

    The subprocess exits by itself if this process dies without calling ``stop()``. Its output
    goes to an anonymous temporary file (nothing is left behind), readable with ``log()``.
    """
    last_error = ""
    for _attempt in range(3):  # the free port can be taken before the server binds it
        port = free_port()
        log = tempfile.TemporaryFile()  # noqa: SIM115 - LocalStripe.stop() closes it
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "recovery.devtools.localstripe",
                "--port",
                str(port),
                "--parent-pid",
                str(os.getpid()),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],  # the checkout, for `python -m`
        )
        server = LocalStripe(f"http://127.0.0.1:{port}", port, process, log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            if _answers(server.base_url):
                return server
            time.sleep(0.05)
        last_error = server.log()
        server.stop()
    raise RuntimeError(f"localstripe did not start within {timeout}s:\n{last_error}")


def _post_form(url: str, fields: list[tuple[str, str]], method: str = "POST") -> None:
    data = urllib.parse.urlencode(fields).encode() if fields else None
    request = urllib.request.Request(url, data=data, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def register_webhook(
    base_url: str,
    url: str,
    secret: str,
    *,
    webhook_id: str = "recovery",
    events: Sequence[str] | None = None,
) -> None:
    """Send every event (or only ``events``) to ``url``, signed with ``secret``.

    localstripe posts each event about a second after it happens, each from its own task:
    order is not guaranteed and a failed delivery is never retried.
    """
    fields = [("url", url), ("secret", secret)]
    fields += [("events[]", event) for event in events or ()]
    _post_form(f"{base_url}/_config/webhooks/{urllib.parse.quote(webhook_id)}", fields)


def authenticate_payment_intent(
    base_url: str, payment_intent_id: str, client_secret: str, *, success: bool = True
) -> int:
    """Play the customer's 3-D Secure step in localstripe; return the HTTP status.

    With card 4000008260003178 the authentication succeeds and the charge is then declined:
    402, ``payment_intent.payment_failed`` + ``invoice.payment_failed``, subscription
    ``past_due``. This endpoint takes the publishable key in the form, like Stripe.js does.
    """
    fields = [
        ("client_secret", client_secret),
        ("success", "true" if success else "false"),
        ("key", PUBLISHABLE_KEY),
    ]
    url = f"{base_url}/v1/payment_intents/{urllib.parse.quote(payment_intent_id)}/_authenticate"
    try:
        _post_form(url, fields)
    except urllib.error.HTTPError as error:
        error.read()
        return int(error.code)
    return 200


CARD_3DS_THEN_DECLINE = "4000008260003178"  # localstripe: authenticates, then declines


def fail_renewal(
    client: stripe.StripeClient, base_url: str, customer_id: str, subscription_id: str
) -> tuple[stripe.Invoice, int]:
    """The failed-renewal recipe (docs/testing-parts.md): the customer's default card becomes
    one that authenticates and is then declined, and a renewal invoice is paid with it. Returns
    the invoice and the status of the 3-D Secure step (402: declined, as Stripe's webhooks say)."""
    bad = client.v1.payment_methods.create(
        {
            "type": "card",
            "card": {
                "number": CARD_3DS_THEN_DECLINE,
                "exp_month": 12,
                "exp_year": 2034,
                "cvc": "123",
            },
        }
    )
    client.v1.payment_methods.attach(bad.id, {"customer": customer_id})
    client.v1.customers.update(
        customer_id, {"invoice_settings": {"default_payment_method": bad.id}}
    )
    invoice = client.v1.invoices.pay(
        client.v1.invoices.create({"customer": customer_id, "subscription": subscription_id}).id
    )
    intent = client.v1.payment_intents.retrieve(invoice.to_dict()["payment_intent"])
    status = authenticate_payment_intent(base_url, intent.id, intent.client_secret or "")
    return invoice, status


def wipe(base_url: str) -> None:
    """Delete every object; webhook registrations are kept."""
    _post_form(f"{base_url}/_config/data", [], method="DELETE")


if __name__ == "__main__":
    main()
