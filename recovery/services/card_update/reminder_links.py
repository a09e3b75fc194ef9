"""What a reminder offers besides the card-update link, on the same token:

- the final notice, with `retry.end_of_dunning = "offer_pause"`: a pause instead of a loss
  (`/pause/<token>`, services/pauses/offer.py), up to a date the notice names;
- a reminder about a decline only the customer's bank can clear (`needs_customer`): "I've
  contacted my bank - try again", a link to that section of the card-update page (`#bank`).

Read by the reminders writer; imports nothing that writes messages.
"""

from __future__ import annotations

from datetime import datetime

from recovery import i18n
from recovery.domain import pauses as pause_terms
from recovery.domain.cases import ACTIVE
from recovery.models import RecoveryCase
from recovery.rules import Rules

BANK_SECTION = "bank"  # the card-update page's section with the button
BANK_TEMPLATES = frozenset({"soft_decline"})  # what a needs_customer case's reminders use


def _page(link: str, page: str) -> str:
    base, _, token = link.rpartition("/update/")
    return f"{base}/{page}/{token}" if base and token else ""


def offers_bank_call(case: RecoveryCase, rules: Rules) -> bool:
    """Whether the customer may say "I've contacted my bank": the decline needs them (not a
    3-D Secure check), the case is open, and our retries (not Stripe's) would follow."""
    return (
        case.decline_category == "needs_customer"
        and case.status in ACTIVE
        and case.awaiting in (None, "customer")  # not 3-D Secure: that is Stripe's page
        and rules.retry.retry_owner == "recovery"
    )


def extras(
    case: RecoveryCase, rules: Rules, template: str, link: str, deadline: datetime, locale: str
) -> dict[str, str]:
    """`pause_link`, `pause_until` (the latest date a pause may run to, as the page offers it)
    and `bank_link` for the template ("" when not offered). `link` is the message's
    card-update link; `deadline` the end of the retry window."""
    values = {"pause_link": "", "pause_until": "", "bank_link": ""}
    if not link or "/update/" not in link:
        return values
    if (
        template == "final_notice"
        and rules.retry.end_of_dunning == "offer_pause"
        and case.subscription_id
    ):
        values["pause_link"] = _page(link, "pause")
        last = pause_terms.choices(deadline, rules.retry.pause_months)[-1]
        values["pause_until"] = i18n.format_day(last.resumes_at, locale)
    if template in BANK_TEMPLATES and offers_bank_call(case, rules):
        values["bank_link"] = f"{link}#{BANK_SECTION}"
    return values


def stored(text: str, values: dict[str, str], placeholder: str) -> str:
    """The text as it may be stored: the pause link's token replaced by the placeholder."""
    url = values.get("pause_link") or ""
    token = url.rsplit("/", 1)[-1]
    return text.replace(url, url[: -len(token)] + placeholder) if url and token else text
