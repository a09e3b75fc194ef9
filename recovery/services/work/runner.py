"""A worker's due actions at full speed: claim and decide a batch in one transaction, call the
providers on a pool of threads with no transaction open, record the outcomes in the
transaction that claims the next round (`ActionRunner.drain`). On PostgreSQL several such loops
("lanes") run at once, each on its own connection, sharing the pool: one loop spends most of
its time waiting on database round trips, which the others fill."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import timedelta

from sqlalchemy.orm import Session

from recovery.db import take_writers_turn
from recovery.runtime import Claimed, Runtime
from recovery.services.work.claims import DEFAULT_LEASE, claim_in, holds_lease
from recovery.services.work.steps import Called, Decided, call, decide_all, record_all

# The longest a finished call waits for others before a round records it (`_gather`): far
# inside any lease, and short beside a provider's own answer time.
GATHER_FOR = 0.05
# Actions claimed, decided and recorded together. 100, not 50: a round's statements cost about
# the same for 50 rows as for 100, and at 50 the worker ran 1,319-1,442 actions/s against
# 1,578-1,738 at 100 and 1,528-1,806 at 200 (bench/worker_throughput.py --actions 16000
# --workers 2, two or three runs each). A lost worker's claimed actions wait for their lease.
DEFAULT_BATCH = 100


class ActionRunner:
    """Runs due actions for one worker: claims and decides in batches, calls providers on a
    pool of `threads` threads (none open a transaction), records outcomes in batches.

    Actions about one subject run one at a time in due order (a case's retry and its reminder
    never race); the next waits, claimed, until the one before it is recorded. With one thread
    the calls run in the caller's thread, in order.

    With `loops` > 1 on PostgreSQL, `drain` runs that many claim/decide/record loops at once,
    each claiming only the subjects that hash to its lane (so a subject stays with one loop);
    SQLite has one writer, so it always runs one.
    """

    def __init__(
        self,
        runtime: Runtime,
        owner: str,
        *,
        threads: int | None = None,
        batch_size: int = DEFAULT_BATCH,
        lease: timedelta = DEFAULT_LEASE,
        loops: int | None = None,
    ) -> None:
        self.runtime, self.owner = runtime, owner
        self.threads = max(1, threads if threads is not None else runtime.settings.worker_threads)
        wanted = loops if loops is not None else runtime.settings.worker_loops
        self.loops = max(1, wanted) if runtime.db.is_postgres else 1
        self.batch_size = batch_size
        self.lease = lease
        self._pool: _CallPool | None = None
        self._lock = threading.Lock()  # the pool and the counts, shared by the loops
        self._statuses: dict[str, int] = {}

    @property
    def statuses(self) -> dict[str, int]:
        """How the actions run so far ended (done, pending again, failed, lease_lost)."""
        return dict(self._statuses)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown()

    def _count(self, status: str) -> None:
        with self._lock:
            self._statuses[status] = self._statuses.get(status, 0) + 1

    def _call_pool(self) -> _CallPool:
        with self._lock:
            if self._pool is None:
                self._pool = _CallPool(self.threads)
            return self._pool

    def _decide_all(
        self, session: Session, actions: Sequence[Claimed], fresh: set[int]
    ) -> list[Decided]:
        held = []
        for action in actions:
            if action.id not in fresh and not holds_lease(session, action, self.owner):
                self._count("lease_lost")  # waited behind its subject past the lease
                continue
            held.append(action)
        decided = []
        for result in decide_all(self.runtime, session, held, self.owner):
            if isinstance(result, Decided):
                decided.append(result)
            else:
                self._count(result)
        return decided

    def _record_in(self, session: Session, calls: Sequence[Called]) -> list[str]:
        return record_all(self.runtime, session, calls, self.owner)

    def drain(self) -> int:
        """Run everything due now, including what comes due while running (a reminder that a
        recorded outcome scheduled for now). Returns how many actions were claimed.

        With several loops, each runs `_drain_lane` on its own thread (this one runs the
        first) and all have finished when it returns; the first error is raised again."""
        if self.loops == 1:
            return self._drain_lane(None)
        totals = [0] * self.loops
        errors: list[BaseException] = []

        def run(k: int) -> None:
            try:
                totals[k] = self._drain_lane((k, self.loops))
            except BaseException as exc:  # raised again in the caller's thread below
                errors.append(exc)

        others = [
            threading.Thread(target=run, args=(k,), name=f"recovery-lane-{k}", daemon=True)
            for k in range(1, self.loops)
        ]
        for thread in others:
            thread.start()
        run(0)
        for thread in others:
            thread.join()
        if errors:
            raise errors[0]
        return sum(totals)

    def _drain_lane(self, lane: tuple[int, int] | None) -> int:
        """One claim/decide/record loop over the subjects of `lane` (all when None).

        One transaction a round records the outcomes of the calls made since the last, then
        claims and decides, and claims again while what it decided may have made more due now;
        the calls follow, no transaction open. Done when a round's last claim found nothing."""
        db, clock = self.runtime.db, self.runtime.clock
        claimed_total = 0
        waiting: dict[str, deque[Claimed]] = {}  # subject -> claimed, not yet decided
        busy: set[str] = set()  # subjects with an action decided and not yet recorded
        in_flight = _Calls(self._call_pool, self.runtime) if self.threads > 1 else None
        outcomes: list[Called] = []  # called, not yet recorded
        exhausted = False  # the last claim found fewer due actions than it asked for

        def room_for_more(decided: int) -> int:
            calling = in_flight.count if in_flight is not None else 0
            room = self.batch_size - calling - decided - sum(map(len, waiting.values()))
            return room if room >= max(1, self.batch_size // 2) else 0

        while True:
            decided: list[Decided] = []
            statuses: list[str] = []
            settled = False  # this round's last claim came after all else and found nothing
            room = 0 if exhausted else room_for_more(0)
            if room or outcomes or any(s not in busy for s in waiting):
                with db.transaction() as session:
                    take_writers_turn(session, exclusive=False)
                    statuses = self._record_in(session, outcomes)
                    busy -= {c.decided.action.subject for c in outcomes}
                    outcomes = []
                    while True:
                        fresh: set[int] = set()
                        if room:
                            now = clock.now()
                            batch = claim_in(
                                session, db.is_postgres, self.owner, now, room, self.lease, lane
                            )
                            claimed_total += len(batch)
                            exhausted = len(batch) < room
                            for action in batch:
                                waiting.setdefault(action.subject, deque()).append(action)
                                fresh.add(action.id)
                        ready = [s for s in waiting if s not in busy]
                        if not ready:
                            settled = bool(room) and not fresh
                            break
                        next_up = []  # the first waiting action of each subject not busy
                        for subject in ready:
                            next_up.append(waiting[subject].popleft())
                            if not waiting[subject]:
                                del waiting[subject]
                        new = self._decide_all(session, next_up, fresh)
                        busy |= {d.action.subject for d in new}
                        decided += new
                        # A one-step action may have scheduled more for now: look again.
                        room = room_for_more(len(decided))
                        if not room:
                            break
            for status in statuses:  # counted once committed
                self._count(status)
            if in_flight is None:
                outcomes = [call(self.runtime, d) for d in decided]
            else:
                for d in decided:
                    in_flight.submit(d)
                if in_flight.count:
                    outcomes = in_flight.gather(self.threads)
            if not (outcomes or (in_flight is not None and in_flight.count) or waiting):
                if settled:
                    return claimed_total
                exhausted = False  # what just ran may have scheduled more for now: look again
            elif outcomes:
                exhausted = False  # what they record may be due now: look in the same round


class _CallPool:
    """`threads` call threads, shared by a worker's loops, taking calls from one queue.

    (A ThreadPoolExecutor made a Future, with its own lock and condition, for every call, and
    concurrent.futures.wait and as_completed hung a waiter on every future in flight at each
    gathering: with a hundred calls in flight and rounds every few milliseconds that machinery
    was ~8 % of a worker's samples, py-spy on bench/worker_throughput.py.)"""

    def __init__(self, threads: int) -> None:
        self._work: queue.SimpleQueue[tuple[_Calls, int, Decided] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._serve, name=f"recovery-call-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, calls: _Calls, order: int, decided: Decided) -> None:
        self._work.put((calls, order, decided))

    def _serve(self) -> None:
        while (job := self._work.get()) is not None:
            calls, order, decided = job
            calls.run(order, decided)

    def shutdown(self) -> None:
        """Let the calls queued finish, then stop the threads."""
        for _ in self._threads:
            self._work.put(None)
        for thread in self._threads:
            thread.join()


class _Calls:
    """A loop's provider calls on the pool; each hands its outcome back through one queue."""

    def __init__(self, pool: Callable[[], _CallPool], runtime: Runtime) -> None:
        self._pool, self._runtime = pool, runtime
        self._finished: queue.SimpleQueue[tuple[int, Called | BaseException]] = queue.SimpleQueue()
        self._sent = 0
        self.count = 0  # in flight

    def submit(self, decided: Decided) -> None:
        self._sent += 1
        self._pool().submit(self, self._sent, decided)
        self.count += 1

    def run(self, order: int, decided: Decided) -> None:
        """On a call thread: the call, its outcome (or what it raised) put on the queue."""
        try:
            self._finished.put((order, call(self._runtime, decided)))
        except BaseException as exc:  # raised again in the loop's thread by `gather`
            self._finished.put((order, exc))

    def gather(self, threads: int) -> list[Called]:
        """Wait until calls have finished: the first, then more while the pool still has calls
        queued (more in flight than `threads`) and the first has waited less than GATHER_FOR;
        then all finished by then, in the order they were sent.

        Each round (one transaction) records what finished and claims more. Taking each call
        as it finished made rounds of one to ten actions when providers answer in a millisecond,
        and a round's transaction, claim and set-based records cost about as much for one as for
        fifty; stopping once the pool is about to have an idle thread keeps it fed."""
        finished = [self._finished.get()]
        until = time.monotonic() + GATHER_FOR
        while self.count - len(finished) > threads:
            left = until - time.monotonic()
            if left <= 0:
                break
            try:
                finished.append(self._finished.get(timeout=left))
            except queue.Empty:
                break
        with contextlib.suppress(queue.Empty):
            while True:
                finished.append(self._finished.get_nowait())
        self.count -= len(finished)
        finished.sort(key=lambda item: item[0])
        outcomes = []
        for _, outcome in finished:
            if isinstance(outcome, BaseException):
                raise outcome
            outcomes.append(outcome)
        return outcomes
