"""Reading one field of a Stripe object: an id or the expanded object, numbers and timestamps
within what the mirror's columns hold, strings cut to their column, card brands in one
vocabulary. The underscored readers serve the other modules of this package."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Obj = Mapping[str, Any]


class MappingError(ValueError):
    """The payload is not a Stripe object of the expected kind."""


def ref(value: Any) -> str | None:
    """An id, whether Stripe sent the id or the expanded object."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        inner = value.get("id")
        return inner if isinstance(inner, str) and inner else None
    return None


def _obj(value: Any) -> Obj:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    """A list field (`items.data`, `payments.data`, ...), or nothing if it is not a list."""
    return value if isinstance(value, list) else []


# The mirror keeps amounts and timestamps in 64-bit columns (an invoice in a zero-decimal
# currency such as VND passes 2**31 minor units at about USD 85,000; a subscription may end after
# 2038) and small counts (months, quantities, attempts) in 32-bit ones. A value outside is
# refused here, cleanly, rather than by the database.
MAX_INT32 = 2**31 - 1
MAX_INT64 = 2**63 - 1
MAX_TIMESTAMP = 253_402_300_799  # 9999-12-31T23:59:59Z, the last second a datetime can hold


def _bounded(value: Any, what: str, limit: int = MAX_INT32) -> int | None:
    number = _int(value)
    if number is not None and not -limit <= number <= limit:
        raise MappingError(f"{what} out of range: {number}")
    return number


def _amount(value: Any, what: str) -> int | None:
    return _bounded(value, what, MAX_INT64)


def _time(value: Any) -> int | None:
    ts = _bounded(value, "timestamp", MAX_TIMESTAMP)
    if ts is not None and ts < 0:
        raise MappingError(f"timestamp out of range: {ts}")
    return ts


def _str(value: Any, limit: int = 255) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    return str(value)[:limit]


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return None


def _bool(value: Any) -> bool:
    return value is True


def _require_id(obj: Obj, kind: str) -> str:
    oid = obj.get("id")
    if not isinstance(oid, str) or not oid:
        raise MappingError(f"{kind} object has no id")
    return oid


_BRANDS = {
    "american express": "amex",
    "amex": "amex",
    "mastercard": "mastercard",
    "diners club": "diners",
    "diners": "diners",
    "discover": "discover",
    "jcb": "jcb",
    "unionpay": "unionpay",
    "visa": "visa",
    "cartes_bancaires": "cartes_bancaires",
    "eftpos_au": "eftpos_au",
    "interac": "interac",
}


def normalize_brand(value: Any) -> str | None:
    """Legacy Card objects say "Visa", "MasterCard", "American Express"; PaymentMethods say
    "visa", "mastercard", "amex". One vocabulary, the PaymentMethod one."""
    text = _str(value)
    if text is None:
        return None
    lowered = text.strip().lower()
    return _BRANDS.get(lowered, lowered.replace(" ", "_"))


def _metadata(value: Any) -> Mapping[str, str]:
    return {str(k): str(v) for k, v in _obj(value).items() if v is not None}
