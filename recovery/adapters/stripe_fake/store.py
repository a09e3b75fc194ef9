"""The fake's in-memory store and plumbing every part shares: objects by type and id,
deterministic ids, the request log, programmed outages, idempotent replay, the events a write
emits, and newest-first pagination."""

from __future__ import annotations

import copy
import json
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar, cast

from recovery.adapters.clock import Clock, FrozenClock
from recovery.adapters.stripe.errors import (
    GatewayError,
    IdempotencyConflict,
    InvalidRequest,
    NotFound,
    PaymentFailed,
    RateLimited,
    Unavailable,
)
from recovery.adapters.stripe.protocol import PAGE_SIZE, PINNED_API_VERSION, StripeDict

DAY = 86400
T = TypeVar("T")


class FakeRequest(NamedTuple):
    method: str
    params: dict[str, Any]
    idempotency_key: str | None


@dataclass
class _Outage:
    remaining: int
    kind: str
    skip: int
    methods: frozenset[str] | None


@dataclass(frozen=True)
class _ScriptedFailure:
    authenticate: bool = False
    code: str = "card_declined"
    decline_code: str | None = None
    advice_code: str | None = None
    network_advice_code: str | None = None
    network_decline_code: str | None = None
    brand: str | None = None


@dataclass
class _CardBehaviour:
    decline_code: str | None = None
    requires_authentication: bool = False


_ATOMS = frozenset((str, int, float, bool, type(None)))


def clone(obj: T) -> T:
    """A deep copy of Stripe-shaped data (dicts, lists, scalars). `copy.deepcopy` keeps a memo
    of every object it copies, which for these plain trees only costs: it was a sixth of the
    demo's seeding time (every call copies its parameters, its result and its events). Anything
    else still goes through `copy.deepcopy`."""
    return cast(T, _clone(obj))


def _clone(obj: Any) -> Any:
    kind = type(obj)
    if kind is dict:
        return {k: v if type(v) in _ATOMS else _clone(v) for k, v in obj.items()}
    if kind is list:
        return [v if type(v) in _ATOMS else _clone(v) for v in obj]
    if kind in _ATOMS:
        return obj
    return copy.deepcopy(obj)


def _nulls(*names: str) -> dict[str, None]:
    return dict.fromkeys(names)


def _missing(kind: str, oid: str, param: str | None = None) -> GatewayError:
    message = f"No such {kind}: '{oid}'"
    if param is None:  # the object named in the URL
        return NotFound(message, code="resource_missing", http_status=404)
    return InvalidRequest(message, code="resource_missing", http_status=400, param=param)


class FakeStore:
    """The state of the fake Stripe account and the plumbing its calls go through."""

    def __init__(
        self, *, clock: Clock | None = None, livemode: bool = False, page_size: int = PAGE_SIZE
    ) -> None:
        self.clock = clock or FrozenClock(datetime(2026, 11, 2, 9, 0, tzinfo=UTC))
        self.page_size = page_size
        self._livemode = livemode
        self.requests: list[FakeRequest] = []
        self.store: dict[str, dict[str, StripeDict]] = defaultdict(dict)  # object type -> id -> obj
        self.events: list[StripeDict] = []
        self._seq: dict[str, int] = {}
        self._counters: dict[str, int] = defaultdict(int)
        self._idempotent: dict[str, tuple[str, Any]] = {}
        self._outages: list[_Outage] = []
        self._scripted: dict[str, deque[_ScriptedFailure]] = defaultdict(deque)
        self._cards: dict[str, _CardBehaviour] = {}

    @property
    def livemode(self) -> bool:
        return self._livemode

    # ---- plumbing -------------------------------------------------------------------------------

    def _now(self) -> int:
        return int(self.clock.now().timestamp())

    def new_id(self, prefix: str) -> str:
        self._counters[prefix] += 1
        return f"{prefix}_fake{self._counters[prefix]:06d}"

    def put(self, obj: Mapping[str, Any]) -> StripeDict:
        """Store a Stripe-shaped object as is (e.g. one built from fixtures3.json)."""
        stored = clone(dict(obj))
        kind, oid = stored["object"], stored["id"]
        if oid not in self.store[kind]:
            self._seq[oid] = len(self._seq)
        self.store[kind][oid] = stored
        return clone(stored)

    def _insert(self, obj: StripeDict) -> StripeDict:
        """Store an object the fake has just built, which nobody else holds: `put` without its
        two copies (three per payment attempt). Returns the stored object itself."""
        kind, oid = obj["object"], obj["id"]
        if oid not in self.store[kind]:
            self._seq[oid] = len(self._seq)
        self.store[kind][oid] = obj
        return obj

    def _get(self, kind: str, oid: str, param: str | None = None) -> StripeDict:
        obj = self.store[kind].get(oid)
        if obj is None:
            raise _missing(kind.replace("_", " "), oid, param)
        return obj

    def _emit(self, event_type: str, obj: StripeDict, key: str | None = None) -> None:
        self.events.append(
            {
                "id": self.new_id("evt"),
                "object": "event",
                "api_version": PINNED_API_VERSION,
                "created": self._now(),
                "data": {"object": clone(obj)},
                "livemode": self._livemode,
                "pending_webhooks": 0,
                "request": {"id": self.new_id("req") if key else None, "idempotency_key": key},
                "type": event_type,
            }
        )
        self._seq[self.events[-1]["id"]] = len(self._seq)

    def _gate(self, method: str, params: dict[str, Any], key: str | None) -> None:
        """Record the request, then fail it if an outage is programmed."""
        self.requests.append(FakeRequest(method, clone(params), key))
        for outage in self._outages:
            if outage.methods is not None and method not in outage.methods:
                continue
            if outage.skip:
                outage.skip -= 1
                return
            outage.remaining -= 1
            if outage.remaining <= 0:
                self._outages.remove(outage)
            if outage.kind == "rate_limit":
                raise RateLimited(
                    "Request rate limit exceeded.", code="rate_limit", http_status=429
                )
            raise Unavailable("An unknown error occurred", code="api_error", http_status=500)

    def _read(self, method: str, params: dict[str, Any], fetch: Callable[[], T]) -> T:
        self._gate(method, params, None)
        return clone(fetch())

    def _write(
        self, method: str, params: dict[str, Any], key: str, effect: Callable[[], StripeDict]
    ) -> StripeDict:
        if not key or len(key) > 255:
            raise ValueError("an idempotency key of 1-255 characters is required")
        self._gate(method, params, key)
        fingerprint = json.dumps([method, params], sort_keys=True, default=str)
        if key in self._idempotent:
            first, outcome = self._idempotent[key]
            if first != fingerprint:
                raise IdempotencyConflict(
                    "Keys for idempotent requests can only be used with the same parameters "
                    "they were first used with.",
                    code="idempotency_error",
                    http_status=400,
                )
            if isinstance(outcome, GatewayError):
                raise copy.copy(outcome)
            return clone(outcome)
        try:
            result = effect()
        except PaymentFailed as exc:  # an attempt happened: Stripe caches its result
            self._idempotent[key] = (fingerprint, copy.copy(exc))
            raise
        # Validation errors (InvalidRequest, NotFound) are not cached, as on Stripe.
        self._idempotent[key] = (fingerprint, clone(result))
        return clone(result)

    # A card must be attached to the customer before a customer or subscription may use it.
    def _attached(self, pm_id: str, customer_id: str, param: str) -> StripeDict:
        pm = self._get("payment_method", pm_id, param)
        if pm["customer"] != customer_id:
            raise InvalidRequest(
                f"The customer does not have a payment method with the ID {pm_id}. The payment "
                "method must be attached to the customer.",
                code="resource_missing",
                param=param,
            )
        return pm

    # ---- programming outcomes -------------------------------------------------------------------

    def outage(
        self,
        n: int,
        kind: str = "rate_limit",
        *,
        after: int = 0,
        methods: set[str] | frozenset[str] | None = None,
    ) -> None:
        """The next `n` calls (of `methods`, after letting `after` of them through) fail with a
        transient error: RateLimited (`rate_limit`) or Unavailable (`server_error`)."""
        if kind not in ("rate_limit", "server_error"):
            raise ValueError(f"unknown outage kind {kind!r}")
        self._outages.append(_Outage(n, kind, after, frozenset(methods) if methods else None))

    # ---- seeding --------------------------------------------------------------------------------
    # Shapes follow fixtures3.json at the pinned version; fields we never read are null/empty.

    def _base(self, kind: str, oid: str, created: int | None) -> StripeDict:
        return {
            "id": oid,
            "object": kind,
            "created": self._now() if created is None else created,
            "livemode": self._livemode,
        }

    # ---- paginated reads ------------------------------------------------------------------------

    def _newest_first(
        self, kind: str, keep: Callable[[StripeDict], bool] = lambda obj: True
    ) -> list[StripeDict]:
        objects = self.events if kind == "event" else list(self.store[kind].values())
        ordered = sorted(objects, key=lambda o: (o["created"], self._seq[o["id"]]), reverse=True)
        return [o for o in ordered if keep(o)]

    def _pages(
        self,
        method: str,
        kind: str,
        params: dict[str, Any],
        keep: Callable[[StripeDict], bool],
        starting_after: str | None,
    ) -> Iterator[StripeDict]:
        cursor = starting_after
        while True:
            self._gate(method, {**params, "limit": self.page_size, "starting_after": cursor}, None)
            everything = self._newest_first(kind)
            position = 0
            if cursor is not None:
                # A cursor is a position in the full list, valid even if the object no longer
                # matches the filter (an invoice paid since the last page).
                ids = [o["id"] for o in everything]
                if cursor not in ids:
                    raise _missing(kind, cursor, "starting_after")
                position = ids.index(cursor) + 1
            rest = [o for o in everything[position:] if keep(o)]
            page = clone(rest[: self.page_size])
            yield from page
            if len(rest) <= self.page_size:
                return
            cursor = page[-1]["id"]
