"""The cancel flow's business rules (`[cancel_flow]` and `[offers.*]` in the rules TOML). Pure.

The shared loader (`recovery.rules.load_rules_data`) lays a business's file over the defaults
key by key and rejects unknown keys in tables; lists (reasons, variants, price maps) are replaced
whole, so their items are checked here, each error naming the key.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from recovery.domain.cancel_terms import UNPAID_INVOICE_CHOICES, UnpaidInvoice
from recovery.domain.offers import CADENCES, OfferKind, OfferRule, OfferRules, PriceSwitch

# Stripe's `cancellation_details[feedback]` values (docs/stripe.md#cancelling-a-subscription).
FEEDBACK = frozenset(
    {
        "customer_service",
        "low_quality",
        "missing_features",
        "other",
        "switched_service",
        "too_complex",
        "too_expensive",
        "unused",
    }
)
# Reasons whose labels ship translated; a business's own reasons bring their label.
KNOWN_REASONS = (
    "too_expensive",
    "not_using",
    "missing_feature",
    "switching",
    "technical",
    "temporary",
    "other",
)
PAUSE_BEHAVIORS = frozenset({"void", "keep_as_draft", "mark_uncollectible"})
PRORATION_BEHAVIORS = frozenset({"create_prorations", "none", "always_invoice"})
_ID = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class CancelRulesError(ValueError):
    """The cancel-flow rules are invalid; the message names the key."""


@dataclass(frozen=True)
class Reason:
    id: str
    feedback: str
    offers: tuple[OfferKind, ...]
    label: str | None = None  # required for reasons not in KNOWN_REASONS
    labels: Mapping[str, str] | None = None  # locale -> label, for a business's own reasons

    def custom_label(self, locale: str) -> str | None:
        labels = self.labels or {}
        return labels.get(locale) or labels.get(locale.split("_")[0]) or self.label


@dataclass(frozen=True)
class Variant:
    """A named offer set: sessions are split between variants by weight (experiments)."""

    name: str
    weight: int
    offers: frozenset[OfferKind]


@dataclass(frozen=True)
class CancelFlowRules:
    session_minutes: int
    link_max_age_minutes: int
    cancel_at_period_end: bool
    return_url_hosts: tuple[str, ...]
    experiment_salt: str
    comment_max_chars: int
    reasons: tuple[Reason, ...]
    variants: tuple[Variant, ...]
    offers: OfferRules
    # What a cancellation does to an unpaid invoice (recovery.domain.cancel_terms).
    unpaid_invoice: UnpaidInvoice = "void"

    def reason(self, reason_id: str | None) -> Reason | None:
        return next((r for r in self.reasons if r.id == reason_id), None)

    def variant(self, name: str | None) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)

    def assign_variant(self, customer_id: str) -> Variant:
        """Deterministic per customer (and salt): a customer stays in one arm of an experiment."""
        total = sum(v.weight for v in self.variants)
        digest = hashlib.sha256(f"{self.experiment_salt}:{customer_id}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") % total
        for variant in self.variants:
            if point < variant.weight:
                return variant
            point -= variant.weight
        return self.variants[-1]  # unreachable: weights sum to total


# ---- parsing ------------------------------------------------------------------------------------


def _table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise CancelRulesError(f"{where} must be a table")
    return value


def _only(table: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise CancelRulesError(f"unknown key in rules file: {where}.{key}")


def _int(table: Mapping[str, Any], key: str, where: str, low: int, high: int) -> int:
    value = table.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CancelRulesError(f"{where}.{key} must be an integer from {low} to {high}")
    return value


def _str(table: Mapping[str, Any], key: str, where: str, *, empty: bool = False) -> str:
    value = table.get(key)
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise CancelRulesError(f"{where}.{key} must be a {'' if empty else 'non-empty '}string")
    return value


def _bool(table: Mapping[str, Any], key: str, where: str) -> bool:
    value = table.get(key)
    if not isinstance(value, bool):
        raise CancelRulesError(f"{where}.{key} must be true or false")
    return value


def _choice(table: Mapping[str, Any], key: str, where: str, allowed: frozenset[str]) -> str:
    value = table.get(key)
    if value not in allowed:
        raise CancelRulesError(f"{where}.{key} must be one of {', '.join(sorted(allowed))}")
    return str(value)


def _list(table: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = table.get(key)
    if not isinstance(value, list):
        raise CancelRulesError(f"{where}.{key} must be a list")
    return value


def _offer_kinds(table: Mapping[str, Any], key: str, where: str) -> tuple[OfferKind, ...]:
    kinds = []
    for i, value in enumerate(_list(table, key, where)):
        if value not in {k.value for k in OfferKind}:
            raise CancelRulesError(
                f"{where}.{key}[{i}] must be one of {', '.join(k.value for k in OfferKind)}"
            )
        if OfferKind(value) in kinds:
            raise CancelRulesError(f"{where}.{key} names {value} twice")
        kinds.append(OfferKind(value))
    return tuple(kinds)


def _reason(item: Any, where: str) -> Reason:
    table = _table(item, where)
    _only(table, ("id", "feedback", "offers", "label", "labels"), where)
    reason_id = _str(table, "id", where)
    if not _ID.match(reason_id):
        raise CancelRulesError(f"{where}.id must be lowercase letters, digits and _")
    label = table.get("label")
    if label is not None and (not isinstance(label, str) or not label.strip()):
        raise CancelRulesError(f"{where}.label must be a non-empty string")
    if label is None and reason_id not in KNOWN_REASONS:
        raise CancelRulesError(f"{where}.label is required for your own reason {reason_id!r}")
    labels = table.get("labels", {})
    if not isinstance(labels, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in labels.items()
    ):
        raise CancelRulesError(f"{where}.labels must map locales to non-empty strings")
    return Reason(
        id=reason_id,
        feedback=_choice(table, "feedback", where, FEEDBACK),
        offers=_offer_kinds(table, "offers", where),
        label=label,
        labels=dict(labels) or None,
    )


def _variant(item: Any, where: str) -> Variant:
    table = _table(item, where)
    _only(table, ("name", "weight", "offers"), where)
    name = _str(table, "name", where)
    if not _ID.match(name):
        raise CancelRulesError(f"{where}.name must be lowercase letters, digits and _")
    return Variant(
        name=name,
        weight=_int(table, "weight", where, 1, 1_000_000),
        offers=frozenset(_offer_kinds(table, "offers", where)),
    )


def _switches(table: Mapping[str, Any], where: str) -> tuple[PriceSwitch, ...]:
    switches = []
    for i, item in enumerate(_list(table, "prices", where)):
        at = f"{where}.prices[{i}]"
        entry = _table(item, at)
        _only(entry, ("from", "to", "to_unit_amount"), at)
        switches.append(
            PriceSwitch(
                from_price=_str(entry, "from", at),
                to_price=_str(entry, "to", at),
                to_unit_amount=_int(entry, "to_unit_amount", at, 0, 10**10),
            )
        )
    froms = [s.from_price for s in switches]
    if len(set(froms)) != len(froms):
        raise CancelRulesError(f"{where}.prices maps one price twice")
    return tuple(switches)


_COMMON = ("enabled", "min_tenure_days", "cadences", "cooldown_months")
_OFFER_KEYS = {
    OfferKind.PAUSE: (*_COMMON, "months", "behavior", "reminder_days_before"),
    OfferKind.DOWNGRADE: (*_COMMON, "prices", "proration_behavior"),
    OfferKind.LONGER_TERM: (*_COMMON, "prices", "proration_behavior"),
    OfferKind.DISCOUNT: (*_COMMON, "coupon", "percent_off", "amount_off", "duration_months"),
}


def _offer(kind: OfferKind, item: Any) -> OfferRule:
    where = f"offers.{kind.value}"
    table = _table(item, where)
    _only(table, _OFFER_KEYS[kind], where)
    cadences = tuple(_list(table, "cadences", where))
    for i, value in enumerate(cadences):
        if value not in CADENCES:
            raise CancelRulesError(f"{where}.cadences[{i}] must be one of {', '.join(CADENCES)}")
    common: dict[str, Any] = {
        "kind": kind,
        "enabled": _bool(table, "enabled", where),
        "min_tenure_days": _int(table, "min_tenure_days", where, 0, 3650),
        "cadences": cadences,
        "cooldown_months": _int(table, "cooldown_months", where, 0, 120),
    }
    if kind == OfferKind.PAUSE:
        months = _list(table, "months", where)
        if not months or any(isinstance(m, bool) or m not in (1, 2, 3) for m in months):
            raise CancelRulesError(f"{where}.months must list 1, 2 and/or 3")
        return OfferRule(
            **common,
            pause_months=tuple(sorted(set(months))),
            pause_behavior=_choice(table, "behavior", where, PAUSE_BEHAVIORS),
            reminder_days_before=_int(table, "reminder_days_before", where, 1, 14),
        )
    if kind in (OfferKind.DOWNGRADE, OfferKind.LONGER_TERM):
        return OfferRule(
            **common,
            switches=_switches(table, where),
            proration_behavior=_choice(table, "proration_behavior", where, PRORATION_BEHAVIORS),
        )
    percent, amount = table.get("percent_off"), table.get("amount_off")
    if percent == 0:
        percent = None
    if amount == 0:
        amount = None
    if percent is not None and (
        isinstance(percent, bool) or not isinstance(percent, int | float) or not 0 < percent <= 100
    ):
        raise CancelRulesError(f"{where}.percent_off must be a number above 0, at most 100")
    if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int)):
        raise CancelRulesError(f"{where}.amount_off must be an integer (minor currency units)")
    if percent is not None and amount is not None:
        raise CancelRulesError(f"{where}: set percent_off or amount_off, not both")
    return OfferRule(
        **common,
        coupon=_str(table, "coupon", where, empty=True),
        percent_off=float(percent) if percent is not None else None,
        amount_off=amount,
        duration_months=_int(table, "duration_months", where, 1, 36),
    )


_FLOW_KEYS = (
    "session_minutes",
    "link_max_age_minutes",
    "cancel_at",
    "return_url_hosts",
    "experiment_salt",
    "comment_max_chars",
    "reasons",
    "variants",
    "unpaid_invoice",
)


def parse_cancel_flow_rules(data: Mapping[str, Any]) -> CancelFlowRules:
    """`data` is the whole rules mapping (defaults with the business's file laid over)."""
    flow = _table(data.get("cancel_flow"), "cancel_flow")
    _only(flow, _FLOW_KEYS, "cancel_flow")
    offers_table = _table(data.get("offers"), "offers")
    _only(offers_table, [k.value for k in OfferKind], "offers")
    offers = OfferRules(tuple(_offer(kind, offers_table.get(kind.value)) for kind in OfferKind))
    reasons = tuple(
        _reason(item, f"cancel_flow.reasons[{i}]")
        for i, item in enumerate(_list(flow, "reasons", "cancel_flow"))
    )
    if not reasons:
        raise CancelRulesError("cancel_flow.reasons must list at least one reason")
    if len({r.id for r in reasons}) != len(reasons):
        raise CancelRulesError("cancel_flow.reasons has two reasons with one id")
    variants = tuple(
        _variant(item, f"cancel_flow.variants[{i}]")
        for i, item in enumerate(_list(flow, "variants", "cancel_flow"))
    )
    if not variants:
        raise CancelRulesError("cancel_flow.variants must list at least one variant")
    if len({v.name for v in variants}) != len(variants):
        raise CancelRulesError("cancel_flow.variants has two variants with one name")
    hosts = _list(flow, "return_url_hosts", "cancel_flow")
    if not all(isinstance(h, str) and h.strip() for h in hosts):
        raise CancelRulesError("cancel_flow.return_url_hosts must list host names")
    when = _choice(flow, "cancel_at", "cancel_flow", frozenset({"period_end", "immediately"}))
    unpaid: UnpaidInvoice = "void"
    if "unpaid_invoice" in flow:  # a rules file from before this key keeps the default
        choice = _choice(flow, "unpaid_invoice", "cancel_flow", frozenset(UNPAID_INVOICE_CHOICES))
        unpaid = (
            "leave_open" if choice == "leave_open" else "collect" if choice == "collect" else "void"
        )
    return CancelFlowRules(
        session_minutes=_int(flow, "session_minutes", "cancel_flow", 5, 24 * 60),
        link_max_age_minutes=_int(flow, "link_max_age_minutes", "cancel_flow", 1, 30 * 24 * 60),
        cancel_at_period_end=when == "period_end",
        return_url_hosts=tuple(h.strip().lower() for h in hosts),
        experiment_salt=_str(flow, "experiment_salt", "cancel_flow", empty=True),
        # Stripe keeps at most 5,000 characters of cancellation_details[comment].
        comment_max_chars=_int(flow, "comment_max_chars", "cancel_flow", 1, 5000),
        reasons=reasons,
        variants=variants,
        offers=offers,
        unpaid_invoice=unpaid,
    )
