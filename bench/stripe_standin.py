"""A local stand-in for the Stripe API that stock dj-stripe re-fetches every object from.

    python bench/stripe_standin.py --port P [--seed 7]

GET /v1/<resource>/<id> answers the object the benchmark's events carry (bench/event_mix.py,
same seed: the current state Stripe would return), or else Stripe's example object of that
type (fixtures3.json) with the id asked for. Placeholders in the examples ("invoice":
"invoice", a discount with a null coupon) are replaced by nulls or the ids of real objects.
Lists are empty; /v1/account is one account. Requests are counted per resource and printed on
SIGTERM/SIGINT, so the benchmark can say how many API calls dj-stripe made per event.
Loopback only; nothing is stored.
"""

from __future__ import annotations

import argparse
import copy
import json
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aiohttp import web  # noqa: E402

from bench.event_mix import build_templates  # noqa: E402
from tests.support import stripe_payloads as sp  # noqa: E402

ACCOUNT_ID = "acct_bench0000000001"
# /v1/<path> -> fixtures3.json resource
RESOURCES = {
    "customers": "customer",
    "invoices": "invoice",
    "charges": "charge",
    "subscriptions": "subscription",
    "subscription_items": "subscription_item",
    "payment_methods": "payment_method",
    "payment_intents": "payment_intent",
    "setup_intents": "setup_intent",
    "prices": "price",
    "plans": "plan",
    "products": "product",
    "balance_transactions": "balance_transaction",
    "invoiceitems": "invoiceitem",
    "coupons": "coupon",
    "events": "event",
    "refunds": "refund",
    "disputes": "dispute",
    "tax_rates": "tax_rate",
    "mandates": "mandate",
    "sources": "source",
    "checkout/sessions": "checkout.session",
}
_PLACEHOLDERS = {
    "invoice",
    "invoice_item",
    "subscription",
    "subscription_item",
    "action",
    "invoice_line_items",
    "customer",
    "charge",
    "payment_intent",
}


def _clean(value: Any) -> Any:
    """Example placeholders (a key whose value is its own name, a coupon-less discount) out."""
    if isinstance(value, dict):
        if value.get("object") == "discount" and not (value.get("source") or {}).get("coupon"):
            return None
        out = {}
        for k, v in value.items():
            if isinstance(v, str) and v in _PLACEHOLDERS and v == k.rstrip("s"):
                out[k] = None
            elif isinstance(v, list) and v and all(isinstance(x, str) and x == k for x in v):
                out[k] = []
            else:
                out[k] = _clean(v)
        return out
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


class StandIn:
    def __init__(self, seed: int) -> None:
        self.known: dict[str, dict[str, Any]] = {}
        for template in build_templates(seed=seed):
            obj = json.loads(template.body("evt_standin", 1_700_000_000))["data"]["object"]
            if isinstance(obj.get("id"), str):
                self.known[obj["id"]] = obj
        self.examples = {name: _clean(sp.fixture(name)) for name in set(RESOURCES.values())}
        self.examples["account"] = _clean(sp.fixture("account", id=ACCOUNT_ID))
        self.counts: Counter[str] = Counter()

    def object(self, resource: str, oid: str) -> dict[str, Any] | None:
        kind = RESOURCES.get(resource)
        if kind is None:
            return None
        if oid in self.known and self.known[oid].get("object") == kind.split(".")[-1]:
            return self.known[oid]
        obj = copy.deepcopy(self.examples[kind])
        obj["id"] = oid
        if kind == "invoice":
            obj["customer"] = "cus_bench000000"
        return obj


def not_found(message: str) -> web.Response:
    error = {"type": "invalid_request_error", "code": "resource_missing", "message": message}
    return web.json_response({"error": error}, status=404)


def make_app(standin: StandIn) -> web.Application:
    async def account(request: web.Request) -> web.Response:
        standin.counts["account"] += 1
        return web.json_response(standin.examples["account"])

    async def retrieve(request: web.Request) -> web.Response:
        parts = request.match_info["tail"].strip("/").split("/")
        standin.counts[parts[0] if len(parts) != 3 else f"{parts[0]}/*/{parts[2]}"] += 1
        if parts[0] == "checkout" and len(parts) >= 3:
            parts = ["checkout/sessions", *parts[2:]]
        if len(parts) == 1 or len(parts) == 3:  # a list, or a sub-list (invoices/<id>/lines)
            url = request.path
            return web.json_response({"object": "list", "data": [], "has_more": False, "url": url})
        obj = standin.object(parts[0], parts[1])
        if obj is None:
            return not_found(f"No such {parts[0]}: '{parts[1]}'")
        return web.json_response(obj)

    app = web.Application()
    app.router.add_get("/v1/account", account)
    app.router.add_get("/v1/{tail:.+}", retrieve)
    return app


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--counts-out", type=Path)
    args = parser.parse_args()
    standin = StandIn(args.seed)

    def dump(*_: object) -> None:
        if args.counts_out:
            args.counts_out.write_text(json.dumps(dict(standin.counts)))
        raise web.GracefulExit

    signal.signal(signal.SIGTERM, dump)
    signal.signal(signal.SIGINT, dump)
    web.run_app(
        make_app(standin),
        host="127.0.0.1",
        port=args.port,
        print=None,
        access_log=None,
        handle_signals=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
