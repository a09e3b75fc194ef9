"""The business rules: the packaged defaults (`rules.default.toml`) with the business's own TOML
file laid over them key by key. An unknown key is an error that names it; each section is
parsed into the domain's own types, once per loaded file."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
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
from recovery.domain.reminders import ReminderRules
from recovery.domain.retry_policy import RetryRules

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
            retry = RetryRules.from_mapping(data.get("retry", {}))
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
