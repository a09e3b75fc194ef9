"""What a doctor check reports: one line, ok / warn / fail, and what to do about it."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"  # works, but something a live run should not rely on
    FAIL = "fail"  # will not work: `recovery doctor` exits non-zero


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""  # what to do; every warn and fail has one

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


def ok(name: str, detail: str) -> Check:
    return Check(name, Status.OK, detail)


def warn(name: str, detail: str, fix: str) -> Check:
    return Check(name, Status.WARN, detail, fix)


def fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, Status.FAIL, detail, fix)


@dataclass(frozen=True)
class ManualStep:
    """Something no API tells: where to look in a provider's dashboard, and why it matters."""

    where: str
    what: str
    why: str

    def as_dict(self) -> dict[str, str]:
        return {"where": self.where, "what": self.what, "why": self.why}


@dataclass(frozen=True)
class Report:
    checks: list[Check]
    manual: list[ManualStep] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(c.status is Status.FAIL for c in self.checks)

    def counts(self) -> dict[str, int]:
        return {s.value: sum(c.status is s for c in self.checks) for s in Status}

    def as_dict(self) -> dict[str, Any]:
        return {
            "checks": [c.as_dict() for c in self.checks],
            "manual": [m.as_dict() for m in self.manual],
            "counts": self.counts(),
            "failed": self.failed,
        }

    def lines(self) -> list[str]:
        """Plain text: one line per check, its fix indented below it, then the manual steps."""
        width = max((len(c.name) for c in self.checks), default=0)
        out = []
        for c in self.checks:
            out.append(f"{c.status.value:<4}  {c.name:<{width}}  {c.detail}")
            if c.fix:
                out.append(f"{'':<4}  {'':<{width}}  -> {c.fix}")
        if self.manual:
            out.append("")
            out.append("check by hand (no API tells):")
            for step in self.manual:
                out.append(f"  - {step.where}: {step.what}")
                out.append(f"    why: {step.why}")
        counts = self.counts()
        out.append("")
        out.append(f"{counts['ok']} ok, {counts['warn']} warn, {counts['fail']} fail")
        return out
