"""Login-free card-update links: issue, resolve, revoke, and what the page shows.

A link is `{RECOVERY_PUBLIC_URL}/update/<token>` with a token of 256 bits, bound to one customer
and either one recovery case (money is owed) or one subscription whose card expires before the
next renewal (no case, nothing owed yet). Only the token's SHA-256 is stored.

Two ways to issue one:
- `link_for_case`: a random token (`secrets.token_urlsafe(32)`), shown once, never again.
- `link_for_message`: the link an outbox message carries. Its token is HMAC-SHA256(secret key,
  message dedupe key): the stored message body holds a placeholder instead of the token, and the
  sender puts the token in right before handing the message over (`fill`) - the same token on
  every retry, so Twilio's "was this exact text sent already?" check still works - while neither
  the link table nor the outbox ever holds a usable token.
Older links stay valid until they expire - a customer often clicks the first email, not the
latest - and all of a case's links stop working the moment nothing is owed any more (the case is
terminal), or when `revoke_for_case` is called; a subscription's links stop when the
subscription is no longer live.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from recovery.config import Settings
from recovery.db import execute_count, insert_or_ignore
from recovery.domain.cases import TERMINAL, CaseStatus
from recovery.models import (
    CardUpdateLink,
    Customer,
    Invoice,
    PaymentAttempt,
    PaymentMethod,
    RecoveryCase,
    Subscription,
)
from recovery.rules import Rules, RulesError
from recovery.services.cases import log as case_log

log = logging.getLogger(__name__)

DEFAULT_LINK_DAYS = 30
# Stands for the token in a stored message body; `fill` replaces it when the message is sent.
PLACEHOLDER = "{card-update-token}"
LIVE_SUBSCRIPTION = ("active", "trialing", "past_due")
# token_urlsafe(32): 32 random bytes, 43 URL-safe characters. Anything else is not ours.
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")


class Refusal(StrEnum):
    """Why a link does not open the page. The page says no more than its status code."""

    UNKNOWN = "unknown"  # never issued, mistyped or tampered with: 404
    EXPIRED = "expired"  # 410
    REVOKED = "revoked"  # 410
    NOTHING_OWED = "nothing_owed"  # the case is recovered, lost or closed: 410

    @property
    def status(self) -> int:
        return 404 if self is Refusal.UNKNOWN else 410


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def link_days(rules: Rules) -> int:
    days = rules.data.get("card_update", {}).get("link_days", DEFAULT_LINK_DAYS)
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 365:
        raise RulesError("card_update.link_days must be a whole number of days from 1 to 365")
    return days


def link_for_case(
    session: Session,
    case: RecoveryCase,
    now: datetime,
    *,
    settings: Settings | None = None,
    rules: Rules | None = None,
) -> str:
    """A new link to the card-update page for this case's customer (flushes, never commits).

    Pass the runtime's `settings` and `rules` (a due action has them in `ctx.services`);
    without them the environment's RECOVERY_PUBLIC_URL and RECOVERY_RULES are read.
    """
    if case.customer_id is None:
        raise ValueError(f"case {case.id} has no customer: no card-update link")
    settings = settings or Settings.from_env()
    rules = rules or Rules.load(settings.rules_path)
    token = secrets.token_urlsafe(32)
    session.add(
        CardUpdateLink(
            token_hash=token_hash(token),
            customer_id=case.customer_id,
            case_id=case.id,
            created_at=now,
            expires_at=now + timedelta(days=link_days(rules)),
        )
    )
    session.flush()
    return f"{settings.public_url.rstrip('/')}/update/{token}"


def message_token(secret_key: str, message_key: str) -> str:
    """The token of the link carried by the message with this dedupe key: 43 URL-safe
    characters, like `token_urlsafe(32)`, unguessable without the secret key."""
    mac = hmac.new(secret_key.encode(), f"card-update-link:{message_key}".encode(), "sha256")
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()


def url_for(settings: Settings, token: str) -> str:
    return f"{settings.public_url.rstrip('/')}/update/{token}"


def link_for_message(
    session: Session,
    *,
    message_key: str,
    customer_id: str,
    now: datetime,
    settings: Settings,
    rules: Rules,
    case_id: int | None = None,
    subscription_id: str | None = None,
    sent_at: datetime | None = None,
) -> str:
    """The link for the outbox message with this dedupe key (one per message; issuing it again
    returns the same link). Returns the URL with the real token - to render and measure the
    message - which the caller swaps for the placeholder (`stored_form`) before storing it.
    Its lifetime counts from when the message is due to go out (`sent_at`), not from planning:
    a notice planned weeks ahead still carries a link good for the full `link_days`."""
    if (case_id is None) == (subscription_id is None):
        raise ValueError("a card-update link is bound to a case or to a subscription")
    token = message_token(settings.secret_key, message_key)
    # One insert-or-ignore, not a look-up then an insert: the token comes from the key, so a
    # link issued already (kept as it is) gives the same URL. Runs for every reminder written.
    session.flush()  # as before: what the session holds is written first
    insert_or_ignore(
        session,
        CardUpdateLink,
        {
            "token_hash": token_hash(token),
            "customer_id": customer_id,
            "case_id": case_id,
            "subscription_id": subscription_id,
            "message_key": message_key,
            "created_at": now,
            "expires_at": max(now, sent_at or now) + timedelta(days=link_days(rules)),
        },
        ["message_key"],
    )
    return url_for(settings, token)


def stored_form(text: str, url: str) -> str:
    """The text as it may be stored: the link's token replaced by the placeholder."""
    token = url.rsplit("/", 1)[-1]
    return text.replace(url, url[: -len(token)] + PLACEHOLDER) if token else text


def fill(session: Session, text: str, message_key: str, settings: Settings) -> str:
    """Put the message's token back into a stored text, right before sending. If the secret key
    was rotated since the link was issued, the link takes the new token: it has not been handed
    out yet, and the old one cannot be derived any more."""
    if PLACEHOLDER not in text:
        return text
    token = message_token(settings.secret_key, message_key)
    link = session.scalar(
        select(CardUpdateLink).where(CardUpdateLink.message_key == message_key).with_for_update()
    )
    if link is not None and link.token_hash != token_hash(token):
        log.warning("card-update link %s: secret key changed since it was issued", link.id)
        link.token_hash = token_hash(token)
        session.flush()
    return text.replace(PLACEHOLDER, token)


def revoke_for_case(session: Session, case_id: int, now: datetime) -> int:
    """Stop every live link of a case now. Returns how many were revoked."""
    return execute_count(
        session,
        update(CardUpdateLink)
        .where(CardUpdateLink.case_id == case_id, CardUpdateLink.revoked_at.is_(None))
        .values(revoked_at=now),
    )


def find(session: Session, token: str, *, lock: bool = False) -> CardUpdateLink | None:
    """The link for a token, or None. A malformed token never reaches the database; a
    well-formed one is looked up by its hash (an attacker cannot steer the hash, so the index
    lookup leaks nothing about stored tokens) and compared in constant time."""
    if not TOKEN_SHAPE.fullmatch(token):
        return None
    digest = token_hash(token)
    query = select(CardUpdateLink).where(CardUpdateLink.token_hash == digest)
    if lock:
        query = query.with_for_update()
    link = session.scalars(query).one_or_none()
    if link is None or not hmac.compare_digest(link.token_hash, digest):
        return None
    return link


def resolve(
    session: Session, token: str, now: datetime, *, returning: bool = False
) -> CardUpdateLink | Refusal:
    """The link if it may open the page now, else why not. Reads only.

    `returning`: the customer is coming back from Stripe Checkout, where the card was saved
    while the link was good; a case closed meanwhile still gets its answer ("paid", "nothing
    owed") rather than a refusal.
    """
    link = find(session, token)
    if link is None:
        return Refusal.UNKNOWN
    if link.revoked_at is not None:
        return Refusal.REVOKED
    if link.expires_at <= now:
        return Refusal.EXPIRED
    if link.case_id is None:
        # An expiring-card link: good while the subscription lives (it may also be past due).
        sub = session.get(Subscription, link.subscription_id) if link.subscription_id else None
        if sub is None:
            return Refusal.UNKNOWN
        if not returning and sub.status not in LIVE_SUBSCRIPTION:
            return Refusal.NOTHING_OWED
        return link
    case = session.get(RecoveryCase, link.case_id)
    if case is None:
        return Refusal.UNKNOWN
    if not returning and CaseStatus(case.status) in TERMINAL:
        return Refusal.NOTHING_OWED
    return link


def record_open(session: Session, link: CardUpdateLink, now: datetime) -> None:
    """Count an opening; the first one goes on the case's timeline (attribution)."""
    link.opened_count += 1
    link.first_opened_at = link.first_opened_at or now
    link.last_opened_at = now
    case = session.get(RecoveryCase, link.case_id) if link.case_id is not None else None
    if case is not None:
        case_log.record(
            session,
            case,
            now,
            "link_opened",
            "the customer opened the card-update link",
            {"link_id": link.id},
            f"card_update_link:{link.id}:opened",
        )


# ---- what the page shows ------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """Everything the page may show: no email, no name, no address, never a full card number.

    `expiring`: nothing is owed; `amount` is the next payment, due `since` (the renewal)."""

    amount: int
    currency: str
    since: datetime
    card_brand: str | None
    card_last4: str | None
    expiring: bool = False
    # Collection is paused until then (a pause taken instead of a loss, or in the cancel
    # flow): the renewals in between are not charged, so no renewal date is promised.
    resumes_at: datetime | None = None


BRANDS = {
    "visa": "Visa",
    "mastercard": "Mastercard",
    "amex": "American Express",
    "discover": "Discover",
    "diners": "Diners Club",
    "jcb": "JCB",
    "unionpay": "UnionPay",
    "cartes_bancaires": "Cartes Bancaires",
}


def brand_name(brand: str | None) -> str | None:
    if not brand:
        return None
    return BRANDS.get(brand.lower(), brand.replace("_", " ").title())


def _failing_card(session: Session, case: RecoveryCase) -> tuple[str | None, str | None]:
    """The card Stripe charges (subscription default, then the customer's), else the card of
    the last failed attempt on the invoice."""
    sub = session.get(Subscription, case.subscription_id) if case.subscription_id else None
    customer = session.get(Customer, case.customer_id) if case.customer_id else None
    for pm_id in (
        sub.default_payment_method_id if sub else None,
        customer.default_payment_method_id if customer else None,
    ):
        pm = session.get(PaymentMethod, pm_id) if pm_id else None
        if pm is not None and pm.last4:
            return pm.brand, pm.last4
    attempt = session.scalars(
        select(PaymentAttempt)
        .where(PaymentAttempt.invoice_id == case.invoice_id, PaymentAttempt.status == "failed")
        .order_by(PaymentAttempt.created.desc())
        .limit(1)
    ).first()
    if attempt is not None:
        return attempt.card_brand or case.card_brand, attempt.card_last4
    return case.card_brand, None


def default_card(session: Session, sub: Subscription) -> PaymentMethod | None:
    """The card Stripe charges for the subscription's renewals, in Stripe's order."""
    customer = session.get(Customer, sub.customer_id) if sub.customer_id else None
    for pm_id in (
        sub.default_payment_method_id,
        sub.default_source_id,
        customer.default_payment_method_id if customer else None,
        customer.default_source_id if customer else None,
    ):
        if pm_id:
            return session.get(PaymentMethod, pm_id)
    return None


def next_payment(sub: Subscription) -> tuple[int, str]:
    """The renewal's amount (minor units) and currency, from the subscription's items."""
    amount = sum((item.unit_amount or 0) * item.quantity for item in sub.items)
    currency = sub.currency or next((i.currency for i in sub.items if i.currency), None) or "usd"
    return amount, currency


def _expiring_summary(session: Session, link: CardUpdateLink) -> Summary:
    sub = session.get(Subscription, link.subscription_id) if link.subscription_id else None
    assert sub is not None
    amount, currency = next_payment(sub)
    pm = default_card(session, sub)
    return Summary(
        amount=amount,
        currency=currency,
        since=sub.current_period_end or link.created_at,
        card_brand=brand_name(pm.brand if pm else None),
        card_last4=pm.last4 if pm else None,
        expiring=True,
        resumes_at=sub.pause_resumes_at if sub.pause_behavior else None,
    )


def summary(session: Session, link: CardUpdateLink) -> Summary:
    if link.case_id is None:
        return _expiring_summary(session, link)
    case = session.get(RecoveryCase, link.case_id)
    assert case is not None
    invoice = session.get(Invoice, case.invoice_id)
    amount = invoice.amount_remaining if invoice and invoice.amount_remaining else case.amount_due
    brand, last4 = _failing_card(session, case)
    return Summary(
        amount=amount,
        currency=case.currency,
        since=case.opened_at,
        card_brand=brand_name(brand),
        card_last4=last4,
    )
