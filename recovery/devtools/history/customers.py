"""What the simulated customers do: replace a card through a link (for a failed payment or an
expiring card), pay on the hosted invoice page, open the cancel flow."""

from __future__ import annotations

import dataclasses
import functools
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from recovery.devtools import history_actions as act
from recovery.devtools import population as pop
from recovery.devtools.history.model import (
    CANCEL_FLOW_PER_DAY,
    DAY,
    EXPIRY_RESPONSE_SHARE,
    SAVE_REVERSED_SHARE,
    SCRIPTED_CANCEL_FLOW,
    Subscriber,
)
from recovery.devtools.history.simulation import Simulation
from recovery.domain.cases import TERMINAL, CaseStatus
from recovery.models import RecoveryCase


class CustomersActing(Simulation):
    # ---- their cards -------------------------------------------------------------------------

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
