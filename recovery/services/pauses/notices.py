"""The notice before billing resumes after a pause taken instead of a loss: sent DAYS_BEFORE
the date the customer chose, with a card-update link for the subscription (the card that
failed may still be the one on file)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from recovery.models import Customer, DunningPause, OutboxMessage, RecoveryCase, Subscription
from recovery.runtime import Runtime
from recovery.services.card_update import links as card_update_links
from recovery.services.cases import cards
from recovery.services.messaging import outbox, reminders
from recovery.services.outreach import contacts

ABOUT_PREFIX = "pause"  # outbox subjects: pause:<pause id>
TEMPLATE = "pause_resumes"
# As the cancel flow's pause reminder ([offers.pause] reminder_days_before): time to change
# the card before the first renewal is charged.
DAYS_BEFORE = 3


def about(pause_id: int) -> str:
    return f"{ABOUT_PREFIX}:{pause_id}"


def notice_at(resumes_at: datetime, chosen_at: datetime) -> datetime:
    """When the notice goes out: DAYS_BEFORE the pause ends, never before it was chosen."""
    return max(resumes_at - timedelta(days=DAYS_BEFORE), chosen_at)


def plan_resume_notice(
    session: Session, rt: Runtime, pause: DunningPause, case: RecoveryCase, now: datetime
) -> None:
    """Queue the notice for the billing contact (else the customer), once per pause."""
    customer = session.get(Customer, pause.customer_id)
    sub = session.get(Subscription, pause.subscription_id)
    if customer is None or customer.deleted or sub is None:
        return
    targets = contacts.reminder_targets(session, customer, "email", TEMPLATE)
    if not targets:
        targets = [contacts.Target(customer.email, None, None)] if customer.email else []
    send_after = notice_at(pause.resumes_at, now)
    renewal, currency = card_update_links.next_payment(sub)
    for target in targets:
        key = f"pause:{pause.id}:resumes{target.suffix}"
        locale = target.locale or reminders.locale_of(customer)
        link = card_update_links.link_for_message(
            session,
            message_key=key,
            customer_id=customer.id,
            subscription_id=sub.id,
            now=now,
            settings=rt.settings,
            rules=rt.rules,
            sent_at=send_after,
        )
        context = reminders.message_context(
            rules=rt.rules,
            customer=customer,
            locale=locale,
            amount=renewal,
            currency=currency,
            card=cards.current_card(session, case),
            link=link,
            deadline=pause.resumes_at,
        )
        rendered = reminders.render_email(TEMPLATE, locale, context)
        outbox.enqueue(
            session,
            about=about(pause.id),
            case_id=case.id,
            customer_id=customer.id,
            channel="email",
            template=TEMPLATE,
            step="pause.resumes",
            locale=locale,
            recipient=target.address,
            subject=card_update_links.stored_form(rendered.subject, link),
            body=card_update_links.stored_form(rendered.body, link),
            send_after=send_after,
            dedupe_key=key,
            now=now,
        )


def still_wanted(session: Session, message: OutboxMessage) -> str | None:
    """Right before sending: the pause still stands and the subscription still lives."""
    pause = session.get(DunningPause, int(message.about.rsplit(":", 1)[1]))
    if pause is None or pause.status != "accepted":
        return "the pause was not carried out"
    sub = session.get(Subscription, pause.subscription_id)
    if sub is None or sub.status not in card_update_links.LIVE_SUBSCRIPTION:
        return "the subscription has ended"
    if not sub.pause_behavior:
        return "the pause was lifted early"
    return None
