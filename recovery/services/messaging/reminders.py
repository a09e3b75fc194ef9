"""Reminders for recovery cases: planned when a case opens or changes sequence, cancelled the
moment it closes, a thank-you when money arrives and a notice when the subscription ends.

Runs as an event reaction registered after the case reactions, in the same transaction: what
the case just became decides what is written to the outbox (services/outbox.py).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from types import EllipsisType
from typing import Any

from sqlalchemy import bindparam, or_, select
from sqlalchemy.orm import Session

from recovery.config import Settings
from recovery.db import dialect_of, in_list
from recovery.domain import reminders as planner
from recovery.domain import sms as sms_rules
from recovery.domain.cases import ACTIVE, TERMINAL, CaseStatus
from recovery.domain.experiments import arm_sequence
from recovery.domain.stripe_objects.fields import ref
from recovery.models import (
    CaseEvent,
    Customer,
    OutboxMessage,
    PaymentMethod,
    RecoveryCase,
    Subscription,
)
from recovery.rules import Rules
from recovery.runtime import ProcessingContext
from recovery.services.card_update import completion, reminder_links
from recovery.services.card_update import links as card_update_links
from recovery.services.cases import cards
from recovery.services.cases import log as case_log
from recovery.services.cases import opening as case_opening
from recovery.services.experiments.assignment import placement_of_case, read_placements
from recovery.services.messaging import outbox
from recovery.services.messaging.consent import may_text
from recovery.services.messaging.wording import LINKED as LINKED
from recovery.services.messaging.wording import calendar_of as calendar_of
from recovery.services.messaging.wording import card_label as card_label
from recovery.services.messaging.wording import card_update_link as card_update_link
from recovery.services.messaging.wording import locale_of as locale_of
from recovery.services.messaging.wording import message_context as message_context
from recovery.services.messaging.wording import render_email as render_email
from recovery.services.messaging.wording import render_sms as render_sms
from recovery.services.messaging.wording import zone_of as zone_of
from recovery.services.outreach import contacts

log = logging.getLogger(__name__)
Obj = Mapping[str, Any]
RECENT = timedelta(days=7)  # confirmations only for cases closed this recently


# ---- planning -------------------------------------------------------------------------------


def _deadline(case: RecoveryCase, rules: Rules) -> datetime:
    return case.opened_at + timedelta(days=rules.retry.window_days)


def _recipient(
    session: Session, customer: Customer | None, channel: str, rules: Rules
) -> str | None:
    if customer is None or customer.deleted:
        return None
    if channel == "email":
        return customer.email or None
    phone = sms_rules.e164(customer.phone)
    return phone if may_text(session, customer, phone, rules.reminders) is None else None


def _has_contacts(session: Session, customer: Customer | None) -> bool:
    """Whether the customer has account contacts (most have none): asked once per plan rather
    than once per message written."""
    if customer is None or customer.deleted:
        return False
    return bool(contacts.active(session, customer.id))


def _write(
    session: Session,
    case: RecoveryCase,
    rules: Rules,
    settings: Settings,
    now: datetime,
    *,
    channel: str,
    template: str,
    step: str,
    at: datetime,
    dedupe_key: str,
    capped: bool,
    card: PaymentMethod | EllipsisType | None = ...,
    customer: Customer | EllipsisType | None = ...,
    has_contacts: bool | None = None,
    fresh: bool = False,
    later: list[dict[str, Any]] | None = None,
) -> OutboxMessage | None:
    """Write the message to the customer - or, for a business account with contacts, one copy
    per contact it is for (services/outreach/contacts.py), each with its own key and link.
    `card`, `customer`: the case's current card and its customer when the caller has them
    already (`...`: look them up; a plan read them for all its steps, and a customer not in the
    mirror was asked again for each);
    `has_contacts`: whether the customer has any, when the caller knows (None: look it up);
    `fresh`: no message can have this key yet (its plan's timeline line was just added);
    `later`: a round's list to add an uncapped message to, enqueued with the others'
    (`outbox.enqueue_many`) - nothing is returned then."""
    if isinstance(card, EllipsisType):
        card, customer, known = cards.card_and_customer(session, case)
        has_contacts = known if has_contacts is None else has_contacts
    elif isinstance(customer, EllipsisType):
        customer = session.get(Customer, case.customer_id) if case.customer_id else None
    if has_contacts is None:
        has_contacts = _has_contacts(session, customer)
    # Without contacts there are no copies: the customer's own address (contacts.py's rule).
    targets = (
        contacts.reminder_targets(session, customer, channel, template) if has_contacts else []
    )
    if channel == "sms":
        targets = [
            t for t in targets if may_text(session, customer, t.address, rules.reminders) is None
        ]
    if not targets:  # no contact for this channel: the customer's own address, as always
        recipient = _recipient(session, customer, channel, rules)
        targets = [contacts.Target(recipient, None, None)] if recipient else []
    first = None
    for index, target in enumerate(targets):
        row = _write_to(
            session,
            case,
            rules,
            settings,
            now,
            customer=customer,
            recipient=target.address,
            locale=target.locale or locale_of(customer),
            channel=channel,
            template=template,
            step=step,
            at=at,
            dedupe_key=f"{dedupe_key}{target.suffix}",
            capped=capped and index == 0,  # the copies go with the first, on its day
            card=card,
            fresh=fresh,
            later=later,
        )
        first = first or row
    return first


def _write_to(
    session: Session,
    case: RecoveryCase,
    rules: Rules,
    settings: Settings,
    now: datetime,
    *,
    customer: Customer | None,
    recipient: str,
    locale: str,
    channel: str,
    template: str,
    step: str,
    at: datetime,
    dedupe_key: str,
    capped: bool,
    card: PaymentMethod | None,
    fresh: bool = False,
    later: list[dict[str, Any]] | None = None,
) -> OutboxMessage | None:
    if not fresh and session.scalar(_MESSAGE_WITH_KEY, {"key": dedupe_key}):
        return None
    link, ours = "", False
    if template == "authentication_needed" and case.hosted_invoice_url:
        link = case.hosted_invoice_url  # the bank's check happens on Stripe's invoice page
    elif template in LINKED or channel == "sms":
        link, ours = card_update_link(session, case, rules, settings, now, dedupe_key, at), True
    context = message_context(
        rules=rules,
        customer=customer,
        locale=locale,
        amount=case.amount_due,
        currency=case.currency,
        card=card,
        link=link,
        deadline=_deadline(case, rules),
    )
    # A pause instead of a loss (final notice), "I've contacted my bank" (needs_customer).
    offered = reminder_links.extras(case, rules, template, link, _deadline(case, rules), locale)
    context.update(offered)
    subject = ""
    if channel == "email":
        rendered = render_email(template, locale, context)
        subject, body = rendered.subject, rendered.body
    else:
        text = render_sms(template, locale, context, rules.reminders.max_sms_segments)
        if text is None:
            log.warning(
                "case %s: %s text too long for SMS in %s; skipped", case.id, template, locale
            )
            return None
        body = text
    if ours:  # the token never rests in the outbox: the sender puts it back in
        subject = card_update_links.stored_form(subject, link)
        body = card_update_links.stored_form(body, link)
        body = reminder_links.stored(body, offered, card_update_links.PLACEHOLDER)
    zone = zone_of(customer)
    # A thank-you or "it ended" note goes out after the case closed: it must not sit under the
    # case's subject, whose pending work is cancelled the moment the case closes.
    about = case_log.subject(case.id)
    if step == outbox.CONFIRMATION:
        about = f"notice:{about}"
    message: dict[str, Any] = {
        "about": about,
        "case_id": case.id,
        "customer_id": case.customer_id,
        "channel": channel,
        "template": template,
        "step": step,
        "locale": locale,
        "recipient": recipient,
        "subject": subject,
        "body": body,
        "send_after": at,
        "dedupe_key": dedupe_key,
    }
    if later is not None and not capped:
        later.append(message)
        return None
    return outbox.enqueue(
        session,
        **message,
        now=now,
        cap_zone=zone if capped else None,
        send_hour=rules.reminders.send_hour,
        key_checked=True,  # asked at the top, in this transaction
    )


# Built once, with parameters: the planner runs on every move of a case.
_MESSAGE_WITH_KEY = select(OutboxMessage.id).where(OutboxMessage.dedupe_key == bindparam("key"))
_KEYS = OutboxMessage.dedupe_key
_MESSAGES_WITH_KEYS = functools.cache(lambda d: select(_KEYS).where(in_list(_KEYS, "keys", d)))
_SUBSCRIPTION_STATUS = select(Subscription.status).where(Subscription.id == bindparam("id"))
_PLANS = (
    select(CaseEvent.data)
    .where(CaseEvent.case_id == bindparam("case_id"), CaseEvent.kind == "reminders")
    .order_by(CaseEvent.id)
)
_PLANS_OF_CASES = functools.cache(
    lambda dialect: (
        select(CaseEvent.case_id, CaseEvent.data)
        .where(in_list(CaseEvent.case_id, "ids", dialect), CaseEvent.kind == "reminders")
        .order_by(CaseEvent.id)
    )
)


def _current_sequence(session: Session, case: RecoveryCase) -> tuple[str | None, int]:
    rows = session.scalars(_PLANS, {"case_id": case.id}).all()
    return (str(rows[-1].get("sequence")) if rows else None), len(rows)


def _current_sequences(session: Session, ids: Sequence[int]) -> dict[int, tuple[str | None, int]]:
    """`_current_sequence` of many cases in one statement."""
    plans: dict[int, list[Any]] = {}
    query = _PLANS_OF_CASES(dialect_of(session))
    for case_id, data in session.execute(query, {"ids": list(ids)}):
        plans.setdefault(case_id, []).append(data)
    return {i: (str(rows[-1].get("sequence")), len(rows)) for i, rows in plans.items()}


def plan_case(
    session: Session,
    case: RecoveryCase,
    rules: Rules,
    settings: Settings,
    now: datetime,
    plans: Mapping[int, tuple[str | None, int]] | None = None,
) -> None:
    """Make the case's planned reminders match what it needs now. `plans`: the current
    sequences of a round's cases read together (`_current_sequences`), None: read this one's."""
    config = rules.reminders
    if not config.enabled or case.status not in ACTIVE or case.dunning_paused:
        return  # a paused case is re-planned when it is resumed (case_admin.resume)
    wanted = planner.sequence_for(case.awaiting, case.decline_category)
    if plans is not None:
        current, count = plans.get(case.id, (None, 0))
    elif case_opening.take_just_opened(session, case.id):
        current, count = None, 0  # opened in this unit of work: no plan yet, nothing to read
    else:
        current, count = _current_sequence(session, case)
    if current == wanted:
        return  # planned already: the usual answer when a case's timeline moves
    placed = placement_of_case(session, rules, case.id)
    if placed is not None and placed.holdout:
        return  # the holdout hears nothing from us: what Stripe alone achieves
    if current is not None:  # a first plan has nothing to replace (only plans write these)
        outbox.cancel(session, case_log.subject(case.id), now)
    run = count + 1
    # (A first plan: the case just opened, nobody can have been on its card-update page yet.)
    seen = None if current is None else completion.seen_failing_on_the_page(session, case.id, now)
    # Added now: the run is new, so none of its messages' keys is taken (each asked before).
    fresh = case_log.record(
        session,
        case,
        now,
        "reminders",
        f"reminders: the {wanted.replace('_', ' ')} sequence"
        + (", from the next day: the customer saw it fail on the card-update page" if seen else ""),
        {"sequence": wanted, "replaces": current, "after_the_page": seen is not None},
        f"case:{case.id}:reminders:{run}",
    )
    # The card is the same for every step, and so are the customer and their contacts.
    card, customer, has_contacts = cards.card_and_customer(session, case)
    sequence, started_at = config.sequences[wanted], now
    if placed is not None:  # an experiment's arm: its own steps, channels and first delay
        options = placed.dunning
        sequence = arm_sequence(options, wanted, tuple(sequence))
        delay = timedelta(hours=options.first_reminder_delay_hours)
        started_at = max(now, case.opened_at + delay)
    if seen is not None:  # the next day at the send hour, the customer's time
        later = planner.next_day_at(seen, zone_of(customer), config.send_hour)
        started_at = max(started_at, later)
    steps = planner.plan(
        sequence,
        started_at=started_at,
        deadline=_deadline(case, rules),
        zone=zone_of(customer),
        send_hour=config.send_hour,
        calendar=calendar_of(customer) if rules.retry.business_days else None,
    )
    for planned in steps:
        at = planned.at
        if planned.channel == "sms":
            at = sms_rules.next_allowed(at, zone_of(customer), config.sms)
        _write(
            session,
            case,
            rules,
            settings,
            now,
            channel=planned.channel,
            template=planned.template,
            step=f"{wanted}.{planned.index}",
            at=at,
            dedupe_key=f"case:{case.id}:reminder:{run}:{wanted}:{planned.index}",
            capped=True,
            card=card,
            customer=customer,
            has_contacts=has_contacts,
            fresh=fresh,
        )


def _ended(session: Session, case: RecoveryCase) -> bool:
    if case.status != CaseStatus.LOST or not case.subscription_id:
        return False
    status = session.scalar(_SUBSCRIPTION_STATUS, {"id": case.subscription_id})  # not its items
    return status in ("canceled", "incomplete_expired", "unpaid")


def close_case(
    session: Session, case: RecoveryCase, rules: Rules, settings: Settings, now: datetime
) -> None:
    """The case is over: nothing pending goes out; say thank you, or that it ended."""
    close_cases(session, [case], rules, settings, now)


def close_cases(
    session: Session, cases: Sequence[RecoveryCase], rules: Rules, settings: Settings, now: datetime
) -> None:
    """`close_case` for a round's closed cases: their pending messages cancelled in one
    statement per table, which confirmations went out already read in one, and their
    experiment placements in one."""
    if not cases:
        return
    outbox.cancel_many(session, [case_log.subject(case.id) for case in cases], now)
    if not rules.reminders.confirmations:
        return
    wanted: dict[str, tuple[RecoveryCase, str]] = {}
    for case in cases:
        if case.closed_at is not None and now - case.closed_at > RECENT:
            continue
        template = None
        if case.status == CaseStatus.RECOVERED:
            template = "recovered"
        elif _ended(session, case):
            template = "subscription_ended"
        if template is not None:
            wanted[f"case:{case.id}:{template}"] = (case, template)
    # Said already (the usual answer: a closed case's timeline keeps moving) is asked first.
    said = _MESSAGES_WITH_KEYS(dialect_of(session))
    for key in session.scalars(said, {"keys": sorted(wanted)}) if wanted else ():
        del wanted[key]
    read_placements(session, sorted({case.id for case, _ in wanted.values()}))
    # Their cards and customers in one statement too (one: the single case's own read).
    known = (
        cards.cards_and_customers(session, [case for case, _ in wanted.values()])
        if len(wanted) > 1
        else {}
    )
    thanks: list[dict[str, Any]] = []  # enqueued together
    for key, (case, template) in wanted.items():
        placed = placement_of_case(session, rules, case.id)
        if placed is not None and placed.holdout:
            continue
        card, customer, has_contacts = known.get(case.id, (..., ..., None))
        _write(
            session,
            case,
            rules,
            settings,
            now,
            channel="email",
            template=template,
            step=outbox.CONFIRMATION,
            at=now,
            dedupe_key=key,
            capped=False,
            fresh=True,  # (asked above; a contact's copy is written once by its own key)
            later=thanks,
            card=card,
            customer=customer,
            has_contacts=has_contacts,
        )
    outbox.enqueue_many(session, thanks, now)


def sync_case(
    session: Session, case: RecoveryCase, rules: Rules, settings: Settings, now: datetime
) -> None:
    sync_cases(session, [case], rules, settings, now)


def sync_cases(
    session: Session, cases: Sequence[RecoveryCase], rules: Rules, settings: Settings, now: datetime
) -> None:
    """Make the reminders of these cases match their state now: the closed ones closed
    together first (`close_cases`), then the active ones planned, their current plans read
    in one statement."""
    close_cases(session, [case for case in cases if case.status in TERMINAL], rules, settings, now)
    active = [case for case in cases if case.status not in TERMINAL]
    if len(active) == 1:
        plan_case(session, active[0], rules, settings, now)
    elif active:
        read = [case.id for case in active if not case_opening.take_just_opened(session, case.id)]
        plans = _current_sequences(session, read) if read else {}
        for case in active:
            plan_case(session, case, rules, settings, now, plans)


# ---- wiring ---------------------------------------------------------------------------------


def _cases_touched(session: Session, obj: Obj) -> list[RecoveryCase]:
    kind = obj.get("object")
    oid = obj.get("id")
    customer = oid if kind == "customer" else ref(obj.get("customer"))
    conditions = []
    if kind == "invoice" and oid:
        conditions.append(RecoveryCase.invoice_id == oid)
    if kind == "subscription" and oid:
        conditions.append(RecoveryCase.subscription_id == oid)
    if customer:
        conditions.append(RecoveryCase.customer_id == customer)
    if not conditions:
        return []
    return list(
        session.scalars(select(RecoveryCase).where(or_(*conditions)).order_by(RecoveryCase.id))
    )


def on_event(ctx: ProcessingContext, event: Obj, obj: Obj) -> None:
    rules: Rules = ctx.runtime.rules
    settings: Settings = ctx.runtime.settings
    now = ctx.clock.now()
    for case in _cases_touched(ctx.session, obj):
        sync_case(ctx.session, case, rules, settings, now)


def still_wanted(session: Session, message: OutboxMessage) -> str | None:
    """Checked right before sending: reminders of a closed case never go out."""
    if message.case_id is None or message.step == outbox.CONFIRMATION:
        return None
    case = session.get(RecoveryCase, message.case_id)
    if case is None:
        return "the case no longer exists"
    if case.status in TERMINAL:
        return f"the case is {case.status}"
    if case.dunning_paused:
        return "dunning is paused"
    return None
