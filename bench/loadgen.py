"""Webhook load generator: asyncio + aiohttp, one process, unique signed events.

    python bench/loadgen.py --url URL --secret whsec_... (--connections N | --rate R)
                            --seconds S [--warmup W] [--ids-out FILE]

Every request is a new event: a fresh `evt_` id and the send time as `created` are put into a
pre-serialised Stripe-shaped body (bench/event_mix.py), which is then signed with a fresh
`Stripe-Signature` (recovery.domain.signature.sign, the v1 scheme Stripe uses).

Two modes:
- closed loop (`--connections N`): N connections each send the next event as soon as the
  previous answer arrives - the throughput a server sustains at that concurrency.
- fixed rate (`--rate R`): an event is due every 1/R s whatever the server does; latency is
  measured from when the request was *due*, so a stalled server cannot hide its queue
  (no coordinated omission). Up to `--max-inflight` requests run at once.

Prints one JSON object on stdout: counts by status, throughput, latency percentiles (over the
requests started after the warm-up), the client's own CPU use. `--ids-out` gets the id of every
event answered 2xx (warm-up included), one a line, for the inbox check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from bench.event_mix import Template, build_templates  # noqa: E402
from recovery.domain.signature import sign  # noqa: E402


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), -(-len(sorted_values) * q // 100)))
    return sorted_values[int(rank) - 1]


class Generator:
    def __init__(self, templates: list[Template], secret: str, url: str, nonce: str) -> None:
        self.templates = templates
        self.secret = secret
        self.url = url
        self.nonce = nonce
        self.counter = 0
        self.statuses: Counter[str] = Counter()
        self.latencies: list[float] = []  # measured requests only (after warm-up)
        self.service_times: list[float] = []  # fixed rate: from actual send, not from due time
        self.acked: list[str] = []
        self.errors: Counter[str] = Counter()
        self.measure_from = 0.0
        self.measured = 0
        self.measured_ok = 0

    def next_request(self) -> tuple[str, bytes, dict[str, str]]:
        n = self.counter
        self.counter += 1
        template = self.templates[n % len(self.templates)]
        event_id = f"evt_{self.nonce}{n:010d}"
        now = int(time.time())
        body = template.body(event_id, now)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": f"t={now},v1={sign(body, self.secret, now)}",
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        }
        return event_id, body, headers

    async def send(self, session: aiohttp.ClientSession, due: float | None = None) -> None:
        event_id, body, headers = self.next_request()
        started = time.perf_counter()
        try:
            async with session.post(self.url, data=body, headers=headers) as resp:
                await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            status = 0
            self.errors[exc.__class__.__name__] += 1
        done = time.perf_counter()
        self.statuses[str(status) if status else "exception"] += 1
        if 200 <= status < 300:
            self.acked.append(event_id)
        if started >= self.measure_from:
            self.measured += 1
            self.measured_ok += 200 <= status < 300
            self.latencies.append(done - (due if due is not None else started))
            if due is not None:
                self.service_times.append(done - started)


async def closed_loop(gen: Generator, connections: int, seconds: float, warmup: float) -> float:
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        gen.measure_from = start + warmup
        stop_at = gen.measure_from + seconds

        async def worker() -> None:
            while time.perf_counter() < stop_at:
                await gen.send(session)

        await asyncio.gather(*(worker() for _ in range(connections)))
        return time.perf_counter() - gen.measure_from


async def fixed_rate(
    gen: Generator, rate: float, seconds: float, warmup: float, max_inflight: int
) -> float:
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=max_inflight)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter() + 0.05
        gen.measure_from = start + warmup
        total = int(rate * (warmup + seconds))
        tasks: set[asyncio.Task[None]] = set()
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(gen.send(session, due=due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
        return time.perf_counter() - gen.measure_from


def summary(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    ms = {f"p{q}": percentile(ordered, q) for q in (50, 90, 95, 99, 99.9)}
    out: dict[str, float | None] = {
        k.replace(".", "_"): (round(v * 1000, 2) if v is not None else None) for k, v in ms.items()
    }
    out["max"] = round(ordered[-1] * 1000, 2) if ordered else None
    out["mean"] = round(sum(ordered) / len(ordered) * 1000, 2) if ordered else None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--connections", type=int, default=0, help="closed loop with N conns")
    parser.add_argument("--rate", type=float, default=0.0, help="fixed rate, events/s")
    parser.add_argument("--max-inflight", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--nonce", default=os.urandom(4).hex())
    parser.add_argument("--ids-out", type=Path)
    args = parser.parse_args(argv)
    if bool(args.connections) == bool(args.rate):
        parser.error("give exactly one of --connections and --rate")

    templates = build_templates(seed=args.seed)
    gen = Generator(templates, args.secret, args.url, args.nonce)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if args.connections:
        elapsed = asyncio.run(closed_loop(gen, args.connections, args.seconds, args.warmup))
    else:
        elapsed = asyncio.run(
            fixed_rate(gen, args.rate, args.seconds, args.warmup, args.max_inflight)
        )
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    if args.ids_out:
        args.ids_out.write_text("".join(f"{i}\n" for i in gen.acked))
    ok = sum(n for s, n in gen.statuses.items() if s.startswith("2"))
    result: dict[str, Any] = {
        "mode": "closed" if args.connections else "rate",
        "connections": args.connections or None,
        "target_rate": args.rate or None,
        "measured_seconds": round(elapsed, 3),
        "sent": gen.counter,
        "statuses": dict(gen.statuses),
        "errors": dict(gen.errors),
        "acked_2xx": ok,
        "measured_requests": gen.measured,
        "throughput_rps": round(gen.measured / elapsed, 1) if elapsed > 0 else None,
        "ok_rps": round(gen.measured_ok / elapsed, 1) if elapsed > 0 else None,
        "latency_ms": summary(gen.latencies),
        "service_time_ms": summary(gen.service_times) if gen.service_times else None,
        "client_cpu_share": round(cpu / wall, 3) if wall > 0 else None,
        "templates": len(templates),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
