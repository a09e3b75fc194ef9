"""A wall-clock deadline for one provider call, the SDKs' own retries included.

The worker runs a due action's provider call (Stripe, SMTP, Twilio, the business's webhook)
with no database transaction open, under `with Deadline(seconds):`. Inside, every adapter caps
its connect and read timeouts to what is left, and the Stripe adapter stops retrying once too
little is left for another attempt. So a call ends, at the latest, at its deadline - well
inside the due action's lease - and another worker never takes over an action whose first
worker is still talking to the provider.

Wall-clock (monotonic) time, never the injected clock: it bounds how long a socket may wait.
"""

from __future__ import annotations

import contextvars
import time
from types import TracebackType

_current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "recovery_provider_deadline", default=None
)


class DeadlineExceeded(TimeoutError):
    """Too little time was left to start (or retry) a provider call."""


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expires_at = time.monotonic() + seconds
        self._token: contextvars.Token[Deadline | None] | None = None

    def remaining(self) -> float:
        return self.expires_at - time.monotonic()

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0

    def check(self, what: str = "a provider call") -> None:
        if self.expired:
            raise DeadlineExceeded(f"{what}: the {self.seconds:g} s deadline has passed")

    def __enter__(self) -> Deadline:
        self._token = _current.set(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None


def current() -> Deadline | None:
    """The deadline the calling code runs under, if any."""
    return _current.get()


MIN_TIMEOUT = 0.05  # a socket timeout of 0 would mean non-blocking, not "no time left"


def cap(timeout: float) -> float:
    """A socket timeout no later than the current deadline (unchanged outside one)."""
    deadline = _current.get()
    if deadline is None:
        return timeout
    return min(timeout, max(deadline.remaining(), MIN_TIMEOUT))


def cap_pair(timeout: float | tuple[float, float]) -> float | tuple[float, float]:
    """requests' (connect, read) timeout, each capped to the current deadline."""
    if isinstance(timeout, tuple):
        connect, read = timeout
        return (cap(connect), cap(read))
    return cap(timeout)
