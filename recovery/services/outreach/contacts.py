"""Account contacts: who at a business customer gets which message.

A customer may have contacts with roles - `billing` (pays: gets the reminders and the outreach),
`owner` (also gets the final notice before the subscription ends), `admin` (recorded, gets
nothing yet) - from its Stripe metadata (`recovery_billing_email`, `recovery_owner_emails`,
kept in step on every customer event) or from `POST /api/v1/customers/<id>/contacts`.
Without contacts nothing changes: the customer's own email and phone, as before.

Every contact gets messages of its own: its own dedupe key (`...:to:c<id>`), so its own
card-update or outreach link, which removing the contact revokes alone; opt-outs are per
address (`links.opt_out`, and SMS STOP per number).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from recovery import i18n
from recovery.domain import outreach as rules_of
from recovery.domain import sms as sms_rules
from recovery.domain.stripe_objects.fields import ref
from recovery.models import (
    AccountContact,
    ActionStatus,
    CardUpdateLink,
    Customer,
    DueAction,
    MessageStatus,
    OutboxMessage,
)
from recovery.runtime import ProcessingContext, Runtime
from recovery.services.outreach import links

CONTACT_KEY = ":to:c"  # dedupe-key suffix of a message to contact <id>: `...:to:c<id>`


class ContactError(ValueError):
    """The request is not a valid contact; the message names the field."""


class UnknownCustomer(LookupError):
    pass


@dataclass(frozen=True)
class Target:
    """Where one copy of a message goes. `contact_id` None: the customer's own address."""

    address: str
    locale: str | None
    contact_id: int | None

    @property
    def suffix(self) -> str:
        return f"{CONTACT_KEY}{self.contact_id}" if self.contact_id is not None else ""


def as_json(contact: AccountContact) -> dict[str, Any]:
    return {
        "id": contact.id,
        "customer": contact.customer_id,
        "role": contact.role,
        "email": contact.email,
        "phone": contact.phone,
        "locale": contact.locale,
        "sms_consent": contact.sms_consent,
        "source": contact.source,
        "created_at": contact.created_at.isoformat(),
    }


def active(session: Session, customer_id: str) -> list[AccountContact]:
    return list(
        session.scalars(
            select(AccountContact)
            .where(AccountContact.customer_id == customer_id, AccountContact.removed_at.is_(None))
            .order_by(AccountContact.id)
        )
    )


# ---- who gets what ------------------------------------------------------------------------------


def reminder_targets(
    session: Session, customer: Customer | None, channel: str, template: str
) -> list[Target]:
    """The copies of a reminder: each billing contact (email, or phone with SMS consent), and
    for the final notice each owner too. [] when the customer has no contact for this channel:
    the caller then does what it always did (the customer's own address)."""
    if customer is None or customer.deleted:
        return []
    contacts = active(session, customer.id)
    if not contacts:
        return []
    if channel == "sms":
        return [
            Target(c.phone, c.locale, c.id)
            for c in contacts
            if c.role == "billing" and c.phone and c.sms_consent
        ]
    billing = [Target(c.email, c.locale, c.id) for c in contacts if c.role == "billing" and c.email]
    if not billing and customer.email:
        billing = [Target(customer.email, None, None)]
    owners = []
    if template == "final_notice":
        seen = {t.address for t in billing}
        owners = [
            Target(c.email, c.locale, c.id)
            for c in contacts
            if c.role == "owner" and c.email and c.email not in seen
        ]
    return billing + owners


def marketing_targets(session: Session, customer: Customer) -> list[Target]:
    """Who gets an annual offer or a win-back note: the billing contacts, else the customer's
    own address - less every address that unsubscribed."""
    contacts = [c for c in active(session, customer.id) if c.role == "billing" and c.email]
    targets = [Target(c.email, c.locale, c.id) for c in contacts if c.email]
    if not targets and customer.email:
        targets = [Target(customer.email, None, None)]
    return [t for t in targets if not links.opted_out(session, customer.id, t.address)]


# ---- from the customer's metadata ---------------------------------------------------------------


def sync_from_metadata(session: Session, customer: Customer, now: datetime) -> None:
    """Make the metadata contacts match `recovery_billing_email` / `recovery_owner_emails`."""
    wanted = set(rules_of.metadata_contacts(customer.metadata_))
    rows = session.scalars(
        select(AccountContact).where(
            AccountContact.customer_id == customer.id, AccountContact.source == "metadata"
        )
    ).all()
    for row in rows:
        pair = (row.role, row.email or "")
        if pair in wanted and row.removed_at is None:
            wanted.discard(pair)
        elif pair in wanted:
            row.removed_at = None
            wanted.discard(pair)
        elif row.removed_at is None:
            _remove(session, row, now)
    taken = {
        (c.role, c.email)
        for c in session.scalars(
            select(AccountContact).where(AccountContact.customer_id == customer.id)
        )
    }
    for role, email in sorted(wanted):
        if (role, email) not in taken:  # an API contact with that role and address exists
            session.add(
                AccountContact(
                    customer_id=customer.id,
                    role=role,
                    email=email,
                    source="metadata",
                    created_at=now,
                )
            )
    session.flush()


def on_customer(ctx: ProcessingContext, event: Mapping[str, Any], obj: Mapping[str, Any]) -> None:
    """After the mirror took the customer: its metadata contacts follow."""
    customer_id = ref(obj.get("id"))
    customer = ctx.session.get(Customer, customer_id) if customer_id else None
    if customer is not None:
        sync_from_metadata(ctx.session, customer, ctx.clock.now())


# ---- the API ------------------------------------------------------------------------------------


def parse(data: object) -> dict[str, Any]:
    """A contact from the API's JSON, checked field by field."""
    if not isinstance(data, Mapping):
        raise ContactError("send a JSON object with role and email and/or phone")
    unknown = set(data) - {"role", "email", "phone", "locale", "sms_consent"}
    if unknown:
        raise ContactError(f"unknown field: {sorted(unknown)[0]}")
    role = data.get("role")
    if role not in rules_of.ROLES:
        raise ContactError(f"role must be one of {', '.join(rules_of.ROLES)}")
    email = None
    if data.get("email") is not None:
        email = rules_of.clean_email(data["email"])
        if email is None:
            raise ContactError("email is not an email address")
    phone = None
    if data.get("phone") is not None:
        phone = sms_rules.e164(str(data["phone"])) if isinstance(data["phone"], str) else None
        if phone is None:
            raise ContactError("phone must be a number in E.164 form, e.g. +14155550123")
    if email is None and phone is None:
        raise ContactError("a contact needs an email or a phone")
    locale = data.get("locale")
    if locale is not None:
        locale = i18n.negotiate([locale]) if isinstance(locale, str) else None
        if locale is None:
            raise ContactError(f"locale must be one of {', '.join(i18n.SUPPORTED_LOCALES)}")
    consent = data.get("sms_consent", False)
    if not isinstance(consent, bool):
        raise ContactError("sms_consent must be true or false")
    return {"role": role, "email": email, "phone": phone, "locale": locale, "sms_consent": consent}


def add(rt: Runtime, customer_id: str, data: object) -> tuple[dict[str, Any], bool]:
    """Add a contact (idempotent on customer, role and email). Returns it, and whether it is
    new."""
    fields = parse(data)
    now = rt.clock.now()
    with rt.db.transaction() as session:
        if session.get(Customer, customer_id) is None:
            raise UnknownCustomer(customer_id)
        existing = session.scalars(
            select(AccountContact)
            .where(
                AccountContact.customer_id == customer_id,
                AccountContact.role == fields["role"],
                AccountContact.email == fields["email"]
                if fields["email"]
                else AccountContact.phone == fields["phone"],
            )
            .with_for_update()
        ).first()
        if existing is not None:
            created = existing.removed_at is not None
            existing.removed_at = None
            existing.phone, existing.locale = fields["phone"], fields["locale"]
            existing.sms_consent = fields["sms_consent"]
            session.flush()
            return as_json(existing), created
        contact = AccountContact(customer_id=customer_id, source="api", created_at=now, **fields)
        session.add(contact)
        session.flush()
        return as_json(contact), True


def listing(rt: Runtime, customer_id: str) -> list[dict[str, Any]]:
    with rt.db.reading() as session:
        if session.get(Customer, customer_id) is None:
            raise UnknownCustomer(customer_id)
        return [as_json(c) for c in active(session, customer_id)]


def remove(rt: Runtime, customer_id: str, contact_id: int) -> bool:
    """Remove a contact: its links stop working and its pending messages are not sent."""
    now = rt.clock.now()
    with rt.db.transaction() as session:
        contact = session.get(AccountContact, contact_id, with_for_update=True)
        if contact is None or contact.customer_id != customer_id or contact.removed_at:
            return False
        _remove(session, contact, now)
        return True


def _remove(session: Session, contact: AccountContact, now: datetime) -> None:
    contact.removed_at = now
    suffix = f"%{CONTACT_KEY}{contact.id}"
    session.execute(
        update(CardUpdateLink)
        .where(
            CardUpdateLink.customer_id == contact.customer_id,
            CardUpdateLink.message_key.like(suffix),
            CardUpdateLink.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )
    links.revoke_for_contact(session, contact.id, now)
    pending = session.scalars(
        select(OutboxMessage).where(
            OutboxMessage.customer_id == contact.customer_id,
            OutboxMessage.dedupe_key.like(suffix),
            OutboxMessage.status == MessageStatus.PENDING,
        )
    ).all()
    for row in pending:
        row.status, row.finished_at, row.cap_day = MessageStatus.CANCELLED, now, None
        row.last_error = "the contact was removed"
        session.execute(
            update(DueAction)
            .where(DueAction.dedupe_key == f"outbox:{row.dedupe_key}")
            .where(DueAction.status == ActionStatus.PENDING)
            .values(status=ActionStatus.CANCELLED, finished_at=now)
        )
    session.flush()
