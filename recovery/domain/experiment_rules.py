"""The `[[experiments]]` rules format, parsed into `recovery.domain.experiments` types. Pure.

The shared loader (`recovery.rules.load_rules_data`) replaces the `experiments` list whole, so
every item is checked here and each error names its key (`experiments[0].arms[1].channels[0]`).

The cancel flow's older `[[cancel_flow.variants]]` keep working: with two or more variants and no
active cancel-flow experiment, they are the arms of an experiment with fixed routing and no
holdout, keyed `cancel_flow.variants:<experiment_salt>`, each variant an arm with its weight and
offers, and every customer in the very variant `CancelFlowRules.assign_variant` gives them. One
variant is no experiment. Variants and an active cancel-flow experiment together are an error:
the experiment's arms decide the offers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from recovery.domain.cancel_rules import CancelFlowRules
from recovery.domain.experiments import (
    APPLIES_TO,
    HOLDOUT,
    ROUTING_MODES,
    AppliesTo,
    Arm,
    CancelFlowOptions,
    DunningOptions,
    Experiment,
    RoutingMode,
)
from recovery.domain.offers import OfferKind
from recovery.domain.reminders import CHANNELS, SEQUENCES, Channel, ReminderStep
from recovery.domain.retry_policy import RetryRules

# The key is hashed with each customer id and appears in URLs and CSV names: short and plain.
_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")  # as cancel-flow variant names
_EXPERIMENT_KEYS = ("key", "applies_to", "active", "holdout", "routing", "min_share", "arms")
_ARM_KEYS: dict[str, tuple[str, ...]] = {
    "dunning": ("name", "weight", "retry", "channels", "sequences", "first_reminder_delay_hours"),
    "cancel_flow": ("name", "weight", "offers"),
}
VARIANTS_KEY_PREFIX = "cancel_flow.variants:"


class ExperimentRulesError(ValueError):
    """The experiments rules are invalid; the message names the key."""


@dataclass(frozen=True)
class ExperimentRules:
    experiments: tuple[Experiment, ...]  # in file order, ended ones too; variants last

    def active(self, applies_to: AppliesTo) -> Experiment | None:
        """The experiment new customers of this kind are assigned in, if any."""
        return next((e for e in self.experiments if e.active and e.applies_to == applies_to), None)

    def get(self, key: str) -> Experiment | None:
        return next((e for e in self.experiments if e.key == key), None)


# ---- parsing ------------------------------------------------------------------------------------


def _table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ExperimentRulesError(f"{where} must be a table")
    return value


def _number(value: Any) -> float | None:
    """A TOML integer or float as a finite float; None for anything else (booleans too)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        return None
    return number if math.isfinite(number) else None


def _share(table: Mapping[str, Any], key: str, where: str) -> float:
    value = _number(table.get(key))
    if value is None or not 0 <= value < 1:
        raise ExperimentRulesError(f"{where}.{key} must be a share from 0 to below 1, e.g. 0.1")
    return value


def _only(table: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise ExperimentRulesError(f"unknown key in rules file: {where}.{key}")


def _retry_days(value: Any, where: str, retry: RetryRules) -> tuple[int, ...] | None:
    if value == "ours":
        return None
    if not isinstance(value, list) or not value:
        raise ExperimentRulesError(
            f'{where} must be "ours" or a list of days after the case opened, e.g. [3, 5, 7]'
        )
    days: list[int] = []
    for i, day in enumerate(value):
        if isinstance(day, bool) or not isinstance(day, int) or day < 1:
            raise ExperimentRulesError(f"{where}[{i}] must be a whole number of days, 1 or more")
        if days and day <= days[-1]:
            raise ExperimentRulesError(f"{where}[{i}] must come after the day before it")
        if day > retry.window_days:
            raise ExperimentRulesError(
                f"{where}[{i}] is day {day}, after the retry window ends"
                f" (retry.window_days = {retry.window_days})"
            )
        days.append(day)
    # The case's first failed charge counts toward max_attempts (rules.default.toml, [retry]).
    if len(days) > retry.max_attempts - 1:
        raise ExperimentRulesError(
            f"{where} lists {len(days)} retries; retry.max_attempts = {retry.max_attempts}"
            f" allows {retry.max_attempts - 1} after the first failure"
        )
    if retry.retry_owner != "recovery":
        raise ExperimentRulesError(
            f'{where} sets a retry schedule, but retry.retry_owner = "{retry.retry_owner}":'
            " Stripe runs the retries"
        )
    return tuple(days)


def _channels(value: Any, where: str) -> tuple[Channel, ...]:
    if not isinstance(value, list):
        raise ExperimentRulesError(f'{where} must be a list of "email" and/or "sms"')
    channels: list[Channel] = []
    for i, item in enumerate(value):
        channel = next((c for c in CHANNELS if c == item), None)
        if channel is None:
            raise ExperimentRulesError(f'{where}[{i}] must be "email" or "sms"')
        if channel in channels:
            raise ExperimentRulesError(f"{where} names {channel} twice")
        channels.append(channel)
    return tuple(channels)


def _sequences(
    value: Any, where: str, channels: tuple[Channel, ...]
) -> dict[str, tuple[ReminderStep, ...]]:
    table = _table(value, where)
    sequences: dict[str, tuple[ReminderStep, ...]] = {}
    for name, steps in table.items():
        if name not in SEQUENCES:
            raise ExperimentRulesError(f"unknown key in rules file: {where}.{name}")
        if not isinstance(steps, list):
            raise ExperimentRulesError(f"{where}.{name} must be a list of steps")
        parsed = []
        for i, step in enumerate(steps):
            at = f"{where}.{name}[{i}]"
            fields = _table(step, at)
            for key in ("channel", "template"):  # ReminderStep looks these up in sets
                if not isinstance(fields.get(key), str):
                    raise ExperimentRulesError(f"{at}.{key} must be a string")
            try:
                parsed.append(ReminderStep.from_mapping(fields, at))
            except ValueError as exc:
                raise ExperimentRulesError(str(exc)) from exc
            if parsed[-1].channel not in channels:
                raise ExperimentRulesError(
                    f"{at}.channel is {parsed[-1].channel}, which this arm's channels leave out"
                )
        sequences[name] = tuple(parsed)
    return sequences


def _dunning(table: Mapping[str, Any], where: str, retry: RetryRules) -> DunningOptions:
    channels = (
        _channels(table["channels"], f"{where}.channels") if "channels" in table else CHANNELS
    )
    delay = table.get("first_reminder_delay_hours", 0)
    limit = retry.window_days * 24
    if isinstance(delay, bool) or not isinstance(delay, int) or not 0 <= delay < limit:
        raise ExperimentRulesError(
            f"{where}.first_reminder_delay_hours must be whole hours from 0 to below {limit}"
            " (the retry window)"
        )
    return DunningOptions(
        retry_days=_retry_days(table.get("retry", "ours"), f"{where}.retry", retry),
        channels=channels,
        sequences=_sequences(table.get("sequences", {}), f"{where}.sequences", channels),
        first_reminder_delay_hours=delay,
    )


def _cancel_flow(
    table: Mapping[str, Any], where: str, flow: CancelFlowRules, active: bool
) -> CancelFlowOptions:
    if "offers" not in table:
        return CancelFlowOptions(None)
    value = table["offers"]
    if not isinstance(value, list):
        raise ExperimentRulesError(f"{where}.offers must be a list of offers (empty: none)")
    offers: list[OfferKind] = []
    for i, item in enumerate(value):
        kind = next((k for k in OfferKind if k.value == item), None)
        if kind is None:
            raise ExperimentRulesError(
                f"{where}.offers[{i}] must be one of the [offers.*] tables:"
                f" {', '.join(k.value for k in OfferKind)}"
            )
        if kind in offers:
            raise ExperimentRulesError(f"{where}.offers names {kind.value} twice")
        # An ended experiment may name an offer switched off since; a running one would
        # silently show less than its rules say.
        if active and not flow.offers.get(kind).enabled:
            raise ExperimentRulesError(
                f"{where}.offers[{i}] is {kind.value}, but offers.{kind.value}.enabled = false"
            )
        offers.append(kind)
    return CancelFlowOptions(frozenset(offers))


def _arm(
    item: Any,
    where: str,
    applies_to: AppliesTo,
    routing: RoutingMode,
    active: bool,
    flow: CancelFlowRules,
    retry: RetryRules,
) -> Arm:
    table = _table(item, where)
    other = "cancel_flow" if applies_to == "dunning" else "dunning"
    for key in table:
        if key in _ARM_KEYS[other] and key not in _ARM_KEYS[applies_to]:
            raise ExperimentRulesError(
                f"{where}.{key} is for {other} experiments; this one applies to {applies_to}"
            )
    _only(table, _ARM_KEYS[applies_to], where)
    name = table.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ExperimentRulesError(
            f"{where}.name must be lowercase letters, digits and _ (at most 40)"
        )
    if name == HOLDOUT:
        raise ExperimentRulesError(f'{where}.name cannot be "{HOLDOUT}": the holdout has it')
    weight = 1.0
    if "weight" in table:
        if routing == "thompson":
            raise ExperimentRulesError(
                f'{where}.weight applies to routing = "fixed"; with thompson the outcomes decide'
            )
        number = _number(table["weight"])
        if number is None or not 0 < number <= 1_000_000:
            raise ExperimentRulesError(f"{where}.weight must be a number above 0")
        weight = number
    options: DunningOptions | CancelFlowOptions = (
        _dunning(table, where, retry)
        if applies_to == "dunning"
        else _cancel_flow(table, where, flow, active)
    )
    return Arm(name=name, weight=weight, options=options)


def _experiment(item: Any, where: str, flow: CancelFlowRules, retry: RetryRules) -> Experiment:
    table = _table(item, where)
    applies_to = next((a for a in APPLIES_TO if a == table.get("applies_to")), None)
    if applies_to is None:
        raise ExperimentRulesError(f'{where}.applies_to must be "dunning" or "cancel_flow"')
    _only(table, _EXPERIMENT_KEYS, where)
    key = table.get("key")
    if not isinstance(key, str) or not _KEY.match(key):
        raise ExperimentRulesError(
            f"{where}.key must be lowercase letters, digits, - and _ (at most 40)"
        )
    active = table.get("active", True)
    if not isinstance(active, bool):
        raise ExperimentRulesError(f"{where}.active must be true or false")
    if "holdout" not in table:
        raise ExperimentRulesError(
            f"{where}.holdout is required: the share of customers left alone (0 for none)"
        )
    holdout = _share(table, "holdout", where)
    routing = next((r for r in ROUTING_MODES if r == table.get("routing", "fixed")), None)
    if routing is None:
        raise ExperimentRulesError(f'{where}.routing must be "fixed" or "thompson"')
    raw_arms = table.get("arms")
    if not isinstance(raw_arms, list) or not raw_arms:
        raise ExperimentRulesError(
            f"{where}.arms must list at least one arm (an [[experiments.arms]] table each)"
        )
    arms = tuple(
        _arm(arm, f"{where}.arms[{i}]", applies_to, routing, active, flow, retry)
        for i, arm in enumerate(raw_arms)
    )
    names = [a.name for a in arms]
    duplicate = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if duplicate is not None:
        raise ExperimentRulesError(f"{where}.arms has two arms named {duplicate}")
    if len(arms) < 2 and (holdout == 0 or routing == "thompson"):
        raise ExperimentRulesError(
            f"{where}.arms: one arm needs a holdout to compare with, and thompson needs two arms"
        )
    min_share = 0.0
    if routing == "thompson":
        if "min_share" not in table:
            raise ExperimentRulesError(
                f'{where}.min_share is required with routing = "thompson": every arm keeps it'
            )
        min_share = _share(table, "min_share", where)
        if min_share <= 0 or min_share * len(arms) > 1 - holdout + 1e-9:
            raise ExperimentRulesError(
                f"{where}.min_share must be above 0, and {len(arms)} arms times it at most"
                f" 1 - holdout = {1 - holdout:g}"
            )
    elif "min_share" in table:
        raise ExperimentRulesError(f'{where}.min_share applies to routing = "thompson" only')
    return Experiment(
        key=key,
        applies_to=applies_to,
        arms=arms,
        holdout=holdout,
        routing=routing,
        min_share=min_share,
        active=active,
    )


def _from_variants(flow: CancelFlowRules) -> Experiment:
    return Experiment(
        key=f"{VARIANTS_KEY_PREFIX}{flow.experiment_salt}",
        applies_to="cancel_flow",
        arms=tuple(
            Arm(v.name, float(v.weight), CancelFlowOptions(v.offers)) for v in flow.variants
        ),
        holdout=0.0,
        variant_salt=flow.experiment_salt,
    )


def parse_experiments(
    data: Mapping[str, Any], flow: CancelFlowRules, retry: RetryRules
) -> ExperimentRules:
    """`data` is the whole rules mapping; `flow` and `retry` its parsed [cancel_flow] and
    [retry], which arms are checked against."""
    raw = data.get("experiments", [])
    if not isinstance(raw, list):
        raise ExperimentRulesError("experiments must be a list of [[experiments]] tables")
    experiments = [
        _experiment(item, f"experiments[{i}]", flow, retry) for i, item in enumerate(raw)
    ]
    for i, experiment in enumerate(experiments):
        for j, earlier in enumerate(experiments[:i]):
            if earlier.key == experiment.key:
                raise ExperimentRulesError(
                    f"experiments[{i}].key {experiment.key!r} is experiments[{j}]'s too:"
                    " results are kept per key, so a new experiment needs a new key"
                )
            if experiment.active and earlier.active and earlier.applies_to == experiment.applies_to:
                raise ExperimentRulesError(
                    f"experiments[{i}].active: experiments[{j}] is already active for"
                    f" {experiment.applies_to}; set active = false on the one that ended"
                )
    if len(flow.variants) > 1:
        if any(e.active and e.applies_to == "cancel_flow" for e in experiments):
            raise ExperimentRulesError(
                "cancel_flow.variants lists several variants while a cancel_flow experiment is"
                " active: make the variants its arms, or end the experiment"
            )
        experiments.append(_from_variants(flow))
    return ExperimentRules(tuple(experiments))
