"""Outage drill (issue 7, drill 2): providers fail for a while; everything goes out once they
are back, the backoff shows (attempts and the gaps between them grow), nothing is doubled.

- SMTP: the aiosmtpd sink is stopped for one simulated hour while the day-0 reminders fall due,
  then started again on the same port.
- Twilio: the fake answers 500 to a burst of requests while texts fall due.
- Stripe: 429 and 500 bursts (FakeStripeGateway.outage) while our retries fall due.

Each runs the real worker on a frozen clock that jumps from due moment to due moment; every
attempt is recorded from the due-actions table, so the test sees exactly what the dashboard and
GET /api/v1/cases/<id> show (attempts, last error, next attempt).
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from recovery.adapters.clock import FrozenClock
from recovery.adapters.stripe_fake import FakeStripeGateway
from recovery.models import ActionStatus, DueAction, MessageStatus, OutboxMessage
from recovery.runtime import Runtime
from recovery.services.cases import log as case_log
from recovery.services.messaging.outbox import SEND_KIND
from tests.support.messaging import messaging_runtime, with_phone
from tests.support.scenario import Billing, Story
from tests.support.smtp_sink import SmtpSink, _free_port
from tests.support.twilio_fake import TwilioFake, twilio_fake

N_CUSTOMERS = 6
OUTAGE = timedelta(hours=1)


class Attempts:
    """Each due action's attempts as the worker made them: the simulated times, the errors."""

    def __init__(self, rt: Runtime, kinds: tuple[str, ...]) -> None:
        self.rt, self.kinds = rt, kinds
        self.times: dict[str, list[datetime]] = collections.defaultdict(list)
        self.errors: dict[str, list[str]] = collections.defaultdict(list)
        self._seen: dict[str, int] = {}

    def note(self, now: datetime) -> None:
        with self.rt.db.transaction() as s:
            rows = s.scalars(select(DueAction).where(DueAction.kind.in_(self.kinds))).all()
            for row in rows:
                if row.attempts > self._seen.get(row.dedupe_key, 0):
                    self._seen[row.dedupe_key] = row.attempts
                    self.times[row.dedupe_key].append(now)
                    if row.last_error:
                        self.errors[row.dedupe_key].append(row.last_error)

    def gaps(self, key: str) -> list[float]:
        times = self.times[key]
        return [(b - a).total_seconds() for a, b in itertools.pairwise(times)]


def _walk(story: Story, attempts: Attempts, until: datetime, kind_prefix: str) -> None:
    """Run every action of `kind_prefix` (and whatever else is due) up to `until`."""
    while True:
        due = story.next_due(kind_prefix)
        if due is None or due > until:
            return
        if due > story.clock.now():
            story.clock.set(due)
        story.run_due()
        attempts.note(story.clock.now())


def _assert_backoff_grows(attempts: Attempts, keys: list[str], at_least: int) -> None:
    for key in keys:
        gaps = attempts.gaps(key)
        assert len(attempts.times[key]) >= at_least, (key, attempts.times[key])
        # Doubling with +-20 % jitter: each gap is at least 2 * 0.8 / 1.2 = 1.33 x the last,
        # until the 6 h cap (less its jitter) is reached.
        capped = 6 * 3600 * 0.8
        assert all(b > a * 1.3 or b >= capped for a, b in itertools.pairwise(gaps)), (key, gaps)


def _customers(story: Story, n: int, **kwargs: Any) -> list[Billing]:
    out = []
    for _ in range(n):
        story.clock.advance(timedelta(seconds=10))
        out.append(story.customer(country="DE", **kwargs))
    return out


def _messages(rt: Runtime, channel: str) -> list[OutboxMessage]:
    with rt.db.transaction() as s:
        return list(
            s.scalars(
                select(OutboxMessage)
                .where(OutboxMessage.channel == channel)
                .order_by(OutboxMessage.id)
            )
        )


@pytest.fixture
def sink() -> Iterator[tuple[SmtpSink, list[Controller]]]:
    """An SMTP sink the test can stop and start again on the same port."""
    box = SmtpSink(port=_free_port())
    controllers = [Controller(box, hostname="127.0.0.1", port=box.port)]
    controllers[0].start()
    yield box, controllers
    if controllers[-1].loop.is_running():
        controllers[-1].stop()


@pytest.mark.parametrize("outage", [OUTAGE, timedelta(days=1)], ids=["an_hour", "a_day"])
def test_smtp_down_for_an_hour_every_email_goes_out_once_afterwards(
    outage: timedelta,
    database_url: str,
    tmp_path: Path,
    clock: FrozenClock,
    fake_gateway: FakeStripeGateway,
    sink: tuple[SmtpSink, list[Controller]],
) -> None:
    box, controllers = sink
    rt = messaging_runtime(database_url, tmp_path, clock, fake_gateway, smtp_url=box.url)
    story = Story(rt, fake_gateway, clock)
    controllers[0].stop()  # the mail server goes away before the morning's reminders
    down_at = clock.now()
    billings = _customers(story, N_CUSTOMERS)
    for billing in billings:
        story.stripe_charges(billing.invoice, decline_code="insufficient_funds")
    attempts = Attempts(rt, (SEND_KIND,))
    story.run_due()
    attempts.note(clock.now())
    _walk(story, attempts, down_at + outage, SEND_KIND)

    during = [m for m in _messages(rt, "email") if m.send_after <= down_at + outage]
    assert len(during) == N_CUSTOMERS and box.messages == []  # the day-0 reminders
    assert all(m.status == MessageStatus.PENDING for m in during)
    keys = sorted(attempts.times)
    _assert_backoff_grows(attempts, keys, at_least=5)
    assert all("SMTP unavailable" in attempts.errors[k][-1] for k in keys)
    with rt.db.transaction() as s:  # the next attempt is planned, its error kept for the UI
        pending = s.scalars(select(DueAction).where(DueAction.dedupe_key.in_(keys))).all()
        assert {a.status for a in pending} == {ActionStatus.PENDING}
        assert all(a.due_at > down_at + outage and a.last_error for a in pending)

    controllers.append(Controller(box, hostname="127.0.0.1", port=box.port))
    controllers[-1].start()  # back up after the outage
    _walk(story, attempts, down_at + outage + timedelta(hours=8), SEND_KIND)

    sent = [m for m in _messages(rt, "email") if m.id in {d.id for d in during}]
    assert [m.status for m in sent] == [MessageStatus.SENT] * N_CUSTOMERS
    ids = [str(m["Message-ID"]) for m in box.messages]
    assert len(ids) == N_CUSTOMERS == len(set(ids))  # each delivered once
    assert sorted(to for _, (to,) in box.envelopes) == sorted(m.recipient for m in sent)
    assert all(m.sent_at is not None and m.sent_at > down_at + outage for m in sent)
    print(
        f"SMTP down {outage}: {N_CUSTOMERS} emails, attempts per email "
        f"{sorted(len(t) for t in attempts.times.values())}, gaps (s) {attempts.gaps(keys[0])}"
    )


def test_twilio_answering_500_every_text_goes_out_once_afterwards(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: FakeStripeGateway
) -> None:
    with twilio_fake() as twilio:
        _twilio_outage(database_url, tmp_path, clock, fake_gateway, twilio)


def _twilio_outage(
    database_url: str,
    tmp_path: Path,
    clock: FrozenClock,
    fake_gateway: FakeStripeGateway,
    twilio: TwilioFake,
) -> None:
    rt = messaging_runtime(database_url, tmp_path, clock, fake_gateway, twilio_url=twilio.url)
    story = Story(rt, fake_gateway, clock)
    billings = _customers(story, N_CUSTOMERS)
    for i, billing in enumerate(billings):
        with_phone(story, billing, phone=f"+4915112345{i:03d}")
        # A card that must be replaced: the sequence texts on day 1.
        story.stripe_charges(billing.invoice, decline_code="expired_card")
    attempts = Attempts(rt, (SEND_KIND,))
    first_sms = min(m.send_after for m in _messages(rt, "sms"))
    _walk(story, attempts, first_sms - timedelta(seconds=1), SEND_KIND)
    burst = N_CUSTOMERS * 5  # five failed answers per text, as a burst across all of them
    for _ in range(burst):
        twilio.fail_next(500, 20500)  # Twilio's "internal server error"
    _walk(story, attempts, first_sms + timedelta(days=1), SEND_KIND)

    texts = _messages(rt, "sms")
    assert len(texts) == N_CUSTOMERS
    assert [m.status for m in texts] == [MessageStatus.SENT] * N_CUSTOMERS
    posts = [r for r in twilio.requests if r["method"] == "POST"]
    assert len(posts) == burst + N_CUSTOMERS  # every failed answer, then one success each
    per_number = collections.Counter(m["to"] for m in twilio.messages)
    assert sorted(per_number) == sorted(m.recipient for m in texts)
    assert set(per_number.values()) == {1}  # nothing doubled
    sms_keys = [k for k in attempts.times if any(k == f"outbox:{m.dedupe_key}" for m in texts)]
    assert len(sms_keys) == N_CUSTOMERS
    _assert_backoff_grows(attempts, sms_keys, at_least=5)
    assert all("Twilio 500" in attempts.errors[k][0] for k in sms_keys)


@pytest.mark.parametrize("kind", ["rate_limit", "server_error"])
def test_stripe_429_and_500_bursts_each_retry_charges_once_afterwards(
    database_url: str,
    tmp_path: Path,
    clock: FrozenClock,
    fake_gateway: FakeStripeGateway,
    kind: str,
) -> None:
    rt = messaging_runtime(database_url, tmp_path, clock, fake_gateway)
    story = Story(rt, fake_gateway, clock)
    billings = _customers(story, N_CUSTOMERS)
    for billing in billings:
        story.stripe_charges(billing.invoice, decline_code="generic_decline")
    attempts = Attempts(rt, (case_log.RETRY_KIND,))
    first_retry = story.next_due(case_log.RETRY_KIND)
    assert first_retry is not None
    _walk(story, attempts, first_retry - timedelta(seconds=1), "outbox.")
    burst = N_CUSTOMERS * 4  # four failed calls per retry, across all of them
    # On the charge itself: refused before it is made (a 500 after the charge is the crash
    # drill's business - the same key replays the first answer).
    fake_gateway.outage(burst, kind, methods={"pay_invoice"})
    _walk(story, attempts, first_retry + timedelta(hours=6), case_log.RETRY_KIND)

    for billing in billings:
        case = story.case(billing.invoice)
        assert (case.status, case.recovered_via, case.our_attempts) == (
            "recovered",
            "our_retry",
            1,
        )
        invoice = fake_gateway.store["invoice"][billing.invoice]
        assert invoice["attempt_count"] == 2  # Stripe's renewal, then our one retry
    pays = [r.idempotency_key for r in fake_gateway.requests if r.method == "pay_invoice"]
    keys = [k for k in pays if k and k.startswith("case:")]
    assert len(set(keys)) == N_CUSTOMERS  # one key per retry, whatever was replayed
    retry_keys = sorted(attempts.times)
    assert sum(len(attempts.times[k]) - 1 for k in retry_keys) == burst  # every refusal retried
    _assert_backoff_grows(attempts, retry_keys, at_least=3)
    expected = "RateLimited" if kind == "rate_limit" else "Unavailable"
    assert all(attempts.errors[k] and expected in attempts.errors[k][0] for k in retry_keys)
