"""Helpers for card-update link tests: a failed renewal with an open case, and a link to it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from recovery.models import CardUpdateLink, CaseEvent, DueAction, RecoveryCase
from recovery.runtime import Runtime
from recovery.services.card_update.links import link_for_case
from tests.support.scenario import Billing, Story


@dataclass
class Linked:
    billing: Billing
    case_id: int
    url: str
    token: str


def failed_renewal_with_link(story: Story, rt: Runtime) -> Linked:
    billing = story.customer(brand="visa", amount=2000)
    assert story.stripe_charges(billing.invoice, decline_code="insufficient_funds") == "declined"
    case_id = story.case(billing.invoice).id
    with rt.db.transaction() as s:
        case = s.get(RecoveryCase, case_id)
        assert case is not None
        url = link_for_case(s, case, rt.clock.now(), settings=rt.settings, rules=rt.rules)
    return Linked(billing, case_id, url, url.rsplit("/", 1)[1])


def row_counts(rt: Runtime) -> dict[str, Any]:
    with rt.db.transaction() as s:
        return {
            "links": s.scalar(select(func.count()).select_from(CardUpdateLink)),
            "opens": s.scalar(select(func.coalesce(func.sum(CardUpdateLink.opened_count), 0))),
            "case_events": s.scalar(select(func.count()).select_from(CaseEvent)),
            "due_actions": s.scalar(select(func.count()).select_from(DueAction)),
        }


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def pay_requests(fake: Any, case_id: int) -> list[Any]:
    prefix = f"case:{case_id}:card_update:"
    return [
        r
        for r in fake.requests
        if r.method == "pay_invoice" and (r.idempotency_key or "").startswith(prefix)
    ]
