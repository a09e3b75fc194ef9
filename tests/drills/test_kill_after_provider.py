"""Drill: the worker is SIGKILLed right after a provider accepted its call and before the
outcome was recorded - the window the three-step actions leave between `call` and `record`.

One customer's month (a declined renewal, our first retry declined, the second paid; a phone
number, so reminders go by email and SMS) is run by a worker process (tests/support/
crash_worker.py) against Stripe, SMTP and Twilio stand-ins that outlive it. The stand-in kills
the worker the moment it accepted the chosen call. A fresh worker takes the action over once the
lease ran out, and the month ends as it must:
- Stripe: no double charge - the re-run sends the same idempotency key, Stripe replays its
  first answer (`attempt_count` is the renewal plus our two retries), and the case is recovered
  by our retry;
- email: at most the same message again, with the same Message-ID, subject and text;
- SMS: never twice - before a second attempt the worker asks Twilio what it already sent.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from recovery.adapters.clock import FrozenClock
from recovery.models import MessageStatus
from tests.conftest import START
from tests.support import dunning_month as dm
from tests.support.crash_worker import (
    GatewayServer,
    Killer,
    WorkerConfig,
    WorkerProcess,
    killing_smtp_sink,
    killing_twilio_fake,
)
from tests.support.messaging import messages, messaging_runtime, with_phone

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("kind", "nth"),
    [("stripe.pay_invoice", 1), ("stripe.pay_invoice", 2), ("smtp", 1), ("twilio", 1)],
    ids=["declined-charge", "paid-charge", "email", "sms"],
)
def test_killed_between_the_call_and_its_record(
    database_url: str, tmp_path: Path, kind: str, nth: int
) -> None:
    clock = FrozenClock(START)
    rt = messaging_runtime(database_url, tmp_path, clock, None)
    story = dm.new_story(rt, clock, START)
    billing = story.customer(country="DE")
    with_phone(story, billing, phone="+4915112345678")
    story.fake.fail_next_payment(billing.invoice, "insufficient_funds", times=2)
    story.stripe_charges(billing.invoice)  # Stripe's renewal declines; our first retry will too
    story.deliver()

    killer = Killer()
    with (
        GatewayServer(story.fake, killer) as stripe,
        killing_smtp_sink(killer) as sink,
        killing_twilio_fake(killer, clock) as twilio,
    ):
        config = WorkerConfig(database_url, str(tmp_path), stripe.url, sink.url, twilio.url, START)
        proc = WorkerProcess(config, killer)
        killer.kind = kind

        def step(_now: object) -> None:
            if killer.kind is not None:  # armed until it fires: the nth of the whole month
                killer.at = nth - killer.total.get(kind, 0)
            proc.step(clock.now())

        try:
            dm.run_month(story, START + dm.MONTH, step)
        finally:
            proc.close()
        emails = [(str(m["Message-ID"]), str(m["Subject"]), m.get_content()) for m in sink.messages]
        texts = [(m["to"], m["body"]) for m in twilio.messages]

    assert [k for k, _ in killer.kills] == [kind], killer.kills
    assert proc.started == 2  # the killed worker and the one that took over
    case = story.case(billing.invoice)
    assert (case.status, case.recovered_via, case.our_attempts) == ("recovered", "our_retry", 2)
    # No double charge: the renewal, our declined retry, our paid retry.
    assert story.fake.store["invoice"][billing.invoice]["attempt_count"] == 3
    pays = collections.Counter(
        r.idempotency_key for r in story.fake.requests if r.method == "pay_invoice"
    )
    replayed = [key for key, n in pays.items() if n > 1]
    assert len(replayed) == (1 if kind.startswith("stripe") else 0)
    # Email: every message recorded sent arrived; a copy only of the one in flight, identical.
    sent = messages(rt, channel="email", status=MessageStatus.SENT)
    assert {m.provider_id for m in sent} == {mid for mid, _, _ in emails}
    copies = len(emails) - len({mid for mid, _, _ in emails})
    assert copies <= (1 if kind == "smtp" else 0)
    by_id = collections.defaultdict(set)
    for mid, subject, body in emails:
        by_id[mid].add((subject, body))
    assert all(len(versions) == 1 for versions in by_id.values())
    # SMS: each text exactly once, and recorded sent.
    assert texts and len(set(texts)) == len(texts)
    assert len(messages(rt, channel="sms", status=MessageStatus.SENT)) == len(texts)
    rt.db.dispose()
