"""The SDK gateway: against localstripe where it models Stripe, against a scripted local HTTP
server for what it does not (decline codes, 429/5xx, 3-D Secure), and a contract test that every
parameter we send exists in the pinned API version's typed params."""

from __future__ import annotations

import inspect
import json
import random
import re
import sys
import threading
import time
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import stripe
import stripe.params as sdk_params
import stripe.params.checkout as sdk_checkout_params
from stripe._request_options import RequestOptions

from recovery.adapters.stripe.errors import (
    AccessDenied,
    AuthenticationRequired,
    CardDeclined,
    IdempotencyConflict,
    InvalidRequest,
    NotFound,
    RateLimited,
    Unavailable,
)
from recovery.adapters.stripe.protocol import PINNED_API_VERSION, StripeGateway
from recovery.adapters.stripe.retries import translate_error
from recovery.adapters.stripe.sdk import DEFAULT_TIMEOUT, StripeSdkGateway
from recovery.domain.stripe_objects.states import (
    card_state,
    customer_state,
    invoice_state,
    subscription_state,
)
from tests.support import stripe_payloads as sp
from tests.support.localstripe_server import DEFAULT_SECRET_KEY, LocalStripe, start_localstripe

KEY = "sk_test_gateway"


# ---- a recording HTTP client (sees the headers the SDK sends) ------------------------------------


@dataclass
class Sent:
    method: str
    url: str
    headers: dict[str, str]
    body: str | None


class RecordingClient(stripe.RequestsClient):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sent: list[Sent] = []

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> Any:
        self.sent.append(Sent(method, url, dict(headers or {}), post_data))
        return super().request(method, url, headers, post_data)


# ---- a scripted Stripe stand-in ----------------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class ScriptedStripe(ThreadingHTTPServer):
    """Answers from a queue of replies (then from `default`), recording every request."""

    def __init__(self, default: Callable[[str, str], Reply] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.replies: list[Reply] = []
        self.default = default or (lambda method, path: Reply(200, _object_for(method, path)))
        self.received: list[Sent] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: ScriptedStripe

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else None
        with self.server.lock:
            self.server.received.append(Sent(self.command, self.path, dict(self.headers), body))
            reply = (
                self.server.replies.pop(0)
                if self.server.replies
                else self.server.default(self.command, urlsplit(self.path).path)
            )
        if reply.delay:
            time.sleep(reply.delay)
        payload = json.dumps(reply.body).encode()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out first
            pass

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


_KINDS = {
    "invoices": "invoice",
    "customers": "customer",
    "subscriptions": "subscription",
    "sessions": "checkout.session",
    "setup_intents": "setup_intent",
    "payment_methods": "payment_method",
    "events": "event",
    "webhook_endpoints": "webhook_endpoint",
    "prices": "price",
    "subscription_schedules": "subscription_schedule",
}


def _object_for(method: str, path: str) -> dict[str, Any]:
    """A fixture-shaped answer for any path we call."""
    parts = [p for p in path.split("/") if p]
    collection = parts[1] if parts[1] != "checkout" else parts[2]
    kind = _KINDS[collection]
    is_list = method == "GET" and parts[-1] in _KINDS
    if is_list:
        return {"object": "list", "data": [], "has_more": False, "url": path}
    obj = sp.fixture(kind)
    if method == "DELETE":
        obj["status"] = "canceled"
    return obj


@pytest.fixture
def scripted() -> Iterator[ScriptedStripe]:
    server = ScriptedStripe()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def error(status: int, **fields: Any) -> Reply:
    headers = fields.pop("headers", {})
    return Reply(status, {"error": fields}, headers)


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def gateway_for(
    server: ScriptedStripe, max_retries: int = 3, **kwargs: Any
) -> tuple[StripeSdkGateway, Sleeps]:
    sleeps = Sleeps()
    gateway = StripeSdkGateway(
        KEY,
        api_base=server.url,
        max_retries=max_retries,
        sleep=sleeps,
        rng=random.Random(7),
        **kwargs,
    )
    return gateway, sleeps


# ---- configuration -----------------------------------------------------------------------------


def test_pins_the_sdk_api_version_and_sets_timeouts() -> None:
    assert stripe.api_version == PINNED_API_VERSION  # bump with the SDK, never apart
    gateway = StripeSdkGateway(KEY)
    assert isinstance(gateway.http_client, stripe.RequestsClient)
    assert gateway.http_client._timeout == DEFAULT_TIMEOUT  # (connect, read)
    connect, read = DEFAULT_TIMEOUT
    assert 0 < connect < read <= 80
    # Our retry loop is the only one: the SDK's own would multiply attempts and sleep blindly.
    assert gateway._client._requestor._options.max_network_retries == 0
    assert not gateway.livemode and StripeSdkGateway("sk_live_x").livemode


def test_sends_the_pinned_version_and_the_callers_idempotency_key_on_posts(
    scripted: ScriptedStripe,
) -> None:
    gateway, _ = gateway_for(scripted)
    gateway.pay_invoice("in_1", idempotency_key="pay:in_1:1")
    gateway.retrieve_invoice("in_1")
    post, get = scripted.received
    assert (post.method, urlsplit(post.url).path) == ("POST", "/v1/invoices/in_1/pay")
    assert post.headers["Idempotency-Key"] == "pay:in_1:1"
    assert post.headers["Stripe-Version"] == PINNED_API_VERSION
    assert get.method == "GET" and "Idempotency-Key" not in get.headers
    with pytest.raises(ValueError):
        gateway.pay_invoice("in_1", idempotency_key="")
    with pytest.raises(ValueError):
        gateway.pay_invoice("in_1", idempotency_key="k" * 256)


# ---- retries -------------------------------------------------------------------------------------


def test_retries_server_errors_with_the_same_key_then_succeeds(scripted: ScriptedStripe) -> None:
    scripted.replies += [error(500, type="api_error"), error(500, type="api_error")]
    gateway, sleeps = gateway_for(scripted)
    invoice = gateway.pay_invoice("in_1", idempotency_key="pay:in_1:1")
    assert invoice["object"] == "invoice"
    assert len(scripted.received) == 3
    assert {r.headers["Idempotency-Key"] for r in scripted.received} == {"pay:in_1:1"}
    # jittered exponential backoff: attempt n waits 0.5 * 2^(n-1) * U(0.5, 1)
    assert len(sleeps) == 2
    assert 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0


@pytest.mark.parametrize(
    "reply",
    [
        error(429, type="invalid_request_error", code="rate_limit"),
        error(429, type="invalid_request_error", code="lock_timeout"),
        error(409, type="api_error", code="lock_timeout"),
        error(503, type="api_error"),
    ],
    ids=["rate_limit", "lock_timeout", "conflict", "unavailable"],
)
def test_retries_transient_errors(scripted: ScriptedStripe, reply: Reply) -> None:
    scripted.replies.append(reply)
    gateway, sleeps = gateway_for(scripted)
    assert gateway.retrieve_customer("cus_1")["object"] == "customer"
    assert len(scripted.received) == 2 and len(sleeps) == 1


def test_gives_up_after_max_retries_with_a_transient_error(scripted: ScriptedStripe) -> None:
    scripted.replies += [error(429, type="invalid_request_error", code="rate_limit")] * 3
    gateway, sleeps = gateway_for(scripted, max_retries=2)
    with pytest.raises(RateLimited) as caught:
        gateway.retrieve_customer("cus_1")
    assert caught.value.transient and caught.value.http_status == 429
    assert len(scripted.received) == 3 and len(sleeps) == 2


def test_honours_stripe_should_retry_and_retry_after(scripted: ScriptedStripe) -> None:
    # A 500 whose result Stripe cached under the key: retrying cannot help.
    scripted.replies.append(error(500, type="api_error", headers={"Stripe-Should-Retry": "false"}))
    gateway, sleeps = gateway_for(scripted)
    with pytest.raises(Unavailable) as caught:
        gateway.pay_invoice("in_1", idempotency_key="k1")
    assert caught.value.transient and len(scripted.received) == 1 and sleeps == []

    scripted.replies.append(error(429, type="invalid_request_error", headers={"Retry-After": "3"}))
    gateway.retrieve_customer("cus_1")
    assert sleeps == [3.0]


def test_does_not_retry_client_errors(scripted: ScriptedStripe) -> None:
    scripted.replies += [
        error(400, type="invalid_request_error", code="parameter_unknown", param="x"),
        error(404, type="invalid_request_error", code="resource_missing"),
        error(400, type="idempotency_error", message="Keys for idempotent requests ..."),
        error(401, type="invalid_request_error", message="Invalid API Key provided"),
    ]
    gateway, sleeps = gateway_for(scripted)
    with pytest.raises(InvalidRequest) as invalid:
        gateway.update_invoice("in_1", idempotency_key="u", auto_advance=False)
    assert invalid.value.param == "x" and not invalid.value.transient
    with pytest.raises(NotFound):
        gateway.retrieve_invoice("in_missing")
    with pytest.raises(IdempotencyConflict):
        gateway.mark_uncollectible("in_1", idempotency_key="reused")
    with pytest.raises(AccessDenied):
        gateway.retrieve_customer("cus_1")
    assert len(scripted.received) == 4 and sleeps == []


def test_connection_errors_and_read_timeouts_are_retried_then_unavailable(
    scripted: ScriptedStripe,
) -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as closed:
        port = closed.server_address[1]
    sleeps = Sleeps()
    refused = StripeSdkGateway(
        KEY, api_base=f"http://127.0.0.1:{port}", max_retries=2, sleep=sleeps
    )
    with pytest.raises(Unavailable):
        refused.retrieve_invoice("in_1")
    assert len(sleeps) == 2

    scripted.replies += [Reply(200, sp.fixture("invoice"), delay=0.6)] * 2
    slow, sleeps = gateway_for(scripted, max_retries=1, timeout=(1.0, 0.2))
    with pytest.raises(Unavailable):
        slow.retrieve_invoice("in_1")
    assert len(scripted.received) == 2 and len(sleeps) == 1


# ---- declines and 3-D Secure ---------------------------------------------------------------------


def test_a_decline_keeps_every_decline_field(scripted: ScriptedStripe) -> None:
    pm = sp.fixture("payment_method", id="pm_1")
    pm["card"]["brand"] = "mastercard"
    scripted.replies.append(
        error(
            402,
            type="card_error",
            code="card_declined",
            decline_code="insufficient_funds",
            advice_code="try_again_later",
            network_advice_code="24",
            network_decline_code="51",
            charge="ch_1",
            message="Your card has insufficient funds.",
            payment_intent={
                "id": "pi_1",
                "object": "payment_intent",
                "status": "requires_payment_method",
            },
            payment_method=pm,
        )
    )
    gateway, sleeps = gateway_for(scripted)
    with pytest.raises(CardDeclined) as caught:
        gateway.pay_invoice("in_1", idempotency_key="pay:in_1:2")
    declined = caught.value
    assert (declined.code, declined.decline_code, declined.advice_code) == (
        "card_declined",
        "insufficient_funds",
        "try_again_later",
    )
    assert (declined.network_advice_code, declined.network_decline_code) == ("24", "51")
    assert (declined.charge_id, declined.payment_intent_id) == ("ch_1", "pi_1")
    assert (declined.payment_method_id, declined.card_brand) == ("pm_1", "mastercard")
    assert not declined.transient and sleeps == [] and len(scripted.received) == 1


def test_authentication_required_carries_the_hosted_invoice_url(scripted: ScriptedStripe) -> None:
    scripted.replies += [
        error(
            402,
            type="card_error",
            code="invoice_payment_intent_requires_action",
            message="This payment requires additional user action.",
            payment_intent={
                "id": "pi_3ds",
                "object": "payment_intent",
                "status": "requires_action",
            },
        ),
        Reply(
            200,
            sp.fixture("invoice", id="in_1", hosted_invoice_url="https://invoice.stripe.com/i/x"),
        ),
    ]
    gateway, _ = gateway_for(scripted)
    with pytest.raises(AuthenticationRequired) as caught:
        gateway.pay_invoice("in_1", idempotency_key="pay:in_1:3")
    assert caught.value.payment_intent_id == "pi_3ds"
    assert caught.value.hosted_invoice_url == "https://invoice.stripe.com/i/x"
    assert [r.method for r in scripted.received] == ["POST", "GET"]


def test_results_are_plain_data_the_mappers_accept(scripted: ScriptedStripe) -> None:
    sub = sp.subscription("sub_1", "cus_1", period_start=1_800_000_000, period_end=1_802_592_000)
    scripted.replies.append(Reply(200, sub))
    gateway, _ = gateway_for(scripted)
    plain = gateway.retrieve_subscription("sub_1")
    assert type(plain) is dict and type(plain["items"]) is dict
    assert type(plain["items"]["data"][0]) is dict
    json.dumps(plain)  # nothing but JSON types
    state = subscription_state(plain)
    assert state.current_period_end == 1_802_592_000 and state.items[0].price_id == "price_monthly"


# ---- the contract: parameter names exist in the pinned API -------------------------------------

# What each request must be checked against: the SDK's TypedDict for that endpoint.
ENDPOINTS: list[tuple[str, str, type]] = [
    ("POST", r"/v1/invoices/create_preview", sdk_params.InvoiceCreatePreviewParams),
    ("GET", r"/v1/prices/[^/]+", sdk_params.PriceRetrieveParams),
    ("POST", r"/v1/subscription_schedules", sdk_params.SubscriptionScheduleCreateParams),
    ("POST", r"/v1/subscription_schedules/[^/]+", sdk_params.SubscriptionScheduleUpdateParams),
    ("POST", r"/v1/invoices/[^/]+/pay", sdk_params.InvoicePayParams),
    ("POST", r"/v1/invoices/[^/]+/mark_uncollectible", sdk_params.InvoiceMarkUncollectibleParams),
    ("POST", r"/v1/invoices/[^/]+/void", sdk_params.InvoiceVoidInvoiceParams),
    ("POST", r"/v1/invoices/[^/]+", sdk_params.InvoiceUpdateParams),
    ("GET", r"/v1/invoices/[^/]+", sdk_params.InvoiceRetrieveParams),
    ("GET", r"/v1/invoices", sdk_params.InvoiceListParams),
    ("POST", r"/v1/customers/[^/]+", sdk_params.CustomerUpdateParams),
    ("GET", r"/v1/customers/[^/]+", sdk_params.CustomerRetrieveParams),
    ("GET", r"/v1/customers", sdk_params.CustomerListParams),
    ("POST", r"/v1/subscriptions/[^/]+", sdk_params.SubscriptionUpdateParams),
    ("DELETE", r"/v1/subscriptions/[^/]+", sdk_params.SubscriptionCancelParams),
    ("GET", r"/v1/subscriptions/[^/]+", sdk_params.SubscriptionRetrieveParams),
    ("GET", r"/v1/subscriptions", sdk_params.SubscriptionListParams),
    ("POST", r"/v1/checkout/sessions", sdk_checkout_params.SessionCreateParams),
    ("GET", r"/v1/checkout/sessions/[^/]+", sdk_checkout_params.SessionRetrieveParams),
    ("GET", r"/v1/setup_intents/[^/]+", sdk_params.SetupIntentRetrieveParams),
    ("GET", r"/v1/payment_methods/[^/]+", sdk_params.PaymentMethodRetrieveParams),
    ("GET", r"/v1/payment_methods", sdk_params.PaymentMethodListParams),
    ("GET", r"/v1/events", sdk_params.EventListParams),
    ("GET", r"/v1/webhook_endpoints", sdk_params.WebhookEndpointListParams),
]

# One call of every Protocol method, with every optional parameter used.
CALLS: dict[str, Callable[[StripeGateway], Any]] = {
    "retrieve_invoice": lambda g: g.retrieve_invoice("in_1"),
    "pay_invoice": lambda g: g.pay_invoice(
        "in_1", idempotency_key="k-pay", payment_method="pm_1", off_session=False
    ),
    "update_invoice": lambda g: g.update_invoice(
        "in_1", idempotency_key="k-upd", auto_advance=False, metadata={"case": "1"}
    ),
    "mark_uncollectible": lambda g: g.mark_uncollectible("in_1", idempotency_key="k-unc"),
    "void_invoice": lambda g: g.void_invoice("in_1", idempotency_key="k-void"),
    "retrieve_customer": lambda g: g.retrieve_customer("cus_1"),
    "update_customer_default_payment_method": lambda g: g.update_customer_default_payment_method(
        "cus_1", "pm_1", idempotency_key="k-cus"
    ),
    "retrieve_subscription": lambda g: g.retrieve_subscription("sub_1"),
    "update_subscription": lambda g: g.update_subscription(
        "sub_1",
        idempotency_key="k-sub",
        metadata={"a": "b"},
        payment_behavior="pending_if_incomplete",
    ),
    "pause_subscription": lambda g: g.pause_subscription(
        "sub_1", behavior="keep_as_draft", resumes_at=1_900_000_000, idempotency_key="k-pause"
    ),
    "resume_subscription": lambda g: g.resume_subscription("sub_1", idempotency_key="k-resume"),
    "change_subscription_price": lambda g: g.change_subscription_price(
        "sub_1",
        item_id="si_1",
        price_id="price_2",
        proration_behavior="none",
        quantity=2,
        idempotency_key="k-price",
    ),
    "set_subscription_default_payment_method": lambda g: g.set_subscription_default_payment_method(
        "sub_1", "pm_1", idempotency_key="k-subpm"
    ),
    "cancel_subscription": lambda g: (
        g.cancel_subscription(
            "sub_1",
            at_period_end=True,
            feedback="too_expensive",
            comment="c",
            idempotency_key="k-c1",
        ),
        g.cancel_subscription(
            "sub_1", at_period_end=False, feedback="unused", comment="c", idempotency_key="k-c2"
        ),
    ),
    "apply_subscription_coupon": lambda g: g.apply_subscription_coupon(
        "sub_1", "coupon_1", idempotency_key="k-coupon"
    ),
    "create_checkout_setup_session": lambda g: g.create_checkout_setup_session(
        customer_id="cus_1",
        success_url="https://example.com/ok",
        cancel_url="https://example.com/cancel",
        metadata={"subscription_id": "sub_1"},
        locale="fr",
        idempotency_key="k-cs",
    ),
    "retrieve_checkout_session": lambda g: g.retrieve_checkout_session("cs_1"),
    "retrieve_setup_intent": lambda g: g.retrieve_setup_intent("seti_1"),
    "retrieve_payment_method": lambda g: g.retrieve_payment_method("pm_1"),
    "list_customer_payment_methods": lambda g: g.list_customer_payment_methods("cus_1"),
    "iter_customers": lambda g: list(g.iter_customers(starting_after="cus_0")),
    "iter_subscriptions": lambda g: list(g.iter_subscriptions(starting_after="sub_0")),
    "iter_invoices": lambda g: list(g.iter_invoices("open", starting_after="in_0")),
    "iter_events": lambda g: list(g.iter_events(1_700_000_000, starting_after="evt_0")),
    "list_webhook_endpoints": lambda g: g.list_webhook_endpoints(),
    # outreach (issue 12)
    "retrieve_price": lambda g: g.retrieve_price("price_1"),
    "preview_price_change": lambda g: g.preview_price_change(
        "sub_1",
        customer_id="cus_1",
        item_id="si_1",
        price_id="price_2",
        quantity=2,
        proration_behavior="always_invoice",
        proration_date=1_900_000_000,
    ),
    "preview_price_from": lambda g: g.preview_price_from(
        "cus_1", price_id="price_2", quantity=2, starts_at=1_900_000_000
    ),
    "switch_subscription_price": lambda g: g.switch_subscription_price(
        "sub_1",
        item_id="si_1",
        price_id="price_2",
        quantity=2,
        proration_behavior="always_invoice",
        proration_date=1_900_000_000,
        idempotency_key="k-switch",
    ),
    "schedule_price_at_renewal": lambda g: g.schedule_price_at_renewal(
        "sub_1", price_id="price_2", quantity=2, idempotency_key="k-sched"
    ),
    "create_checkout_subscription_session": lambda g: g.create_checkout_subscription_session(
        customer_id="cus_1",
        price_id="price_2",
        quantity=1,
        success_url="https://example.com/ok",
        cancel_url="https://example.com/cancel",
        metadata={"recovery_win_back": "1"},
        idempotency_key="k-cs-sub",
        coupon="coupon_1",
        locale="pt-BR",
    ),
}


def protocol_methods() -> list[str]:
    return sorted(
        name
        for name, member in vars(StripeGateway).items()
        if not name.startswith("_") and inspect.isfunction(member)
    )


def writes() -> list[str]:
    return [
        name
        for name in protocol_methods()
        if "idempotency_key" in inspect.signature(getattr(StripeGateway, name)).parameters
    ]


def decode_form(text: str) -> dict[str, Any]:
    """`a[b][0][c]=v` -> {"a": {"b": [{"c": "v"}]}}, the inverse of the SDK's encoding."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        path = re.findall(r"[^\[\]]+", key)
        node = root
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value

    def lists(value: Any) -> Any:
        if isinstance(value, dict):
            if value and all(k.isdigit() for k in value):
                return [lists(value[k]) for k in sorted(value, key=int)]
            return {k: lists(v) for k, v in value.items()}
        return value

    return typing.cast(dict[str, Any], lists(root))


def _typeddicts_in(annotation: Any, module: str) -> list[type]:
    names = re.findall(r"[A-Z]\w+", str(annotation))
    namespace = vars(sys.modules[module])
    found = [namespace.get(name) for name in names]
    return [t for t in found if isinstance(t, type) and hasattr(t, "__optional_keys__")]


def unknown_params(value: Any, allowed: list[type], path: str = "") -> list[str]:
    """Every parameter name in `value` that none of the TypedDicts `allowed` declares."""
    if isinstance(value, list):
        return [
            p
            for i, v in enumerate(value)
            for p in unknown_params(v, allowed, f"{path.rstrip('.')}[{i}].")
        ]
    if not isinstance(value, dict) or not allowed:
        return []
    problems = []
    for key, item in value.items():
        owners = [t for t in allowed if key in t.__annotations__]
        if not owners:
            problems.append(f"{path}{key}")
            continue
        nested = [
            t
            for owner in owners
            for t in _typeddicts_in(owner.__annotations__[key], owner.__module__)
        ]
        problems += unknown_params(item, nested, f"{path}{key}.")
    return problems


def test_every_protocol_method_is_exercised_by_the_contract_test() -> None:
    assert sorted(CALLS) == protocol_methods()


def test_contract_every_parameter_exists_in_the_pinned_api(scripted: ScriptedStripe) -> None:
    gateway, _ = gateway_for(scripted)
    request_options = set(RequestOptions.__annotations__)
    for name, call in CALLS.items():
        before = len(scripted.received)
        call(gateway)
        sent = scripted.received[before:]
        assert sent, f"{name} sent nothing"
        for request in sent:
            url = urlsplit(request.url)
            typed = next(
                (
                    td
                    for m, pattern, td in ENDPOINTS
                    if m == request.method and re.fullmatch(pattern, url.path)
                ),
                None,
            )
            assert typed is not None, f"{name}: {request.method} {url.path} has no typed params"
            params = decode_form(request.body or url.query)
            assert not set(params) & request_options, f"{name} sent a request option as a param"
            assert unknown_params(params, [typed]) == [], f"{name}: {request.method} {url.path}"
            # an invoice preview is a POST that changes nothing: no key needed
            if request.method == "POST" and not url.path.endswith("/create_preview"):
                assert request.headers.get("Idempotency-Key", "").startswith("k-"), name


def test_the_contract_check_catches_a_removed_parameter() -> None:
    # `coupon` left subscriptions in 2025-03-31, `payment_method_types` left Checkout in 2026.
    assert unknown_params({"coupon": "c"}, [sdk_params.SubscriptionUpdateParams]) == ["coupon"]
    assert unknown_params(
        {"items": [{"id": "si", "amount": 5}], "pause_collection": {"behavior": "void", "x": 1}},
        [sdk_params.SubscriptionUpdateParams],
    ) == ["items[0].amount", "pause_collection.x"]
    assert unknown_params(
        {"payment_method_types": ["card"]}, [sdk_checkout_params.SessionCreateParams]
    ) == ["payment_method_types"]


def test_update_subscription_refuses_unknown_parameters_before_sending(
    scripted: ScriptedStripe,
) -> None:
    gateway, _ = gateway_for(scripted)
    with pytest.raises(InvalidRequest) as caught:
        gateway.update_subscription("sub_1", idempotency_key="k", coupon="OFF")
    assert caught.value.param == "coupon" and scripted.received == []
    with pytest.raises(InvalidRequest):
        gateway.pause_subscription("sub_1", behavior="forever", idempotency_key="k")
    with pytest.raises(InvalidRequest):
        gateway.cancel_subscription(
            "sub_1", at_period_end=True, feedback="meh", idempotency_key="k"
        )
    assert scripted.received == []


def test_iterators_paginate_and_resume_from_a_cursor(scripted: ScriptedStripe) -> None:
    def page(ids: list[str], more: bool) -> Reply:
        data = [sp.customer(cid) for cid in ids]
        return Reply(
            200, {"object": "list", "data": data, "has_more": more, "url": "/v1/customers"}
        )

    scripted.replies += [page(["cus_5", "cus_4"], True), page(["cus_3"], False)]
    gateway, _ = gateway_for(scripted, page_size=2)
    assert [c["id"] for c in gateway.iter_customers(starting_after="cus_6")] == [
        "cus_5",
        "cus_4",
        "cus_3",
    ]
    queries = [dict(parse_qsl(urlsplit(r.url).query)) for r in scripted.received]
    assert queries == [
        {"limit": "2", "starting_after": "cus_6"},
        {"limit": "2", "starting_after": "cus_4"},
    ]


def test_a_page_that_fails_is_retried_inside_the_iteration(scripted: ScriptedStripe) -> None:
    scripted.replies += [
        Reply(
            200, {"object": "list", "data": [sp.customer("cus_2")], "has_more": True, "url": "/"}
        ),
        error(500, type="api_error"),
        Reply(
            200, {"object": "list", "data": [sp.customer("cus_1")], "has_more": False, "url": "/"}
        ),
    ]
    gateway, sleeps = gateway_for(scripted, page_size=1)
    assert [c["id"] for c in gateway.iter_customers()] == ["cus_2", "cus_1"]
    assert len(sleeps) == 1


# ---- against localstripe -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def localstripe() -> Iterator[LocalStripe]:
    server = start_localstripe()
    yield server
    server.stop()


@dataclass
class World:
    base_url: str
    client: stripe.StripeClient
    gateway: StripeSdkGateway
    http: RecordingClient
    customer_id: str
    card_id: str
    subscription_id: str


@pytest.fixture
def world(localstripe: LocalStripe) -> World:
    from tests.support.localstripe_server import wipe

    wipe(localstripe.base_url)
    client = stripe.StripeClient(
        DEFAULT_SECRET_KEY, base_addresses={"api": localstripe.base_url}, max_network_retries=0
    )
    product = client.v1.products.create({"name": "Pro"})
    plan = client.v1.plans.create(
        {"product": product.id, "amount": 2000, "currency": "usd", "interval": "month"}
    )
    customer = client.v1.customers.create({"email": "ada@example.com"})
    card = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    client.v1.customers.update(
        customer.id, {"invoice_settings": {"default_payment_method": card.id}}
    )
    sub = client.v1.subscriptions.create({"customer": customer.id, "items": [{"plan": plan.id}]})
    http = RecordingClient(timeout=DEFAULT_TIMEOUT)
    gateway = StripeSdkGateway(
        DEFAULT_SECRET_KEY, api_base=localstripe.base_url, http_client=http, sleep=lambda s: None
    )
    return World(localstripe.base_url, client, gateway, http, customer.id, card.id, sub.id)


@pytest.mark.localstripe
def test_localstripe_retrieve_and_pay_an_invoice(world: World) -> None:
    invoice = world.client.v1.invoices.create(
        {"customer": world.customer_id, "subscription": world.subscription_id}
    )
    fetched = world.gateway.retrieve_invoice(invoice.id)
    state = invoice_state(fetched)  # localstripe speaks 2017-08-15; the mapper takes both
    assert (state.status, state.subscription_id) == ("draft", world.subscription_id)

    paid = world.gateway.pay_invoice(invoice.id, idempotency_key=f"pay:{invoice.id}:1")
    assert paid["status"] == "paid"
    pay_request = next(s for s in world.http.sent if s.url.endswith("/pay"))
    assert pay_request.headers["Idempotency-Key"] == f"pay:{invoice.id}:1"
    assert pay_request.headers["Stripe-Version"] == PINNED_API_VERSION
    assert all("Idempotency-Key" not in s.headers for s in world.http.sent if s.method == "get")


@pytest.mark.localstripe
def test_localstripe_customers_cards_and_subscriptions(world: World) -> None:
    customer = world.gateway.retrieve_customer(world.customer_id)
    assert customer_state(customer).default_payment_method_id == world.card_id
    cards = world.gateway.list_customer_payment_methods(world.customer_id)
    assert [card_state(c).last4 for c in cards] == ["4242"]
    assert world.gateway.retrieve_payment_method(world.card_id)["card"]["brand"] == "visa"

    second = world.client.v1.payment_methods.attach("pm_card_visa", {"customer": world.customer_id})
    updated = world.gateway.update_customer_default_payment_method(
        world.customer_id, second.id, idempotency_key="cus-default-1"
    )
    assert updated["invoice_settings"]["default_payment_method"] == second.id

    sub = world.gateway.cancel_subscription(
        world.subscription_id, at_period_end=True, idempotency_key="cancel-1"
    )
    assert sub["cancel_at_period_end"] is True
    ended = world.gateway.cancel_subscription(
        world.subscription_id, at_period_end=False, idempotency_key="cancel-2"
    )
    assert ended["status"] == "canceled"
    again = world.gateway.cancel_subscription(
        world.subscription_id, at_period_end=False, idempotency_key="cancel-3"
    )
    assert again["status"] == "canceled"  # cancelling twice is not an error for callers
    assert [s["id"] for s in world.gateway.iter_subscriptions()] == [world.subscription_id]


@pytest.mark.localstripe
def test_localstripe_pagination_resume_and_events(world: World) -> None:
    for n in range(4):
        world.client.v1.customers.create({"email": f"c{n}@example.com"})
    paged = StripeSdkGateway(DEFAULT_SECRET_KEY, api_base=world.base_url, page_size=2)
    everyone = [c["id"] for c in paged.iter_customers()]
    assert len(everyone) == 5 and len(set(everyone)) == 5
    assert [c["id"] for c in paged.iter_customers(starting_after=everyone[1])] == everyone[2:]
    events = list(paged.iter_events(created_gte=0))
    assert {"customer.created", "customer.subscription.created"} <= {e["type"] for e in events}
    assert all(isinstance(e["data"]["object"], dict) for e in events)


@pytest.mark.localstripe
def test_localstripe_errors_translate(world: World) -> None:
    with pytest.raises(NotFound):
        world.gateway.retrieve_invoice("in_does_not_exist")
    # localstripe's only decline: card_declined (402) with a charge id, no decline_code.
    with pytest.raises(stripe.CardError) as caught:
        world.client.v1.payment_methods.attach(
            "pm_card_visa_chargeDeclined", {"customer": world.customer_id}
        )
    declined = translate_error(caught.value)
    assert isinstance(declined, CardDeclined)
    assert (declined.code, declined.decline_code, declined.http_status) == (
        "card_declined",
        None,
        402,
    )
