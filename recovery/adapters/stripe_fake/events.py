"""The account's event history: events seeded by a test, and `iter_events`. (Writes emit
their events through `FakeStore._emit`.)"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from recovery.adapters.stripe.protocol import StripeDict
from recovery.adapters.stripe_fake.store import FakeStore, clone


class FakeEvents(FakeStore):
    def add_event(
        self, event_type: str, obj: Mapping[str, Any], *, created: int | None = None
    ) -> StripeDict:
        """An event in the account's history (what `iter_events` lists)."""
        self._emit(event_type, dict(obj))  # `_emit` stores a copy
        if created is not None:
            self.events[-1]["created"] = created
        return clone(self.events[-1])

    def iter_events(
        self, created_gte: int, starting_after: str | None = None
    ) -> Iterator[StripeDict]:
        def keep(event: StripeDict) -> bool:
            return bool(event["created"] >= created_gte)

        params = {"created_gte": created_gte}
        return self._pages("iter_events", "event", params, keep, starting_after)

    def list_webhook_endpoints(self) -> list[StripeDict]:  # seeded with put({"object": ...})
        return self._read(
            "list_webhook_endpoints", {}, lambda: [*self.store["webhook_endpoint"].values()]
        )
