"""Fuzz drills: hostile or malformed input is refused with the documented error, never a crash.

- `recovery.domain.signature.verify`: arbitrary bodies, headers, secrets -> only SignatureError.
- the event mapper (`recovery.domain.stripe_objects` readers) on Stripe objects with random
  fields replaced -> a state or MappingError (a ValueError), nothing else.
- the processing path (`inbox.receive_events` -> `process_payload`) on random events of every
  handled type: an event either is processed, or fails with a ValueError-derived error, stays
  `pending` and leaves every other table exactly as it was (no partial write).
- the rules file (`Rules.load`) on TOML-ish text -> Rules, or RulesError/ConfigError.
- the webhook endpoint through the Flask test client on random bodies and headers -> 400 or
  413 only, never 500, never a row.

Deterministic (derandomize=True, no example database) so CI sees the same inputs every run.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from recovery.adapters.clock import FrozenClock
from recovery.app import create_app
from recovery.config import ConfigError
from recovery.db import Base
from recovery.domain.signature import SignatureError, sign, verify
from recovery.domain.stripe_objects.attempts import attempt_from_charge, attempt_from_payment_intent
from recovery.domain.stripe_objects.fields import MAX_TIMESTAMP, MappingError
from recovery.domain.stripe_objects.states import (
    card_state,
    customer_state,
    invoice_state,
    subscription_state,
)
from recovery.models import EventStatus, StripeEvent
from recovery.rules import Rules, RulesError
from recovery.runtime import Runtime
from recovery.services.events import dispatch as processing
from recovery.services.events import inbox
from recovery.services.registry import HANDLERS, build_runtime
from tests.conftest import WEBHOOK_SECRET, make_settings
from tests.support import stripe_payloads as sp

FUZZ = settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # one app/database per test, shared by its examples
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
NOW = 1_800_000_000

# ---- strategies -----------------------------------------------------------------------------

# Integers Stripe sends are int64; the edges are where storage and date conversion break.
EDGE_INTS = [0, -1, 1, 2**31 - 1, 2**31, 2**32, 2**53, 10**10, 10**12, 2**62, 2**63 - 1, -(2**63)]
# Keys Stripe objects use, so that random sub-objects look like Stripe's (see FIELD_NAMES below).
_SEED_NAMES = [
    "data",
    "id",
    "object",
    "card",
    "price",
    "plan",
    "recurring",
    "customer",
    "payment_intent",
    "payment",
    "status",
    "currency",
    "amount",
    "created",
]


def json_values(names: list[str]) -> st.SearchStrategy[Any]:
    leaf = st.one_of(
        st.none(),
        st.booleans(),
        st.sampled_from(EDGE_INTS),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.integers(min_value=-(2**31), max_value=2**31),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=40),
        st.sampled_from(["", "usd", "visa", "paid", "open", "active", "canceled", "4242"]),
    )
    key = st.sampled_from(names) | st.text(max_size=12)
    return st.recursive(
        leaf,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(key, inner, max_size=4),
        max_leaves=10,
    )


json_value = json_values(_SEED_NAMES)
_DELETE = object()


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key path inside a Stripe object (dict keys and list indexes)."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield (*prefix, key)
            yield from _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield (*prefix, index)
            yield from _paths(inner, (*prefix, index))


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for step in path[:-1]:
        try:
            obj = obj[step]
        except (KeyError, IndexError, TypeError):
            return  # an earlier mutation replaced this branch
        if not isinstance(obj, dict | list):
            return
    last = path[-1]
    try:
        if value is _DELETE:
            del obj[last]
        else:
            obj[last] = value
    except (KeyError, IndexError, TypeError):
        return


class _Recording(dict):  # type: ignore[type-arg]
    """A dict that notes every key read from it (and from the dicts inside it)."""

    def __init__(self, value: dict[str, Any], path: tuple[Any, ...], seen: set[Any]) -> None:
        super().__init__({k: _record(v, (*path, k), seen) for k, v in value.items()})
        self._path, self._seen = path, seen

    def __getitem__(self, key: Any) -> Any:
        self._seen.add((*self._path, key))
        return super().__getitem__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        self._seen.add((*self._path, key))
        return super().get(key, default)


def _record(value: Any, path: tuple[Any, ...], seen: set[Any]) -> Any:
    if isinstance(value, dict):
        return _Recording(value, path, seen)
    if isinstance(value, list):
        return [_record(v, (*path, i), seen) for i, v in enumerate(value)]
    return value


def read_paths(base: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The key paths the mapper actually reads from `base` (every reader, as processing does)."""
    seen: set[Any] = set()
    for reader, _kinds in READERS.values():
        with contextlib.suppress(Exception):
            reader(_record(copy.deepcopy(base), (), seen))
    return sorted(seen, key=repr)


@functools.cache
def mutated(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    """Example object `kind` with up to 6 fields replaced by random JSON or deleted, extra keys.

    Most mutations land on a field the mapper reads (found by running the readers on a dict
    that records its reads); the rest anywhere in the object.
    """
    base = BASES[kind]
    paths = sorted(set(_paths(base)), key=repr)
    path = st.sampled_from(read_paths(base) or paths) | st.sampled_from(paths)
    value = json_values(FIELD_NAMES) | st.just(_DELETE)
    mutation = st.tuples(path, value)
    extra = st.dictionaries(st.sampled_from(FIELD_NAMES), json_values(FIELD_NAMES), max_size=2)

    def build(changes: list[tuple[tuple[Any, ...], Any]], more: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(base)
        for path, value in changes:
            _set(obj, path, value)
        obj.update(more)
        return obj

    return st.builds(build, st.lists(mutation, max_size=6), extra)


def _base_objects() -> dict[str, dict[str, Any]]:
    return {
        "customer": sp.customer("cus_F", email="fuzz@example.com", phone="+14155550100"),
        "payment_method": sp.card_payment_method("pm_F", "cus_F"),
        "card": {
            "id": "card_F",
            "object": "card",
            "customer": "cus_F",
            "brand": "Visa",
            "last4": "4242",
            "exp_month": 8,
            "exp_year": 2030,
            "funding": "credit",
            "fingerprint": "fp_F",
            "country": "US",
        },
        "subscription": sp.subscription("sub_F", "cus_F", default_payment_method="pm_F"),
        "legacy_subscription": sp.legacy_subscription("sub_L", "cus_F"),
        "invoice": sp.invoice(
            "in_F",
            "cus_F",
            "sub_F",
            status="open",
            attempt_count=1,
            payments={"object": "list", "data": [{"payment": {"payment_intent": "pi_F"}}]},
        ),
        "legacy_invoice": sp.legacy_invoice("in_L", "cus_F", "sub_L", payment_intent="pi_L"),
        "charge": sp.failed_charge("ch_F", "cus_F", "pi_F"),
        "payment_intent": sp.fixture(
            "payment_intent",
            id="pi_F",
            customer="cus_F",
            invoice="in_F",
            charges={"object": "list", "data": [sp.failed_charge("ch_F", "cus_F", "pi_F")]},
            last_payment_error={
                "type": "card_error",
                "code": "card_declined",
                "decline_code": "insufficient_funds",
                "charge": "ch_F",
                "payment_method": sp.card_payment_method("pm_F", "cus_F"),
            },
        ),
        "invoice_payment": sp.fixture(
            "invoice_payment",
            invoice="in_F",
            payment={"type": "payment_intent", "payment_intent": "pi_F"},
        ),
        "setup_intent": sp.fixture(
            "setup_intent", id="seti_F", payment_method=sp.card_payment_method("pm_F", "cus_F")
        ),
        "checkout.session": sp.fixture("checkout.session", id="cs_F", customer="cus_F"),
    }


BASES = _base_objects()
FIELD_NAMES = sorted(
    {str(p[-1]) for base in BASES.values() for p in _paths(base) if isinstance(p[-1], str)}
    | set(_SEED_NAMES)
    | {"payments", "charges", "latest_charge", "items", "preferred_locales", "metadata"}
)

READERS: dict[str, tuple[Callable[[Any], Any], list[str]]] = {
    "customer_state": (customer_state, ["customer"]),
    "card_state": (card_state, ["payment_method", "card"]),
    "subscription_state": (subscription_state, ["subscription", "legacy_subscription"]),
    "invoice_state": (invoice_state, ["invoice", "legacy_invoice"]),
    "attempt_from_charge": (attempt_from_charge, ["charge"]),
    "attempt_from_payment_intent": (attempt_from_payment_intent, ["payment_intent"]),
}


def base_for(event_type: str) -> list[str]:
    """Which example objects an event of this type carries."""
    if event_type == "customer.source.expiring":
        return ["card"]
    if event_type.startswith("customer.subscription."):
        return ["subscription", "legacy_subscription"]
    if event_type.startswith("customer."):
        return ["customer"]
    if event_type.startswith("payment_method."):
        return ["payment_method"]
    if event_type.startswith("invoice_payment."):
        return ["invoice_payment"]
    if event_type.startswith("invoice."):
        return ["invoice", "legacy_invoice"]
    if event_type.startswith("charge."):
        return ["charge"]
    if event_type.startswith("payment_intent."):
        return ["payment_intent"]
    if event_type.startswith("setup_intent."):
        return ["setup_intent"]
    return ["checkout.session"]


def handled_types() -> list[str]:
    return sorted(HANDLERS.on_event)


# ---- signature ------------------------------------------------------------------------------

header_piece = st.one_of(
    st.text(max_size=30),
    st.builds(lambda v: f"t={v}", st.text(max_size=14)),
    st.builds(lambda v: f"t={v}", st.integers(min_value=-(10**15), max_value=10**15)),
    st.builds(lambda v: f"v1={v}", st.text(alphabet="0123456789abcdefABCDEF", max_size=70)),
    st.builds(lambda v: f"v1={v}", st.text(max_size=70)),
    st.builds(lambda k, v: f"{k}={v}", st.text(max_size=5), st.text(max_size=10)),
)
headers = st.one_of(
    st.none(),
    st.text(max_size=200),
    st.lists(header_piece, max_size=6).map(",".join),
    st.lists(header_piece, max_size=6).map(" , ".join),
)


@FUZZ
@given(
    body=st.binary(max_size=512),
    header=headers,
    secrets=st.lists(st.text(max_size=40), max_size=3),
    now=st.floats(min_value=0, max_value=4e9),
)
@example(body=b"{}", header="t=\u00b2,v1=00", secrets=["whsec_x"], now=1e9)  # Latin-1 digit
@example(body=b"{}", header="t=1" + "0" * 5000, secrets=["whsec_x"], now=1e9)
@example(body=b"{}", header="t=,v1=", secrets=[""], now=1e9)
@example(body=b"{}", header="t=1000000000,v1=\u00e9", secrets=["whsec_x"], now=1e9)  # non-ASCII
def test_verify_raises_only_signature_error(
    body: bytes, header: str | None, secrets: list[str], now: float
) -> None:
    try:
        verify(body, header, secrets, now)
    except SignatureError:
        return
    # It passed: then the header must really hold a fresh signature by one of the secrets.
    assert header is not None
    pairs = [part.strip().partition("=") for part in header.split(",")]
    stamps = [int(v) for k, _, v in pairs if k == "t"]
    given_v1 = {v for k, _, v in pairs if k == "v1"}
    assert stamps and stamps[-1] >= now - 300
    assert any(sign(body, s, stamps[-1]) in given_v1 for s in secrets)


@FUZZ
@given(
    body=st.binary(max_size=512), secret=st.text(min_size=1, max_size=40), age=st.integers(0, 299)
)
def test_verify_accepts_every_fresh_genuine_signature(body: bytes, secret: str, age: int) -> None:
    header = f"t={NOW - age},v1={sign(body, secret, NOW - age)}"
    verify(body, header, [secret], NOW)


# ---- the event mapper -----------------------------------------------------------------------


READER_CASES = [(name, kind) for name, (_r, kinds) in sorted(READERS.items()) for kind in kinds]


@pytest.mark.parametrize(("name", "kind"), READER_CASES, ids=[f"{n}-{k}" for n, k in READER_CASES])
@settings(FUZZ, max_examples=80)
@given(data=st.data())
def test_readers_raise_only_mapping_errors(name: str, kind: str, data: st.DataObject) -> None:
    reader = READERS[name][0]
    obj = data.draw(mutated(kind), label="object")
    try:
        reader(obj)
    except MappingError:
        pass
    except Exception as exc:
        raise AssertionError(f"{name} raised {exc.__class__.__name__}: {exc}") from exc


# One wrong-typed value at a time, on every field the mapper reads: deterministic and exhaustive
# where random draws of several fields at once are not.
CONFUSERS: list[Any] = [
    None,
    True,
    0,
    -1,
    2**31,
    2**62,
    2**63 - 1,
    1.5,
    "",
    "x",
    [],
    [7],
    {},
    {"id": 7},
]


def _confused(kind: str) -> Iterator[tuple[tuple[Any, ...], Any, dict[str, Any]]]:
    base = BASES[kind]
    for path in read_paths(base):
        for value in CONFUSERS:
            obj = copy.deepcopy(base)
            _set(obj, path, value)
            yield path, value, obj


@pytest.mark.parametrize(("name", "kind"), READER_CASES, ids=[f"{n}-{k}" for n, k in READER_CASES])
def test_readers_survive_one_wrong_type_on_any_field(name: str, kind: str) -> None:
    reader = READERS[name][0]
    failures = []
    for path, value, obj in _confused(kind):
        try:
            reader(obj)
        except MappingError:
            pass
        except Exception as exc:
            failures.append(
                f"{'.'.join(map(str, path))} = {value!r}: {exc.__class__.__name__}: {exc}"
            )
    assert not failures, f"{name} on {kind}:\n" + "\n".join(failures)


# ---- processing: receive_events -> process_payload -------------------------------------------


def snapshot(rt: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table but the inbox."""
    out = {}
    with rt.db.transaction() as session:
        for table in Base.metadata.sorted_tables:
            if table.name == StripeEvent.__tablename__:
                continue
            rows = session.execute(select(table)).all()
            out[table.name] = sorted((tuple(r) for r in rows), key=repr)
    return out


@settings(FUZZ, max_examples=60)
@given(data=st.data())
def test_processing_fails_only_cleanly(runtime: Runtime, data: st.DataObject) -> None:
    rt = runtime
    event_type = data.draw(st.sampled_from(handled_types()), label="type")
    kind = data.draw(st.sampled_from(base_for(event_type)), label="kind")
    obj = data.draw(mutated(kind), label="object")
    # Any `created` the inbox accepts (tests/test_mirror.py covers the 64-bit columns).
    created = data.draw(st.integers(0, MAX_TIMESTAMP), label="created")
    evt = sp.event(event_type, obj, created)
    body = sp.body_of(evt)

    # The exception itself, from a dry run rolled back.
    error: Exception | None = None
    with rt.db.sessionmaker() as session:
        try:
            processing.process_payload(rt.processing_context(session), json.loads(body))
        except Exception as exc:
            error = exc
        finally:
            session.rollback()
    if error is not None:
        assert isinstance(error, ValueError), (
            f"{event_type}: processing raised {error.__class__.__name__}: {error}"
        )

    before = snapshot(rt)
    inbox.receive_events(rt.db, [body], rt.processing_context, rt.clock)
    with rt.db.transaction() as session:
        row = session.get(StripeEvent, evt["id"])
        assert row is not None
        status, last_error = row.status, row.last_error
    if status == EventStatus.PROCESSED:
        assert error is None, f"dry run failed ({error!r}) but processing succeeded"
        return
    assert status == EventStatus.PENDING, f"{event_type}: status {status}"
    assert last_error, "a failed event records its error"
    assert snapshot(rt) == before, f"{event_type}: a failed event left writes behind"


# One type per handler family (and the types recovery cases react to); values by field type:
# numbers get the first one past 32 bits and the int64 maximum, containers a bare number,
# strings and nulls an object - what storage and the reactions see, not just the readers.
SWEEP_TYPES = [
    "customer.updated",
    "payment_method.attached",
    "customer.subscription.updated",
    "invoice.payment_failed",
    "charge.failed",
    "payment_intent.payment_failed",
]


def _sweep_values(original: Any) -> list[Any]:
    if isinstance(original, bool):
        return [2**63 - 1]
    if isinstance(original, int | float):
        return [2**31, 2**63 - 1]
    if isinstance(original, list | dict):
        return [7]
    return [{"id": 7}]


def _get(obj: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        try:
            obj = obj[step]
        except (KeyError, IndexError, TypeError):
            return None
    return obj


def test_processing_survives_one_wrong_value_on_any_field(
    postgres_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any
) -> None:
    """The mirror and the reactions of each handler family, one bad field at a time (dry runs
    rolled back): only ValueError-derived errors (MappingError) may come out.

    On PostgreSQL only: its column types are the stricter ones (SQLite stores any int64), and
    the random-event drill below covers both engines.
    """
    rt = build_runtime(make_settings(postgres_url, tmp_path), clock=clock, gateway=fake_gateway)
    handled = set(handled_types())
    failures = []
    for event_type in SWEEP_TYPES:
        assert event_type in handled
        base = BASES[base_for(event_type)[0]]
        for path in read_paths(base):
            for value in _sweep_values(_get(base, path)):
                obj = copy.deepcopy(base)
                _set(obj, path, value)
                event = {
                    "id": "evt_sweep",
                    "type": event_type,
                    "created": NOW,
                    "data": {"object": obj},
                }
                with rt.db.sessionmaker() as session:
                    try:
                        processing.process_payload(rt.processing_context(session), event)
                    except ValueError:
                        pass
                    except Exception as exc:
                        where = ".".join(map(str, path))
                        failures.append(
                            f"{event_type} {where} = {value!r}: "
                            f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:100]}"
                        )
                    finally:
                        session.rollback()
    rt.db.dispose()
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures)


# ---- the rules file -------------------------------------------------------------------------

DEFAULT_RULES = Path(__file__).resolve().parents[2] / "recovery" / "rules.default.toml"
toml_scalar = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.booleans().map(lambda b: "true" if b else "false"),
    st.text(max_size=20).map(json.dumps),
    st.floats(allow_nan=True, allow_infinity=True).map(
        lambda f: {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(str(f), repr(f))
    ),
    st.sampled_from(
        [
            "[]",
            "[1, 15]",
            '["friday"]',
            '["someday"]',
            "{}",
            "{ visa = 1 }",
            "1979-05-27T07:32:00Z",
            "07:32:00",
            "0x10",
            "1_000",
            '"""a\nb"""',
        ]
    ),
)
toml_key = st.one_of(
    st.sampled_from(
        [
            "name",
            "sender_name",
            "sender_email",
            "reply_to",
            "retry_owner",
            "window_days",
            "max_attempts",
            "soft_first_retry_hours",
            "min_gap_hours",
            "end_of_dunning",
            "payday_targeting",
            "payday_days_of_month",
            "payday_last_business_day",
            "payday_weekdays",
            "local_hour_start",
            "local_hour_end",
            "visa",
            "mastercard",
            "default",
            "unknown_key",
        ]
    ),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,10}", fullmatch=True),
)
toml_table = st.sampled_from(
    ["[business]", "[retry]", "[retry.network_caps]", "[other]", "[[retry]]", "[business.x]", ""]
)
toml_line = st.one_of(
    toml_table,
    st.builds(lambda k, v: f"{k} = {v}", toml_key, toml_scalar),
    st.text(max_size=40),
)


@FUZZ
@given(
    lines=st.lists(toml_line, max_size=12),
    keep_defaults=st.booleans(),
    drop=st.sets(st.integers(0, 120), max_size=5),
)
@example(lines=["[business]", 'name = "Caf\u00e9"'], keep_defaults=False, drop=set())
def test_rules_load_raises_only_rules_errors(
    tmp_path_factory: pytest.TempPathFactory, lines: list[str], keep_defaults: bool, drop: set[int]
) -> None:
    base = DEFAULT_RULES.read_text().splitlines() if keep_defaults else []
    base = [line for i, line in enumerate(base) if i not in drop]
    path = tmp_path_factory.mktemp("rules") / "rules.toml"
    path.write_text("\n".join(base + lines) + "\n", encoding="utf-8")
    with contextlib.suppress(RulesError, ConfigError):
        Rules.load(path)


def test_rules_file_in_latin1_is_a_rules_error(tmp_path: Path) -> None:
    """A rules file saved by an editor in Latin-1 ("Café") - the startup error must name it."""
    path = tmp_path / "rules.toml"
    path.write_bytes('[business]\nname = "Caf\u00e9"\n'.encode("latin-1"))
    with pytest.raises(RulesError):
        Rules.load(path)


# ---- the webhook endpoint -------------------------------------------------------------------


def count_events(rt: Runtime) -> int:
    with rt.db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(StripeEvent)) or 0)


latin1_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=120,
)


def _not_an_event(body: bytes) -> bool:
    try:
        inbox.parse_event(body)
    except ValueError:
        return True
    return False


broken_events = st.builds(
    lambda evt, key, value: (
        {**evt, key: value} if value is not _DELETE else {k: v for k, v in evt.items() if k != key}
    ),
    st.just(sp.event("customer.updated", sp.customer("cus_W"), NOW)),
    st.sampled_from(["id", "type", "created", "data"]),
    json_value | st.just(_DELETE),
)


@pytest.fixture
def small_limit_client(runtime: Runtime, tmp_path: Path) -> Any:
    """The same database as `client`, with a 4 KiB body limit so 413 is cheap to reach."""
    settings_ = make_settings(runtime.db.url, tmp_path, webhook_max_bytes=4096)
    rt = Runtime(
        settings=settings_,
        rules=runtime.rules,
        db=runtime.db,
        clock=runtime.clock,
        gateway=runtime.gateway,
        handlers=runtime.handlers,
    )
    app = create_app(runtime=rt)
    app.config["TESTING"] = True
    return app.test_client()


@FUZZ
@given(
    body=st.one_of(
        st.binary(max_size=600),
        json_value.map(lambda v: json.dumps(v).encode()),
        broken_events.map(lambda e: json.dumps(e).encode()),
        st.integers(4097, 9000).map(lambda n: b"{" + b" " * n + b"}"),
    ),
    signed=st.sampled_from(["genuine", "stale", "none", "random"]),
    header=latin1_text,
    content_type=st.sampled_from(
        ["application/json", "text/plain", "", "application/x-www-form-urlencoded"]
    ),
)
@example(body=b"{}", signed="random", header="t=\u00b2,v1=00", content_type="application/json")
def test_webhook_answers_only_400_or_413_and_writes_nothing(
    small_limit_client: Any,
    runtime: Runtime,
    body: bytes,
    signed: str,
    header: str,
    content_type: str,
) -> None:
    assume(_not_an_event(body))
    now = int(runtime.clock.now().timestamp())
    if signed == "genuine":
        header = sp.signature_header(body, WEBHOOK_SECRET, now)
    elif signed == "stale":
        header = sp.signature_header(body, WEBHOOK_SECRET, now - 301)
    request_headers = {"Content-Type": content_type}
    if signed != "none":
        request_headers["Stripe-Signature"] = header
    resp = small_limit_client.post("/webhooks/stripe", data=body, headers=request_headers)
    assert resp.status_code in (400, 413), (resp.status_code, resp.get_data()[:300])
    assert resp.is_json and "error" in resp.json
    assert count_events(runtime) == 0
