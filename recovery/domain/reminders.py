"""Reminder sequences: which message goes out on which day, per sequence and channel. Pure.

A sequence starts when a case opens (or its decline category changes, or an expiring card is
found) and ends at a deadline: the end of the retry window for a case, the renewal for an
expiring card. Each step is placed either `day` days after the start or `days_before_end` days
before the deadline, at `send_hour` in the customer's time zone (day 0 goes out at once).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from recovery.domain.business_days import BusinessCalendar
from recovery.domain.sms import QuietHours

Channel = Literal["email", "sms"]
CHANNELS: tuple[Channel, ...] = ("email", "sms")
SEQUENCES = ("soft", "new_card", "authentication", "expiring")
TEMPLATES = frozenset(
    {
        "soft_decline",
        "card_replace",
        "authentication_needed",
        "card_expiring",
        "final_notice",
        "recovered",
        "subscription_ended",
    }
)


@dataclass(frozen=True)
class ReminderStep:
    channel: Channel
    template: str
    day: int | None = None
    days_before_end: int | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str) -> ReminderStep:
        channel = data.get("channel")
        if channel not in CHANNELS:
            raise ValueError(f"{where}.channel must be 'email' or 'sms'")
        template = data.get("template")
        if template not in TEMPLATES:
            raise ValueError(f"{where}.template must be one of {', '.join(sorted(TEMPLATES))}")
        day, before = data.get("day"), data.get("days_before_end")
        if (day is None) == (before is None):
            raise ValueError(f"{where} needs exactly one of day or days_before_end")
        for name, value in (("day", day), ("days_before_end", before)):
            if value is not None and (not isinstance(value, int) or not 0 <= value <= 120):
                raise ValueError(f"{where}.{name} must be a whole number of days, 0-120")
        unknown = set(data) - {"channel", "template", "day", "days_before_end"}
        if unknown:
            raise ValueError(f"unknown key in rules file: {where}.{sorted(unknown)[0]}")
        return cls(channel, str(template), day, before)


@dataclass(frozen=True)
class ReminderRules:
    sequences: Mapping[str, tuple[ReminderStep, ...]]
    enabled: bool = True
    send_hour: int = 10
    sms: QuietHours = field(default_factory=QuietHours)
    max_sms_segments: int = 2
    sms_consent_metadata_key: str = "sms_consent"
    confirmations: bool = True

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ReminderRules:
        raw = data.get("sequences", {})
        sequences: dict[str, tuple[ReminderStep, ...]] = {}
        for name in SEQUENCES:
            steps = raw.get(name, [])
            if not isinstance(steps, list):
                raise ValueError(f"reminders.sequences.{name} must be a list of steps")
            sequences[name] = tuple(
                ReminderStep.from_mapping(s, f"reminders.sequences.{name}[{i}]")
                for i, s in enumerate(steps)
            )
        hour = data.get("send_hour", 10)
        start, end = data.get("sms_local_start", 9), data.get("sms_local_end", 20)
        for name, value in (
            ("send_hour", hour),
            ("sms_local_start", start),
            ("sms_local_end", end),
        ):
            if not isinstance(value, int) or not 0 <= value <= 24:
                raise ValueError(f"reminders.{name} must be an hour, 0-24")
        segs = data.get("max_sms_segments", 2)
        if segs not in (1, 2):
            raise ValueError("reminders.max_sms_segments must be 1 or 2")
        return cls(
            sequences=sequences,
            enabled=bool(data.get("enabled", True)),
            send_hour=hour,
            sms=QuietHours(time(start % 24), time(23, 59) if end == 24 else time(end)),
            max_sms_segments=segs,
            sms_consent_metadata_key=str(data.get("sms_consent_metadata_key", "sms_consent")),
            confirmations=bool(data.get("confirmations", True)),
        )


def sequence_for(awaiting: str | None, decline_category: str | None) -> str:
    """Which sequence fits a case now: authentication, a new card, or the soft reminders (the
    issuer may still approve, or only the customer's bank can help)."""
    if awaiting == "authentication":
        return "authentication"
    if awaiting == "new_card" or decline_category in ("needs_new_card", "never_retry"):
        return "new_card"
    return "soft"


@dataclass(frozen=True)
class PlannedReminder:
    index: int  # the step's position in its sequence: part of the dedupe key
    channel: Channel
    template: str
    at: datetime


def _local_at(day: datetime, hour: int, tz: ZoneInfo) -> datetime:
    local = day.astimezone(tz)
    return datetime.combine(local.date(), time(min(hour, 23)), tz).astimezone(day.tzinfo)


def _business_day(
    at: datetime,
    started_at: datetime,
    deadline: datetime,
    tz: ZoneInfo,
    cal: BusinessCalendar,
    *,
    earlier_first: bool = False,
) -> datetime:
    """A planned reminder moved off the customer's weekend or public holiday: to the next
    business day at the same hour, or - if that is not before the deadline - the business day
    before (never before the start). A step counted back from the deadline (a final notice)
    tries the day before first: moved later it would warn of an end that is already there.
    Unchanged when no business day fits."""
    local = at.astimezone(tz)
    if cal.is_open(local.date()):
        return at
    hour = local.time()
    later = datetime.combine(cal.open_on_or_after(local.date()), hour, tz).astimezone(at.tzinfo)
    earlier_day = cal.open_on_or_before(local.date())
    earlier = datetime.combine(earlier_day, hour, tz).astimezone(at.tzinfo)
    candidates = (earlier, later) if earlier_first else (later, earlier)
    for candidate in candidates:
        if started_at <= candidate < deadline:
            return candidate
    return at


def plan(
    steps: Sequence[ReminderStep],
    *,
    started_at: datetime,
    deadline: datetime,
    zone: str,
    send_hour: int,
    calendar: BusinessCalendar | None = None,
) -> list[PlannedReminder]:
    """When each step goes out. Steps that would fall after the deadline, or before the start
    (a final notice for a window that is nearly over), are dropped; the result is in time
    order. With a `calendar`, steps after day 0 avoid the customer's weekends and public
    holidays as retries do (day 0 answers the failure at once)."""
    tz = ZoneInfo(zone)
    planned = []
    for index, step in enumerate(steps):
        if step.day is not None:
            if step.day == 0:
                at = started_at
            else:
                at = _local_at(started_at + timedelta(days=step.day), send_hour, tz)
        else:
            assert step.days_before_end is not None
            at = _local_at(deadline - timedelta(days=step.days_before_end), send_hour, tz)
        if calendar is not None and at != started_at:
            backwards = step.days_before_end is not None
            at = _business_day(at, started_at, deadline, tz, calendar, earlier_first=backwards)
        if at < started_at or at > deadline:
            continue
        planned.append(PlannedReminder(index, step.channel, step.template, at))
    return sorted(planned, key=lambda p: (p.at, p.index))


def next_day_at(at: datetime, zone: str, send_hour: int) -> datetime:
    """The customer's next local day at send_hour: where a reminder goes when its day is
    taken by another message (at most one per customer per day)."""
    return _local_at(at + timedelta(days=1), send_hour, ZoneInfo(zone))


def local_day(at: datetime, zone: str) -> str:
    return at.astimezone(ZoneInfo(zone)).date().isoformat()
