"""The business rules: the packaged defaults (`rules.default.toml`) with the business's own TOML
file laid over them key by key. An unknown key is an error that names it; each section is
parsed into the domain's own types, once per loaded file."""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from recovery.config import ConfigError
from recovery.domain.cancel_rules import CancelFlowRules, CancelRulesError, parse_cancel_flow_rules
from recovery.domain.experiment_rules import (
    ExperimentRules,
    ExperimentRulesError,
    parse_experiments,
)
from recovery.domain.outreach import (
    OutreachRulesError,
    TermOfferRules,
    WinBackRules,
    parse_term_offers,
    parse_win_back,
)
from recovery.domain.reminders import ReminderRules
from recovery.domain.retry_policy import NetworkCaps, RetryRules
from recovery.domain.retry_policy import RulesError as RetryRulesError

DEFAULT_RULES_PATH = Path(__file__).with_name("rules.default.toml")


class RulesError(ConfigError):
    """The rules file is invalid; the message names the key."""


def _merge(base: dict[str, Any], override: Mapping[str, Any], path: str = "") -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        where = f"{path}.{key}" if path else key
        if key not in base:
            raise RulesError(f"unknown key in rules file: {where}")
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise RulesError(f"{where} must be a table")
            merged[key] = _merge(base[key], value, where)
        else:
            merged[key] = value
    return merged


def load_rules_data(path: Path | None) -> dict[str, Any]:
    """The default rules, with the business's file (if any) laid over them key by key."""
    with DEFAULT_RULES_PATH.open("rb") as fh:
        data = tomllib.load(fh)
    if path is None:
        return data
    try:
        with path.open("rb") as fh:
            override = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise RulesError(f"RECOVERY_RULES points at {path}, which does not exist") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RulesError(f"{path} is not valid TOML (UTF-8): {exc}") from exc
    return _merge(data, override)


# ---- [retry] ------------------------------------------------------------------------------------
# A bad value raises the domain's RetryRulesError (a ValueError naming the key, as
# `RetryRules.__post_init__` does for a value out of range); `Rules.load` reports both as a
# RulesError.


def parse_retry_rules(data: Mapping[str, Any]) -> RetryRules:
    """The domain's rules from the parsed ``[retry]`` table; a missing key keeps its default.
    Types are checked here; the values' ranges by `RetryRules` itself."""
    if not isinstance(data, Mapping):
        raise RetryRulesError("retry: expected a table")
    parsers = _parsers()
    kwargs = {}
    for key, value in data.items():
        if key not in parsers:
            raise RetryRulesError(f"retry.{key}: unknown key (known: {', '.join(parsers)})")
        kwargs[key] = parsers[key](f"retry.{key}", value)
    return RetryRules(**kwargs)


def _parse_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RetryRulesError(f"{key}: expected an integer, got {value!r}")
    return value


def _parse_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise RetryRulesError(f"{key}: expected true or false, got {value!r}")
    return value


def _parse_str(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise RetryRulesError(f"{key}: expected a string, got {value!r}")
    return value


def _parse_list(item: Callable[[str, Any], Any]) -> Callable[[str, Any], tuple[Any, ...]]:
    def parse(key: str, value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple):
            raise RetryRulesError(f"{key}: expected a list, got {value!r}")
        return tuple(item(f"{key}[{i}]", v) for i, v in enumerate(value))

    return parse


def _parse_caps(key: str, value: Any) -> NetworkCaps:
    if not isinstance(value, Mapping):
        raise RetryRulesError(f"{key}: expected a table, got {value!r}")
    known = [f.name for f in fields(NetworkCaps)]
    for name in value:
        if name not in known:
            raise RetryRulesError(f"{key}.{name}: unknown key (known: {', '.join(known)})")
    return NetworkCaps(**{name: _parse_int(f"{key}.{name}", v) for name, v in value.items()})


def _parsers() -> dict[str, Callable[[str, Any], Any]]:
    by_type: dict[str, Callable[[str, Any], Any]] = {
        "int": _parse_int,
        "bool": _parse_bool,
        "NetworkCaps": _parse_caps,
        "tuple[int, ...]": _parse_list(_parse_int),
        "tuple[str, ...]": _parse_list(_parse_str),
        "RetryOwner": _parse_str,
        "EndOfDunning": _parse_str,
    }
    return {f.name: by_type[str(f.type)] for f in fields(RetryRules)}


@dataclass(frozen=True)
class BusinessRules:
    name: str
    sender_name: str
    sender_email: str
    reply_to: str
    timezone: str = "UTC"  # an IANA zone: the dashboard shows times in it, labelled

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> BusinessRules:
        values = {}
        for key in ("name", "sender_name", "sender_email", "reply_to"):
            value = data.get(key)
            if not isinstance(value, str) or not value.strip():
                raise RulesError(f"business.{key} must be a non-empty string")
            values[key] = value
        zone = data.get("timezone", "UTC")
        try:
            ZoneInfo(zone)
        except (TypeError, ValueError, ZoneInfoNotFoundError):
            raise RulesError(
                f"business.timezone must be an IANA time zone such as Europe/Berlin, not {zone!r}"
            ) from None
        return cls(**values, timezone=zone)


@dataclass(frozen=True)
class Rules:
    business: BusinessRules
    retry: RetryRules
    data: Mapping[str, Any]

    @classmethod
    def load(cls, path: Path | None) -> Rules:
        data = load_rules_data(path)
        try:
            retry = parse_retry_rules(data.get("retry", {}))
        except ValueError as exc:
            raise RulesError(str(exc)) from exc
        return cls(business=BusinessRules.from_mapping(data["business"]), retry=retry, data=data)

    @cached_property
    def reminders(self) -> ReminderRules:
        """The [reminders] table: sequences per decline, channels, quiet hours, SMS consent."""
        return ReminderRules.from_mapping(self.data.get("reminders", {}))

    @cached_property
    def cancel_flow(self) -> CancelFlowRules:
        """[cancel_flow] and [offers.*]: survey reasons, variants, offers."""
        try:
            return parse_cancel_flow_rules(self.data)
        except CancelRulesError as exc:
            raise RulesError(str(exc)) from exc

    @cached_property
    def experiments(self) -> ExperimentRules:
        """[[experiments]] (and [[cancel_flow.variants]], which are one): arms, holdouts,
        routing. Arms are checked against [retry] and [offers.*]."""
        try:
            return parse_experiments(self.data, self.cancel_flow, self.retry)
        except ExperimentRulesError as exc:
            raise RulesError(str(exc)) from exc

    @cached_property
    def term_offers(self) -> TermOfferRules:
        """[term_offers]: monthly -> annual offers in a subscription's first months."""
        try:
            return parse_term_offers(self.data.get("term_offers", {}))
        except OutreachRulesError as exc:
            raise RulesError(str(exc)) from exc

    @cached_property
    def win_back(self) -> WinBackRules:
        """[win_back]: notes after a subscription ended, with consent, until they come back."""
        try:
            return parse_win_back(self.data.get("win_back", {}))
        except OutreachRulesError as exc:
            raise RulesError(str(exc)) from exc
