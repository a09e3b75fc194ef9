"""Stripe's side of the history: the catalogue, customers signing up, renewals, and the
declines the model gives them (programmed into the fake), healing or not."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from sqlalchemy import select

from recovery.adapters.stripe.errors import AuthenticationRequired, CardDeclined
from recovery.adapters.stripe_fake.store import clone
from recovery.devtools import population as pop
from recovery.devtools.history.customers import CustomersActing
from recovery.devtools.history.model import (
    DAY,
    DECLINES,
    EXPIRED,
    GIVE_UP_WEIGHT,
    OPEN_AT_END_DAYS,
    OUTCOMES,
    STORY_FLOOR_BEFORE_END,
    STORY_FLOOR_FROM_DAY,
    STORY_RECHECK,
    Decline,
    Story,
    Subscriber,
)
from recovery.models import OutboxMessage, RecoveryCase


class Billing(CustomersActing):
    # ---- the catalogue and the customers -----------------------------------------------------

    def setup_catalogue(self) -> None:
        for plan in pop.PLANS:
            self.fake.add_price(
                plan.price_id,
                unit_amount=plan.amount,
                currency=plan.currency,
                interval=plan.interval,
                product=plan.product,
            )
        self.fake.add_coupon(pop.COUPON_ID, percent_off=25.0, duration="repeating")

    def new_card(self, customer_id: str, spec: pop.CardSpec) -> dict[str, Any]:
        pm: dict[str, Any] = self.fake.add_payment_method(
            customer_id,
            brand=spec.brand,
            last4=spec.last4,
            exp_month=spec.exp_month,
            exp_year=spec.exp_year,
            funding=spec.funding,
            country=spec.country,
        )
        return pm

    def card_spec(self, person: pop.Person) -> pop.CardSpec:
        today = self.clock.now()
        spec = pop.card(self.rng, today.year, today.month, person.country)
        if self.rng.random() < 0.07:
            # Some cards run out within a month or two of the end: the expiry tracker's work.
            months = self.end.year * 12 + self.end.month - 1 + self.rng.randrange(2)
            spec = dataclasses.replace(spec, exp_year=months // 12, exp_month=months % 12 + 1)
        return spec

    def sign_up(self, number: int, *, existing: bool) -> None:
        person = pop.person(self.rng, number)
        plan = pop.plan_for(self.rng, person.currency)
        cid = self.fake.new_id("cus")
        pm = self.new_card(cid, self.card_spec(person))
        length = (30 if plan.interval == "month" else 365) * DAY
        created = self.now
        period_start = self.now
        if existing:  # no events: `recovery sync` reads them from the API
            created = self.now - self.rng.randrange(30, 720) * DAY
            period_start = self.now - self.rng.randrange(0, length)
        metadata = {"sms_consent": "true"} if person.sms_consent else {}
        self.fake.add_customer(
            cid,
            email=person.email,
            name=person.name,
            phone=person.phone,
            country=person.country,
            preferred_locales=person.locale.split(","),
            default_payment_method=pm["id"],
            metadata=metadata,
            created=created,
        )
        sub = self.fake.add_subscription(
            cid,
            price_id=plan.price_id,
            current_period_start=period_start,
            created=created,
        )
        if not existing:  # signs up now; the first invoice is paid at once
            self.fake.add_event("customer.created", self.fake.retrieve_customer(cid))
            self.fake.add_event("payment_method.attached", pm)
            self.fake.add_event("customer.subscription.created", sub)
            invoice = self.fake.add_invoice(cid, subscription_id=sub["id"])
            self.fake.add_event("invoice.created", invoice)
            self.fake.add_event("invoice.finalized", invoice)
            self.fake.pay_invoice(invoice["id"], idempotency_key=f"signup:{invoice['id']}")
        # About 8% of renewals fail, the rest of the failures coming from expiring cards; a few
        # customers fail much more often than most (thin balances, old cards).
        risk = self.rng.choices((0.02, 0.07, 0.2), weights=(60, 30, 10))[0]
        subscriber = Subscriber(number, person, cid, sub["id"], risk)
        self.subscribers.append(subscriber)
        self.report.customers += 1
        self.plan_renewal(subscriber, period_start + length)

    # ---- renewals ----------------------------------------------------------------------------

    def plan_renewal(self, s: Subscriber, ts: int) -> None:
        self.at(ts, lambda: self.renew(s), reads_service=False)
        self.plan_expiry_response(s, ts)

    def renew(self, s: Subscriber) -> None:
        sid = s.subscription_id
        sub = clone(self.fake.store["subscription"][sid])
        if sub["status"] in ("canceled", "incomplete_expired"):
            return
        if sub["cancel_at_period_end"]:  # the cancel flow's "at period end" arrives
            self.fake.cancel_subscription(
                sid, at_period_end=False, idempotency_key=f"period-end:{sid}"
            )
            return
        price = sub["items"]["data"][0]["price"]
        length = (30 if price["recurring"]["interval"] == "month" else 365) * DAY
        start = self.now
        for item in sub["items"]["data"]:
            item["current_period_start"], item["current_period_end"] = start, start + length
        self.fake.put(sub)
        self.plan_renewal(s, start + length)
        pause = sub.get("pause_collection")
        if pause and (pause.get("resumes_at") or 0) > start:
            # Paused with behavior=void: Stripe voids the period's invoice; nothing is owed.
            self.fake.add_event("customer.subscription.updated", sub)
            return
        period_event: str | None = None  # held until the charge (see `Simulation.hold`)
        if pause:
            self.fake.resume_subscription(sid, idempotency_key=f"resume:{sid}:{start}")
        else:
            self.fake.add_event("customer.subscription.updated", sub)
            period_event = self.fake.events[-1]["id"]
            self.hold(period_event)
        amount = int(price["unit_amount"]) * int(sub["items"]["data"][0]["quantity"])
        if s.discount_renewals > 0:
            s.discount_renewals -= 1
            amount = amount * 3 // 4
        invoice = self.fake.add_invoice(s.customer_id, subscription_id=sid, amount_due=amount)
        self.report.renewals += 1
        # Stripe attempts payment about an hour after the renewal invoice is created.
        charge = functools.partial(self.charge_renewal, s, invoice["id"], period_event)
        self.at(self.now + 3600, charge, reads_service=False)

    def charge_renewal(self, s: Subscriber, invoice_id: str, period_event: str | None) -> None:
        """Stripe's automatic charge of a renewal, failing as the model says."""
        card = self.current_card(s)
        decline: Decline | None = None
        owed: str | None = None  # the outcome a story floor gives this failure
        if card is not None and self.card_expires(card) <= self.now:
            decline = EXPIRED
        elif card is not None and card["id"] in self.bad_cards:
            decline = self.bad_cards[card["id"]]  # still bad: paid elsewhere, not replaced
        elif self.rng.random() < s.risk:
            decline = self.rng.choices(DECLINES, weights=[d.weight for d in DECLINES])[0]
        elif self.open_at_end and self.now > self.end.timestamp() - OPEN_AT_END_DAYS * DAY:
            # A few customers who have not acted yet: open cases with reminders still to come.
            decline = self.open_at_end.pop()
        elif (story := self.owed_story(s)) is not None:
            owed = story.outcome
            decline = next(d for d in DECLINES if d.name == story.decline)
            self.story_recheck[story.name] = self.now + STORY_RECHECK
            self.scripted.add(s.number)  # no cancel-flow story for this one
        if decline is not None and card is not None:
            self.program_decline(invoice_id, card, decline)
        self.release(period_event)
        try:
            self.fake.pay_invoice(invoice_id, idempotency_key=f"renewal:{invoice_id}")
            self.quiet.add(invoice_id)
            # Held back (`Simulation.deliver`) unless the card runs out before the next renewal:
            # then the period event plans expiry notices, written at the moment it arrives.
            self.paid_at_once = card is not None and self.card_expires(card) > self.renewal_of(s)
            return
        except (CardDeclined, AuthenticationRequired):
            pass
        assert decline is not None and card is not None
        self.report.failed_renewals += 1
        self.report.declines[decline.name] = self.report.declines.get(decline.name, 0) + 1
        heal, link, hosted, none = decline.outcomes
        weights = (heal, link, hosted, none * GIVE_UP_WEIGHT)
        outcome = self.rng.choices(OUTCOMES, weights=weights)[0]
        if self.now > self.end.timestamp() - OPEN_AT_END_DAYS * DAY:
            outcome = "none"  # whatever they will do, they have not done it yet
        elif owed is not None:
            outcome = owed
        if outcome == "none" and self.now < self.end.timestamp() - STORY_FLOOR_BEFORE_END:
            self.left_alone_in_time = True  # its retry window ends before the history does
        self.report.outcomes[outcome] = self.report.outcomes.get(outcome, 0) + 1
        if outcome == "heal":
            low, high = decline.heal_days
            healed = functools.partial(self.heal, card)
            self.at(self.now + self.rng.uniform(low, high) * DAY, healed, reads_service=False)
        elif outcome == "link":
            delay = self.rng.uniform(0.3, 12) * DAY
            self.at(self.now + delay, lambda: self.update_card_for_case(s, invoice_id, 3))
        elif outcome == "hosted":
            delay = self.rng.uniform(0.2, 10) * DAY
            pays = functools.partial(self.pay_hosted, s, invoice_id)
            self.at(self.now + delay, pays, reads_service=False)  # the case, then the fake

    def renewal_of(self, s: Subscriber) -> int:
        """When the subscription's current period ends (unix seconds)."""
        sub = self.fake.store["subscription"][s.subscription_id]
        return int(sub["items"]["data"][0]["current_period_end"])

    def owed_story(self, s: Subscriber) -> Story | None:
        """The first story (see Story) the history still owes that `s` can tell now."""
        since_start = self.now - self.start.timestamp()
        if since_start < STORY_FLOOR_FROM_DAY * DAY or s.number in self.scripted:
            return None
        if self.now >= self.end.timestamp() - STORY_FLOOR_BEFORE_END:
            return None
        for story in list(self.stories_owed):
            if self.now < self.story_recheck.get(story.name, 0):
                continue
            if story.needs_sms_consent and not s.person.sms_consent:
                continue
            if self.story_told(story):
                self.stories_owed.remove(story)
                continue
            return story
        return None

    def story_told(self, story: Story) -> bool:
        with self.rt.db.transaction() as session:
            if story.name == "lost":  # or on its way: a failure nobody acts on, in time
                if self.left_alone_in_time:
                    return True
                told = select(RecoveryCase.id).where(RecoveryCase.status == "lost")
            elif story.name == "sms":  # a case's SMS, planned or sent (retention keeps those)
                told = select(OutboxMessage.id).where(
                    OutboxMessage.channel == "sms", OutboxMessage.case_id.is_not(None)
                )
            else:
                told = select(RecoveryCase.id).where(RecoveryCase.recovered_via == story.name)
            return session.scalar(told.limit(1)) is not None

    def program_decline(self, invoice_id: str, card: dict[str, Any], decline: Decline) -> None:
        """This charge fails with the decline's full detail; later charges on the same card
        keep failing (the card is "bad") until it heals or the customer changes it."""
        brand = card["card"]["brand"]
        if decline.authenticate:
            self.fake.require_authentication(invoice_id)
        else:
            self.fake.fail_next_payment(
                invoice_id,
                decline.decline_code,
                code=decline.code,
                advice_code=decline.advice_code,
                network_decline_code=decline.network_decline_code
                if brand in ("visa", "mastercard")
                else None,
                network_advice_code=decline.mastercard_advice if brand == "mastercard" else None,
            )
        self.set_card(
            card,
            declines_with=None if decline.authenticate else decline.decline_code or decline.code,
            requires_authentication=decline.authenticate,
        )
        self.bad_cards[card["id"]] = decline

    def set_card(
        self, card: dict[str, Any], *, declines_with: str | None, requires_authentication: bool
    ) -> None:
        """Store the same card again (same id, fingerprint, dates) with another behaviour."""
        details = card["card"]
        self.fake.add_payment_method(
            card["customer"],
            id=card["id"],
            brand=details["brand"],
            last4=details["last4"],
            exp_month=details["exp_month"],
            exp_year=details["exp_year"],
            funding=details["funding"],
            country=details["country"],
            fingerprint=details["fingerprint"],
            declines_with=declines_with,
            requires_authentication=requires_authentication,
            created=card["created"],
        )

    def heal(self, card: dict[str, Any]) -> None:
        """The bank would approve now (money arrived, the outage ended)."""
        self.set_card(card, declines_with=None, requires_authentication=False)
        self.bad_cards.pop(card["id"], None)
