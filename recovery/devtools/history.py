"""Months of billing history, played through the real service on a frozen clock.

A `FrozenClock` starts about six months before `end` and steps from one moment to the next:
the next renewal or customer action of the simulation, the next due action in the database
(retries, reminders, Stripe changes), or the next day's daily jobs. Stripe is the in-repo fake;
each of its events goes through the real inbox (`recovery.services.inbox.receive_events`), so
the mirror, the case machinery, the retry policy, the reminder planner and the outbox do what
they do in production, and the worker runs what comes due against the fake.

The population, their declines and what they do about them come from one seeded
`random.Random`: a seed and an end time give the same history.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import heapq
import itertools
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask
from sqlalchemy import func, select

from recovery.adapters.clock import FrozenClock
from recovery.adapters.stripe.errors import AuthenticationRequired, CardDeclined
from recovery.adapters.stripe_fake import FakeStripeGateway
from recovery.devtools import history_actions as act
from recovery.devtools import population as pop
from recovery.domain.cases import TERMINAL, CaseStatus
from recovery.models import ActionStatus, DueAction, RecoveryCase
from recovery.runtime import Runtime
from recovery.services.events.inbox import receive_events
from recovery.services.events.sync import sync_from_stripe
from recovery.worker import Worker

log = logging.getLogger(__name__)

DAY = 86_400
HISTORY_DAYS = 182
DAILY_JOBS_HOUR = 6  # UTC
# The worker's daily jobs (the expiry scan) run every 14th simulated day and on the last one.
# A scan plans the notices of renewals up to 45 days ahead, so one every 14 days still plans
# every notice before its first send date; each run reads every subscription (~0.3 s at 300),
# and 182 of them would double the seeding time.
DAILY_JOBS_EVERY = 14
FINAL_WINDOW = 35 * DAY  # every renewal's period event from here on reaches the service
# Renewals failing in the last days are left to their reminders (the customer has not acted
# yet), and these declines are added among them, so a few cases are open at the end.
OPEN_AT_END_DAYS = 10
OPEN_AT_END = (
    "generic_decline",
    "expired_card",
    "insufficient_funds",
    "authentication_required",
)
EXISTING_SHARE = 0.75  # customers who were subscribers before the history starts
CANCEL_FLOW_PER_DAY = 0.0013  # about 4% of active subscribers open the cancel flow a month
# Of the subscribers who accept an offer, some cancel after all within a few weeks: the
# dashboard shows such a save as reversed, not as a save.
SAVE_REVERSED_SHARE = 0.15
# Subscribers who act on an expiring-card notice: most do, as a business using this sees.
EXPIRY_RESPONSE_SHARE = 0.8
# Whatever the dice say, every history has these cancel-flow stories (customer number, script,
# day of the history): one who accepts an offer, one who cancels, one who accepts and cancels
# a week later. Customer 1 is left alone: the demo's banner sends newcomers to its cancel flow.
SCRIPTED_CANCEL_FLOW = ((2, "accept", 40), (3, "cancel", 60), (4, "accept_then_cancel", 80))


@dataclass(frozen=True)
class Decline:
    """A way a renewal fails, with the share of failures it has and what tends to follow.

    `outcomes` weighs: the bank approves a later retry (the card heals), the customer saves a
    new card through a link, the customer pays on the hosted invoice page, nothing (lost).
    Codes as Stripe reports them (docs.stripe.com/declines/codes), with Visa/Mastercard
    response codes (51 funds, 05 do not honor, 54 expired, 14 no such number, 41/43 lost and
    stolen) and Mastercard merchant advice codes (24 retry after an hour, 03 never again).
    """

    name: str
    weight: int
    code: str
    decline_code: str | None
    advice_code: str | None
    network_decline_code: str | None
    mastercard_advice: str | None
    outcomes: tuple[int, int, int, int]
    authenticate: bool = False
    heal_days: tuple[float, float] = (1.0, 10.0)


DECLINES: tuple[Decline, ...] = (
    Decline(
        "insufficient_funds", 30, "card_declined", "insufficient_funds", "try_again_later",
        "51", "24", (55, 10, 8, 27),
    ),
    Decline(
        "generic_decline", 13, "card_declined", "generic_decline", None, "05", None,
        (55, 10, 5, 30),
    ),
    Decline(
        "do_not_honor", 8, "card_declined", "do_not_honor", "try_again_later", "05", None,
        (45, 15, 5, 35),
    ),
    Decline(
        "processing_error", 6, "processing_error", None, None, None, None, (80, 5, 5, 10),
        heal_days=(0.5, 3.0),
    ),
    Decline(
        "expired_card", 10, "expired_card", "expired_card", "confirm_card_data", "54", None,
        (0, 55, 10, 35),
    ),
    Decline(
        "incorrect_number", 3, "incorrect_number", "incorrect_number", None, "14", None,
        (0, 50, 5, 45),
    ),
    Decline(
        "lost_card", 3, "card_declined", "lost_card", "do_not_try_again", "41", "03",
        (0, 40, 5, 55),
    ),
    Decline(
        "stolen_card", 2, "card_declined", "stolen_card", "do_not_try_again", "43", "03",
        (0, 35, 5, 60),
    ),
    Decline(
        "do_not_try_again", 3, "card_declined", "do_not_honor", "do_not_try_again", None, "03",
        (0, 35, 5, 60),
    ),
    # A decline code on the charge. The 3-D Secure variant (authenticate=True: the fake's
    # invoice.payment_action_required) is not played: the service reads its failure code as an
    # unknown soft decline and retries it daily, past max_attempts.
    Decline(
        "authentication_required", 10, "card_declined", "authentication_required",
        None, None, None, (0, 10, 55, 35),
    ),
    Decline(
        "call_issuer", 3, "card_declined", "call_issuer", None, None, None, (30, 25, 10, 35),
    ),
)  # fmt: skip
EXPIRED = next(d for d in DECLINES if d.name == "expired_card")
# The "nothing" weights above, scaled: with them as they are, about a third of the failed
# amount came back over 90 days; recovery services report about half (the range the demo
# should show a newcomer, issue 15).
GIVE_UP_WEIGHT = 0.55
OUTCOMES = ("heal", "link", "hosted", "none")


@dataclass
class Subscriber:
    number: int
    person: pop.Person
    customer_id: str
    subscription_id: str
    risk: float  # chance a renewal fails
    discount_renewals: int = 0
    expiry_decided: set[str] = field(default_factory=set)


@dataclass
class HistoryReport:
    customers: int = 0
    renewals: int = 0
    failed_renewals: int = 0
    declines: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    card_updates: dict[str, int] = field(default_factory=dict)
    cancel_sessions: dict[str, int] = field(default_factory=dict)
    cases: dict[str, int] = field(default_factory=dict)
    events: int = 0
    actions_run: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        cases = ", ".join(f"{n} {s}" for s, n in sorted(self.cases.items()))
        sessions = ", ".join(f"{n} {s}" for s, n in sorted(self.cancel_sessions.items()))
        return (
            f"{self.customers} customers, {self.renewals} renewals, {self.failed_renewals} "
            f"failed; cases: {cases}; cancel sessions: {sessions}; {self.events} Stripe events, "
            f"{self.actions_run} due actions run, in {self.seconds:.1f} s"
        )


class History:
    def __init__(
        self,
        runtime: Runtime,
        fake: FakeStripeGateway,
        clock: FrozenClock,
        *,
        customers: int = 300,
        seed: int = 7,
        end: datetime | None = None,
        days: int = HISTORY_DAYS,
    ) -> None:
        self.rt, self.fake, self.clock = runtime, fake, clock
        self.rng = random.Random(seed)
        self.n_customers = customers
        self.end = (end or datetime.now(UTC)).replace(microsecond=0)
        self.days = days
        self.start = self.end - timedelta(days=days)
        self.worker = Worker(runtime, worker_id="demo-history")
        self.report = HistoryReport()
        self.subscribers: list[Subscriber] = []
        self._queue: list[tuple[int, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._delivered = 0
        self._app: Flask | None = None
        self.bad_cards: dict[str, Decline] = {}  # cards that decline until healed
        # A floor, not a share: at 300 customers a share made a spike of failures in the
        # last week that no real business has.
        self.open_at_end = [next(d for d in DECLINES if d.name == name) for name in OPEN_AT_END]
        self.quiet: set[str] = set()  # routine renewals' invoices and events (see `deliver`)
        self.scripted: set[int] = {1}  # customers in a scripted story (1: the banner's)

    # ---- plumbing ----------------------------------------------------------------------------

    @property
    def now(self) -> int:
        return int(self.clock.now().timestamp())

    def at(self, ts: float, action: Callable[[], None]) -> None:
        """Do `action` at `ts` (unix seconds), if that is before the end of the history."""
        ts = max(int(ts), self.now)
        if ts < self.end.timestamp():
            heapq.heappush(self._queue, (ts, next(self._seq), action))

    def deliver(self) -> int:
        """Send the fake's new events through the real inbox, in order, like webhooks.

        Left out: the invoice events of a renewal paid at its first attempt (its
        customer.subscription.updated and charge.succeeded do go through: the period and the
        customer's payment days are what the service uses from it). They change nothing the
        demo shows and would be a third of all events - and of the seeding time."""
        fresh = [
            e
            for e in self.fake.events[self._delivered :]
            if not (e["type"].startswith("invoice.") and e["data"]["object"]["id"] in self.quiet)
        ]
        self._delivered = len(self.fake.events)
        if fresh:
            bodies = [json.dumps(e).encode() for e in fresh]
            receive_events(self.rt.db, bodies, self.rt.processing_context, self.clock)
        self.report.events += len(fresh)
        return len(fresh)

    def settle(self) -> int | None:
        """Deliver events and run whatever is due now, until neither has anything left.
        Returns when the next due action is due (None: nothing is pending)."""
        self.deliver()
        while (due := self.next_due()) is not None and due <= self.now:
            # The worker ticks every second: what it does lands a second after its cause
            # (the same second would make the mirror ask Stripe which change came last).
            self.clock.advance(timedelta(seconds=1))
            self.report.actions_run += self.worker.run_due_actions()
            self.deliver()
        return due

    def next_due(self) -> int | None:
        """When the earliest pending due action is due (unix seconds, rounded up)."""
        with self.rt.db.transaction() as session:
            due = session.scalar(
                select(func.min(DueAction.due_at)).where(DueAction.status == ActionStatus.PENDING)
            )
        return int(due.timestamp()) + (1 if due.microsecond else 0) if due else None

    def client(self) -> Any:
        if self._app is None:
            from recovery.app import create_app

            # The pages' rate limits are per address, and every simulated customer comes
            # from this one process.
            self._app = create_app(runtime=self.rt, config={"RATELIMIT_ENABLED": False})
        return self._app.test_client()

    # ---- the run -----------------------------------------------------------------------------

    def run(self) -> HistoryReport:
        started = time.perf_counter()
        self.clock.set(self.start)
        self.setup_catalogue()
        existing = int(self.n_customers * EXISTING_SHARE)
        for number in range(existing):
            self.sign_up(number, existing=True)
        # The account had customers before recovery was connected: backfill them the way a
        # business does on its first start (README: `recovery sync`).
        sync_from_stripe(self.rt.db, self.fake, self.clock, progress=False, requests_per_second=1e9)
        for number in range(existing, self.n_customers):
            ts = self.start.timestamp() + self.rng.uniform(1, self.days - 3) * DAY
            self.at(ts, functools.partial(self.sign_up, number, existing=False))
        self.plan_scripted_cancel_flows()
        end = int(self.end.timestamp())
        next_daily = int(self.start.replace(hour=DAILY_JOBS_HOUR, minute=0, second=0).timestamp())
        if next_daily < self.now:
            next_daily += DAY
        day = 0
        while True:
            due = self.settle()  # nothing is due now: the next due action is in the future
            ts = min(end, next_daily, due or end, self._queue[0][0] if self._queue else end)
            if ts >= end:
                break
            self.clock.set(datetime.fromtimestamp(max(ts, self.now), UTC))
            if ts == next_daily:
                if day % DAILY_JOBS_EVERY == 0 or next_daily + DAY >= end:
                    self.worker.run_daily_jobs()
                self.daily()
                next_daily += DAY
                day += 1
            while self._queue and self._queue[0][0] <= self.now:
                _, _, action = heapq.heappop(self._queue)
                action()
                self.deliver()
        self.clock.set(self.end)
        self.settle()
        self.report.seconds = time.perf_counter() - started
        self.count_cases()
        return self.report

    def count_cases(self) -> None:
        with self.rt.db.transaction() as session:
            rows = session.execute(
                select(RecoveryCase.status, func.count()).group_by(RecoveryCase.status)
            ).all()
        self.report.cases = {str(status): int(n) for status, n in rows}
        self.report.customers = len(self.subscribers)

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
        self.at(ts, lambda: self.renew(s))
        self.plan_expiry_response(s, ts)

    def current_card(self, s: Subscriber) -> dict[str, Any] | None:
        sub = self.fake.store["subscription"][s.subscription_id]
        customer = self.fake.store["customer"][s.customer_id]
        pm_id = sub.get("default_payment_method") or customer["invoice_settings"].get(
            "default_payment_method"
        )
        card: dict[str, Any] | None = self.fake.store["payment_method"].get(pm_id or "")
        return card

    @staticmethod
    def card_expires(card: dict[str, Any]) -> int:
        month, year = card["card"]["exp_month"], card["card"]["exp_year"]
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return int(datetime(year, month, 1, tzinfo=UTC).timestamp())

    def renew(self, s: Subscriber) -> None:
        sid = s.subscription_id
        sub = copy.deepcopy(self.fake.store["subscription"][sid])
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
        routine: str | None = None  # the period's event, if it may be left out when paid
        if pause:
            self.fake.resume_subscription(sid, idempotency_key=f"resume:{sid}:{start}")
        else:
            self.fake.add_event("customer.subscription.updated", sub)
            card = self.current_card(s)
            if (
                length < 365 * DAY
                and start + length + FINAL_WINDOW < self.end.timestamp()
                and not (card and self.card_expires(card) <= start + length + FINAL_WINDOW)
            ):
                routine = self.fake.events[-1]["id"]
        amount = int(price["unit_amount"]) * int(sub["items"]["data"][0]["quantity"])
        if s.discount_renewals > 0:
            s.discount_renewals -= 1
            amount = amount * 3 // 4
        invoice = self.fake.add_invoice(s.customer_id, subscription_id=sid, amount_due=amount)
        self.report.renewals += 1
        # Stripe attempts payment about an hour after the renewal invoice is created.
        self.at(self.now + 3600, functools.partial(self.charge_renewal, s, invoice["id"], routine))

    def charge_renewal(self, s: Subscriber, invoice_id: str, routine: str | None) -> None:
        """Stripe's automatic charge of a renewal, failing as the model says."""
        card = self.current_card(s)
        decline: Decline | None = None
        if card is not None and self.card_expires(card) <= self.now:
            decline = EXPIRED
        elif card is not None and card["id"] in self.bad_cards:
            decline = self.bad_cards[card["id"]]  # still bad: paid elsewhere, not replaced
        elif self.rng.random() < s.risk:
            decline = self.rng.choices(DECLINES, weights=[d.weight for d in DECLINES])[0]
        elif self.open_at_end and self.now > self.end.timestamp() - OPEN_AT_END_DAYS * DAY:
            # A few customers who have not acted yet: open cases with reminders still to come.
            decline = self.open_at_end.pop()
        if decline is not None and card is not None:
            self.program_decline(invoice_id, card, decline)
        try:
            self.fake.pay_invoice(invoice_id, idempotency_key=f"renewal:{invoice_id}")
            self.quiet.update((invoice_id, routine) if routine else (invoice_id,))
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
        self.report.outcomes[outcome] = self.report.outcomes.get(outcome, 0) + 1
        if outcome == "heal":
            low, high = decline.heal_days
            self.at(self.now + self.rng.uniform(low, high) * DAY, lambda: self.heal(card))
        elif outcome == "link":
            delay = self.rng.uniform(0.3, 12) * DAY
            self.at(self.now + delay, lambda: self.update_card_for_case(s, invoice_id, 3))
        elif outcome == "hosted":
            delay = self.rng.uniform(0.2, 10) * DAY
            self.at(self.now + delay, lambda: self.pay_hosted(s, invoice_id))

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

    # ---- customers acting --------------------------------------------------------------------

    def case_of(self, invoice_id: str) -> RecoveryCase | None:
        with self.rt.db.transaction() as session:
            return session.scalars(
                select(RecoveryCase).where(RecoveryCase.invoice_id == invoice_id)
            ).one_or_none()

    def fresh_card(self, s: Subscriber) -> pop.CardSpec:
        today = self.clock.now()
        spec = pop.card(self.rng, today.year, today.month, s.person.country)
        if spec.exp_year * 12 + spec.exp_month < today.year * 12 + today.month + 12:
            spec = dataclasses.replace(spec, exp_year=today.year + 3)
        return spec

    def count_update(self, what: str) -> None:
        self.report.card_updates[what] = self.report.card_updates.get(what, 0) + 1

    def update_card_for_case(self, s: Subscriber, invoice_id: str, tries: int) -> None:
        case = self.case_of(invoice_id)
        if case is None or CaseStatus(case.status) in TERMINAL:
            return
        token = act.latest_link(self.rt, case_id=case.id)
        if token is None:  # no email with a link yet: they will look again tomorrow
            if tries > 0:
                self.at(self.now + DAY, lambda: self.update_card_for_case(s, invoice_id, tries - 1))
            return
        result = act.update_card(
            self.client(),
            self.fake,
            token,
            self.fresh_card(s),
            first_card_declines=self.rng.random() < 0.12,
            closes_tab=self.rng.random() < 0.25,
        )
        self.count_update(f"case:{result}")

    def pay_hosted(self, s: Subscriber, invoice_id: str) -> None:
        case = self.case_of(invoice_id)
        if case is None or CaseStatus(case.status) in TERMINAL:
            return
        paid = act.pay_hosted_invoice(self.fake, invoice_id, s.customer_id, self.fresh_card(s))
        self.count_update("hosted_page" if paid else "hosted_page_failed")

    def plan_expiry_response(self, s: Subscriber, renewal: int) -> None:
        """A customer whose card runs out before the renewal may act on the expiry notice."""
        card = self.current_card(s)
        if card is None or card["id"] in s.expiry_decided or self.card_expires(card) > renewal:
            return
        s.expiry_decided.add(card["id"])
        if self.rng.random() < EXPIRY_RESPONSE_SHARE:
            # The notices go out two weeks and a few days before the renewal.
            when = renewal - self.rng.uniform(4, 12) * DAY
            self.at(when, lambda: self.update_expiring_card(s, card["id"], 6))

    def update_expiring_card(self, s: Subscriber, pm_id: str, tries: int) -> None:
        token = act.latest_link(self.rt, about_like=f"expiry:{s.subscription_id}:{pm_id}")
        if token is None:  # no notice yet: they will look again tomorrow
            if tries > 0:
                retry = functools.partial(self.update_expiring_card, s, pm_id, tries - 1)
                self.at(self.now + DAY, retry)
            return
        result = act.update_card(
            self.client(),
            self.fake,
            token,
            self.fresh_card(s),
            first_card_declines=False,
            closes_tab=self.rng.random() < 0.25,
        )
        self.count_update(f"expiry:{result}")

    def daily(self) -> None:
        """Once a day: who opens the cancel flow today."""
        for s in self.subscribers:
            if self.rng.random() >= CANCEL_FLOW_PER_DAY:
                continue
            sub = self.fake.store["subscription"][s.subscription_id]
            if sub["status"] != "active" or sub["cancel_at_period_end"] or sub["pause_collection"]:
                continue
            when = self.now + self.rng.uniform(0, DAY - 60)
            self.at(when, functools.partial(self.cancel_flow, s))

    def plan_scripted_cancel_flows(self) -> None:
        for number, script, day in SCRIPTED_CANCEL_FLOW:
            when = self.start.timestamp() + day * DAY + 11 * 3600
            self.at(when, functools.partial(self.scripted_cancel_flow, number, script))

    def scripted_cancel_flow(self, number: int, script: str) -> None:
        """The scripted story, by the first customer from `number` on who can tell it (an
        active subscription no other story used)."""
        for s in self.subscribers[number:]:
            sub = self.fake.store["subscription"][s.subscription_id]
            if s.number in self.scripted or sub["status"] != "active":
                continue
            if sub["cancel_at_period_end"] or sub["pause_collection"]:
                continue
            self.scripted.add(s.number)
            self.cancel_flow(s, script)
            return

    def cancel_flow(self, s: Subscriber, script: str | None = None) -> None:
        sub = self.fake.store["subscription"][s.subscription_id]
        if sub["status"] != "active" or sub["cancel_at_period_end"]:
            return
        decide = "accept" if script == "accept_then_cancel" else script
        outcome = act.walk_cancel_flow(
            self.rt,
            self.rng,
            s.customer_id,
            s.subscription_id,
            s.person.locale.split(","),
            script=decide,
        )
        if outcome == "saved_by_discount":
            s.discount_renewals = 3
        self.report.cancel_sessions[outcome] = self.report.cancel_sessions.get(outcome, 0) + 1
        saved = outcome.startswith("saved_by_")
        if saved and (script == "accept_then_cancel" or (
            script is None and self.rng.random() < SAVE_REVERSED_SHARE
        )):  # fmt: skip
            later = self.now + self.rng.uniform(2, 20) * DAY
            self.at(later, functools.partial(self.cancel_after_all, s))

    def cancel_after_all(self, s: Subscriber) -> None:
        """A subscriber who accepted an offer comes back and cancels: the save is reversed."""
        sub = self.fake.store["subscription"][s.subscription_id]
        if sub["status"] == "canceled" or sub["cancel_at_period_end"]:
            return
        outcome = act.walk_cancel_flow(
            self.rt,
            self.rng,
            s.customer_id,
            s.subscription_id,
            s.person.locale.split(","),
            script="cancel",
        )
        key = f"later {outcome}"
        self.report.cancel_sessions[key] = self.report.cancel_sessions.get(key, 0) + 1
