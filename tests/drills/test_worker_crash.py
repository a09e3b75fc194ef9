"""Crash drill (issue 7, drill 1): a month of dunning while the worker process is SIGKILLed at
random moments ends exactly as the same month run without a single kill.

Design (README "Drills"):
- One population of failed renewals is seeded once (tests/support/dunning_month.py) and copied:
  the database file / a PostgreSQL template, and the Stripe fake's state. Two runs start from
  the copies: the reference, and the crash run. Both drive the real worker in a separate
  process (tests/support/crash_worker.py) through the same steps: the test walks a frozen clock
  from due moment to due moment; at each, the worker process runs until idle, then Stripe's
  events caused by its calls are delivered as webhooks would.
- Stripe (the in-memory fake behind a loopback HTTP endpoint), the SMTP sink and the Twilio fake
  live in the test process, so they outlive every kill, like the real services do.
- Kills: N moments drawn with a seeded RNG over the reference run's steps, each either at a
  random SQL statement of the step (mid-transaction) or right after Stripe / SMTP / Twilio
  accepted a write and before the worker hears back - the window where a retry would charge or
  send twice. A fresh worker process (forked from a preloaded forkserver) takes over; the dead
  one's claims come back when their lease runs out. Simulated time stands still while a step
  runs, so the lease is one simulated second: that is all the delay a kill adds.
- Compared: every case's end (status, reason, how recovered, amount, attempts, timeline kinds,
  each message and its status), Stripe's charges per invoice and the set of idempotency keys,
  every email by Message-ID, every SMS.

Email over SMTP is at-least-once by design (recovery/services/outbox.py): a kill after the SMTP
server's 250 and before our commit re-sends the message with the same Message-ID, so a
receiver can drop the copy. The drill counts such copies: at most one per kill, each the same
message (Message-ID, subject, text).

Sizes: RECOVERY_DRILL_CUSTOMERS (default 24) and RECOVERY_DRILL_KILLS (default 8) in CI;
the issue's size is RECOVERY_DRILL_CUSTOMERS=1000 RECOVERY_DRILL_KILLS=50. Figures go to
artifacts/crash_drill_<engine>.txt.
"""

from __future__ import annotations

import collections
import copy
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, make_url, select, text
from sqlalchemy.pool import NullPool

from recovery.adapters.clock import FrozenClock
from recovery.adapters.email import message_id
from recovery.adapters.stripe_fake import FakeStripeGateway
from recovery.migrate import upgrade
from recovery.models import MessageStatus, OutboxMessage
from recovery.runtime import Runtime
from recovery.services.cases import log as case_log
from recovery.services.cases import scheduling as case_scheduling
from recovery.services.work import due_actions
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
from tests.support.messaging import messaging_runtime
from tests.support.scenario import Story

ROOT = Path(__file__).resolve().parents[2]
N_CUSTOMERS = int(os.environ.get("RECOVERY_DRILL_CUSTOMERS", "24"))
N_KILLS = int(os.environ.get("RECOVERY_DRILL_KILLS", "8"))
SEED = 20_261_102
# Where a kill lands, when the step offers it (the statement kind always does).
KILL_WEIGHTS = {"statement": 0.45, "stripe": 0.3, "smtp": 0.15, "twilio": 0.1}


@dataclass
class Seeded:
    engine: str
    clone: Callable[[str], str]  # name -> URL of a fresh copy of the seeded database
    fake: FakeStripeGateway
    now: datetime
    tmp: Path


@pytest.fixture(params=["sqlite", "postgres"])
def seeded(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Seeded]:
    """The month's population, seeded once; copies of its database for each run."""
    if request.param == "sqlite":
        seed_path = tmp_path / "seed.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), seed_path)
        seed_url = f"sqlite:///{seed_path}"

        def clone(name: str) -> str:
            shutil.copy(seed_path, tmp_path / f"{name}.db")
            return f"sqlite:///{tmp_path / name}.db"

    else:
        server = request.getfixturevalue("postgres_server")
        seed_url = server.create_database("crash_seed")
        upgrade(seed_url)

        def clone(name: str) -> str:
            seed = make_url(seed_url)
            admin = create_engine(
                seed.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool
            )
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE crash_seed'))
            admin.dispose()
            return seed.set(database=name).render_as_string(hide_password=False)

    clock = FrozenClock(START)
    rt = messaging_runtime(seed_url, tmp_path, clock, None)
    story = dm.new_story(rt, clock, START)
    dm.seed_population(story, N_CUSTOMERS, SEED)
    rt.db.dispose()
    yield Seeded(request.param, clone, story.fake, clock.now(), tmp_path)


@dataclass
class Run:
    rt: Runtime
    story: Story
    outcomes: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    actions: dict[str, str] = field(default_factory=dict)
    steps: list[tuple[int, dict[str, int]]] = field(default_factory=list)  # statements, effects
    emails: list[str] = field(default_factory=list)
    email_texts: dict[str, list[str]] = field(default_factory=dict)  # Message-ID -> copies
    sms: list[tuple[str, str]] = field(default_factory=list)
    kills: list[tuple[str, int]] = field(default_factory=list)
    workers_started: int = 0
    actions_run: int = 0
    seconds: float = 0.0


def _run_month(seeded: Seeded, name: str, plan: dict[int, tuple[str, int]] | None = None) -> Run:
    """One month from the seeded state in worker processes; with `plan` ({step: (kind, n)}),
    the worker is killed at those moments."""
    url = seeded.clone(name)
    clock = FrozenClock(seeded.now)
    fake = copy.deepcopy(seeded.fake, {id(seeded.fake.clock): clock})
    fake.clock = clock
    rt = messaging_runtime(url, seeded.tmp, clock, fake)
    story = Story(rt, fake, clock)
    story._delivered = len(fake.events)  # the seed's events were delivered when seeding
    run = Run(rt, story)
    killer = Killer()
    rng = random.Random(SEED + 1)
    started = time.perf_counter()
    with (
        GatewayServer(fake, killer) as stripe,
        killing_smtp_sink(killer) as sink,
        killing_twilio_fake(killer, clock) as twilio,
    ):
        config = WorkerConfig(url, str(seeded.tmp), stripe.url, sink.url, twilio.url, seeded.now)
        proc = WorkerProcess(config, killer)
        # Kills waiting for their moment, in order: one that did not come up in its step (the
        # run differs from the reference after a kill) lands in the next, ahead of later ones.
        queue: collections.deque[tuple[str, int]] = collections.deque()

        def step(now: datetime) -> None:
            index = len(run.steps)
            if plan is not None and index in plan:
                queue.append(plan[index])
            kill_at = 0
            if queue:
                kind, at = queue[0]
                if kind == "statement":
                    kill_at = at
                else:
                    killer.kind, killer.at = kind, at
            before = len(killer.kills)
            result = proc.step(now, kill_at)
            if len(killer.kills) > before:
                queue.popleft()
                killer.kind = None
            elif queue:  # it did not come up in this step: at a statement of the next one
                queue[0] = ("statement", rng.randint(1, 30))
                killer.kind = None
            statements, ran = 0, 0
            if result is not None:
                ran, statements = result
            run.actions_run += ran
            run.steps.append((statements, dict(killer.seen)))

        try:
            dm.run_month(story, START + dm.MONTH, step)
        finally:
            proc.close()
        run.seconds = time.perf_counter() - started
        run.kills = list(killer.kills)
        run.workers_started = proc.started
        run.emails = sink.message_ids()
        for message in sink.messages:
            body = message.get_body()
            text = f"{message['Subject']}\n{body.get_content() if body is not None else ''}"
            run.email_texts.setdefault(str(message["Message-ID"]), []).append(text)
        run.sms = [(m["to"], m["body"]) for m in twilio.messages]
    run.outcomes = dm.case_outcomes(rt)
    run.actions = dm.action_outcomes(rt)
    return run


def kill_plan(reference: Run, n: int, seed: int) -> dict[int, tuple[str, int]]:
    """n distinct steps of the reference month (not its last tenth, so each kill has work to
    land in), each with a moment inside it: a statement, or the k-th effect of a provider."""
    rng = random.Random(seed)
    busy = [i for i, (statements, _) in enumerate(reference.steps) if statements]
    busy = busy[: max(int(len(busy) * 0.9), min(n, len(busy)))]
    plan = {}
    for index in sorted(rng.sample(busy, min(n, len(busy)))):
        statements, effects = reference.steps[index]
        offered = {"statement": statements, **{k: v for k, v in effects.items() if v}}
        kinds = [k for k in KILL_WEIGHTS if offered.get(k)]
        kind = rng.choices(kinds, [KILL_WEIGHTS[k] for k in kinds])[0]
        plan[index] = (kind, rng.randint(1, offered[kind]))
    return plan


def _sent_email_ids(rt: Runtime, sender: str) -> set[str]:
    with rt.db.transaction() as s:
        keys = s.scalars(
            select(OutboxMessage.dedupe_key).where(
                OutboxMessage.channel == "email", OutboxMessage.status == MessageStatus.SENT
            )
        ).all()
    return {message_id(k, sender) for k in keys}


def _timed(action_key: str) -> bool:
    return ":at:" in action_key or action_key.startswith("refetch:")


def _first_differences(a: dict[str, Any], b: dict[str, Any], limit: int = 5) -> list[str]:
    keys = sorted(set(a) | set(b))
    return [f"{k}: {a.get(k)} != {b.get(k)}" for k in keys if a.get(k) != b.get(k)][:limit]


@pytest.mark.slow
def test_worker_killed_at_random_moments_ends_the_month_as_an_uninterrupted_run(
    seeded: Seeded,
) -> None:
    reference = _run_month(seeded, "crash_reference")
    plan = kill_plan(reference, N_KILLS, SEED)
    crashed = _run_month(seeded, "crash_run", plan)

    ref_stripe, crash_stripe = (
        dm.stripe_effects(reference.story.fake),
        dm.stripe_effects(crashed.story.fake),
    )
    replays = sum(c - 1 for c in crash_stripe.values())
    email_copies = len(crashed.emails) - len(set(crashed.emails))
    kills = collections.Counter(kind for kind, _ in crashed.kills)
    statuses = collections.Counter(o[0] for o in reference.outcomes.values())
    report = (
        f"crash drill on {seeded.engine}: {N_CUSTOMERS} customers, one month, "
        f"{len(crashed.kills)} SIGKILLs of the worker process ({dict(kills)})\n"
        f"  reference: {len(reference.steps)} steps, {reference.actions_run} actions, "
        f"{reference.seconds:.1f} s; crash run: {len(crashed.steps)} steps, "
        f"{crashed.actions_run} actions (incl. re-runs), {crashed.workers_started} worker "
        f"processes, {crashed.seconds:.1f} s\n"
        f"  cases {dict(statuses)}; Stripe writes {len(ref_stripe)} keys, "
        f"{sum(dm.charges_per_invoice(reference.story.fake).values())} charges; "
        f"replayed keys after kills {replays}\n"
        f"  emails {len(set(reference.emails))} (copies with the same Message-ID after "
        f"kills: {email_copies}); SMS {len(reference.sms)}\n"
    )
    print(report)
    if os.environ.get("RECOVERY_DRILL_DUMP"):
        Path(os.environ["RECOVERY_DRILL_DUMP"]).write_text(
            "\n".join(
                f"{k}\n  ref   {reference.outcomes.get(k)}\n  crash {crashed.outcomes.get(k)}"
                for k in sorted(reference.outcomes)
            )
            + f"\nkills {crashed.kills}\nplan {plan}\n"
        )
    (ROOT / "artifacts").mkdir(exist_ok=True)
    (ROOT / "artifacts" / f"crash_drill_{seeded.engine}.txt").write_text(report)

    assert len(crashed.kills) == min(N_KILLS, len(plan)) and len(plan) == N_KILLS
    # Every case ends as in the uninterrupted month: status, reason, amounts, attempts, its
    # timeline, and each of its messages with its final status.
    assert crashed.outcomes == reference.outcomes, _first_differences(
        crashed.outcomes, reference.outcomes
    )
    # Every due action ends as it did (keys that embed a time - a deferral, a re-fetch - are
    # left out: a lease's delay changes the time), and no claim is left running.
    assert "running" not in crashed.actions.values()
    timeless = {k: v for k, v in crashed.actions.items() if not _timed(k)}
    ref_timeless = {k: v for k, v in reference.actions.items() if not _timed(k)}
    assert timeless == ref_timeless, _first_differences(timeless, ref_timeless)
    # No retry charged twice: the same idempotency keys, the same charges on every invoice.
    assert set(crash_stripe) == set(ref_stripe)
    assert dm.charges_per_invoice(crashed.story.fake) == dm.charges_per_invoice(
        reference.story.fake
    )
    # No message lost or doubled: every email by its Message-ID, every SMS exactly once.
    sender = crashed.rt.settings.mail_from or crashed.rt.rules.business.sender_email
    assert set(crashed.emails) == set(reference.emails) == _sent_email_ids(crashed.rt, sender)
    assert len(reference.emails) == len(set(reference.emails))
    # A copy needs a kill between the SMTP server's 250 and our commit: after the provider
    # answered (an "smtp" kill) or at one of the send's last statements. The copy is the same
    # message: same Message-ID, subject and text.
    assert email_copies <= len(crashed.kills)
    assert all(len(set(texts)) == 1 for texts in crashed.email_texts.values())
    assert sorted(crashed.sms) == sorted(reference.sms)
    assert len(set(crashed.sms)) == len(crashed.sms)
    crashed.rt.db.dispose()
    reference.rt.db.dispose()


# ---- the bug this drill found: a re-run retry credited its own payment to someone else --------


@pytest.mark.parametrize("webhook_first", [True, False], ids=["webhook-first", "rerun-first"])
def test_a_retry_rerun_after_a_crash_claims_the_payment_it_made(
    runtime: Runtime, fake_gateway: FakeStripeGateway, clock: FrozenClock, webhook_first: bool
) -> None:
    """A worker dies after Stripe took our retry's payment and before its commit. The re-run
    must learn from Stripe (same idempotency key) that the payment was ours: recovered by our
    retry, one attempt, one charge - not "paid on the hosted invoice page"."""
    story = Story(runtime, fake_gateway, clock)
    billing = story.customer()
    story.stripe_charges(billing.invoice, decline_code="insufficient_funds")
    case = story.case(billing.invoice)
    retry = next(a for a in story.pending(case.id) if a.kind == case_log.RETRY_KIND)
    clock.set(retry.due_at)
    claimed = due_actions.claim(runtime.db, "doomed", clock.now(), 50, timedelta(seconds=1))
    action = next(a for a in claimed if a.id == retry.id)
    # What the dead worker got done: Stripe charged the card under the retry's key.
    fake_gateway.pay_invoice(
        billing.invoice,
        idempotency_key=case_scheduling.stripe_key(action.dedupe_key, action.payload),
    )
    if webhook_first:
        story.deliver()  # invoice.paid reaches us before the re-run
    clock.advance(timedelta(seconds=2))  # the dead worker's lease runs out
    story.run_due()

    case = story.case(billing.invoice)
    assert (case.status, case.recovered_via, case.our_attempts) == ("recovered", "our_retry", 1)
    assert fake_gateway.store["invoice"][billing.invoice]["attempt_count"] == 2  # renewal + ours
