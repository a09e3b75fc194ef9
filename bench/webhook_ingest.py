"""Webhook ingest benchmark: gunicorn + `wsgi:app` + PostgreSQL under signed Stripe events.

    .venv/bin/python bench/webhook_ingest.py [--seconds 60] [--rate 500] [--tune]
                                             [--model gthread:2x4] [--modes default inline]
                                             [--profile] [--event-workers 1]

One run measures, against a throwaway PostgreSQL (tests/support/postgres.py) migrated with
recovery.migrate.upgrade:

1. (--tune) a short closed-loop run per gunicorn worker model; the best becomes the model of
   every later run (else --model, default: the one the tuning picked on this machine).
2. the stack's ceiling: the same gunicorn serving bench/bare_app.py (read body, answer 200).
3. per mode - `default` (the shipped default: the request stores, a `recovery worker` process
   processes) and `inline` (RECOVERY_PROCESS_INLINE=1: the request processes too) - a
   closed-loop run (throughput, latency) and a run at a fixed --rate (p99 measured from when
   each event was due); after each, every event id answered 2xx must be in `stripe_events`. In
   the default mode a worker runs during the fixed-rate run, and the time from each event's
   receipt to its processing (`processed_at - received_at`; the worker stamps `processed_at`
   as the event's batch ends, just before its commit) is reported. `--event-workers N` runs N
   worker processes, which split the events (SKIP LOCKED).
4. (--profile, or automatically when a target is missed) py-spy on the web workers during a
   closed-loop run of the default mode; prints the hot spots.

The load generator (bench/loadgen.py) is a separate process: asyncio + aiohttp, a fresh event
id, `created` and Stripe-Signature per request, bodies from bench/event_mix.py.

Targets (issue 16): the default mode >= 50 % of the bare endpoint and >= 1,500 events/s closed
loop; p99 < 20 ms at 500 events/s; receipt to processed p95 < 1 s at 500 events/s; every
acknowledged event stored. Not run in CI.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, func, select, text  # noqa: E402

from bench.stack import (  # noqa: E402
    CpuMeter,
    Gunicorn,
    WorkerModel,
    hot_spots,
    machine_description,
    package_versions,
    postgres_version,
    postmaster_pid,
    py_spy,
    run_loadgen,
    tree_cpu,
)
from recovery.db import Base  # noqa: E402
from recovery.migrate import upgrade  # noqa: E402
from recovery.models import StripeEvent  # noqa: E402
from recovery.services.events.processing import BATCH  # noqa: E402
from tests.support.postgres import PostgresServer, start_postgres  # noqa: E402

SECRET = "whsec_bench_" + "k" * 24
TUNE_CANDIDATES = [
    "sync:2",
    "sync:3",
    "sync:4",
    "sync:6",
    "gthread:2x2",
    "gthread:2x4",
    "gthread:2x8",
    "gthread:3x4",
    "gthread:4x2",
]
DEFAULT_MODEL = "gthread:2x4"
TARGET_RPS = 1500.0
TARGET_P99_MS = 20.0
TARGET_BARE_SHARE = 0.5
TARGET_PROCESSED_P95_MS = 1000.0
MODES = {"default": False, "inline": True}  # mode -> RECOVERY_PROCESS_INLINE


def app_env(database_url: str, inline: bool, instance: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECOVERY_", "STRIPE_"))}
    env.update(
        RECOVERY_DATABASE_URL=database_url,
        STRIPE_WEBHOOK_SECRETS=SECRET,
        RECOVERY_PROCESS_INLINE="1" if inline else "0",
        RECOVERY_INSTANCE_PATH=str(instance),  # keep ./instance out of the checkout
        PYTHONPATH=str(ROOT),
    )
    env.pop("RECOVERY_ENV", None)
    return env


def truncate(url: str) -> None:
    engine = create_engine(url)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


def check_inbox(url: str, ids_file: Path) -> dict[str, Any]:
    """Is every event answered 2xx in stripe_events? And how far did processing get?"""
    acked = set(ids_file.read_text().split())
    engine = create_engine(url)
    with engine.connect() as conn:
        stored = set(conn.scalars(select(StripeEvent.id)))
        statuses = dict(
            conn.execute(
                select(StripeEvent.status, func.count()).group_by(StripeEvent.status)
            ).all()
        )
        errors = list(
            conn.execute(
                select(StripeEvent.last_error, func.count())
                .where(StripeEvent.last_error.is_not(None))
                .group_by(StripeEvent.last_error)
                .limit(5)
            ).all()
        )
    engine.dispose()
    missing = acked - stored
    return {
        "acked": len(acked),
        "stored": len(stored),
        "acked_missing": len(missing),
        "missing_sample": sorted(missing)[:5],
        "statuses": statuses,
        "errors": [((e or "")[:200], n) for e, n in errors],
    }


def ingest_commits(url: str) -> dict[str, Any]:
    """How many statements stored a closed-loop run's rows: rows one INSERT wrote share its
    transaction id (`xmin`; only while no worker has updated them). The group commit's batch
    size, seen from the database."""
    engine = create_engine(url)
    with engine.connect() as conn:
        rows, commits = conn.execute(
            text("SELECT count(*), count(DISTINCT xmin::text) FROM stripe_events")
        ).one()
    engine.dispose()
    return {
        "rows": rows,
        "commits": commits,
        "rows_per_commit": round(rows / commits, 2) if commits else None,
    }


def worker_batches(url: str, ids_file: Path) -> dict[str, Any]:
    """The worker's batches for a run's events: a batch's events share `processed_at` (the
    moment it ended, just before its commit), so consecutive ends give each batch's time.
    `busy_rate` is events per second over batches that followed a full one at once (the worker
    never idle between them): the speed of processing itself, apart from waiting for events to
    arrive."""
    acked = ids_file.read_text().split()
    engine = create_engine(url)
    query = text(
        "SELECT processed_at, count(*) FROM stripe_events WHERE id = ANY(:ids) "
        "AND processed_at IS NOT NULL GROUP BY processed_at ORDER BY processed_at"
    )
    with engine.connect() as conn:
        batches = [(at.timestamp(), int(n)) for at, n in conn.execute(query, {"ids": acked})]
    engine.dispose()
    if not batches:
        return {"batches": 0}
    sizes = sorted(n for _, n in batches)
    busy_events, busy_seconds = 0, 0.0
    for (end, n), (following, m) in itertools.pairwise(batches):
        if n >= BATCH:  # a full batch: the worker took the next at once, more were waiting
            busy_events += m
            busy_seconds += following - end
    span = batches[-1][0] - batches[0][0]
    return {
        "batches": len(batches),
        "events": sum(sizes),
        "per_batch_p50": sizes[len(sizes) // 2],
        "per_batch_p95": sizes[min(len(sizes) - 1, int(len(sizes) * 0.95))],
        "per_batch_max": sizes[-1],
        "span_s": round(span, 2),
        "busy_rate": round(busy_events / busy_seconds, 1) if busy_seconds else None,
    }


def fmt_latency(result: dict[str, Any]) -> str:
    lat = result["latency_ms"]
    return f"p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms, max {lat['max']} ms"


def errors_of(result: dict[str, Any]) -> int:
    return sum(n for s, n in result["statuses"].items() if not s.startswith("2"))


def cpu_ms_per_event(result: dict[str, Any]) -> dict[str, float]:
    """CPU milliseconds per answered request, by process tree (and the load generator).

    Unlike throughput this barely depends on what else the shared machine runs, so it is the
    figure to project from: on an otherwise idle 2-core machine the stack would top out near
    2000 / (sum of these) requests per second, if nothing but CPU limited it.
    """
    cpu = result.get("server_cpu_cores") or {}
    rps = result["throughput_rps"] or 0.0
    if not rps:
        return {}
    out = {
        k: round(v / rps * 1000, 3) for k, v in cpu.items() if k not in ("wall_seconds", "machine")
    }
    out["load generator"] = round(result["client_cpu_share"] / rps * 1000, 3)
    return out


def projection(result: dict[str, Any]) -> float:
    per_event = sum(cpu_ms_per_event(result).values())
    return 2000.0 / per_event if per_event else 0.0


def line(label: str, result: dict[str, Any]) -> str:
    cpu = result.get("server_cpu_cores") or {}
    per_event = cpu_ms_per_event(result)
    per_text = ", ".join(f"{k} {v}" for k, v in per_event.items())
    return (
        f"  {label:<28} {result['ok_rps']:>8.1f} ok/s  {fmt_latency(result)}; "
        f"non-2xx {errors_of(result)}\n"
        f"  {'':<28} CPU ms/request: {per_text} -> ~{projection(result):.0f}/s on an idle "
        f"2-core box; whole machine busy {cpu.get('machine', '?')} of 2 cores"
    )


class Bench:
    def __init__(self, args: argparse.Namespace, server: PostgresServer, work: Path) -> None:
        self.args = args
        self.server = server
        self.url = server.url
        self.work = work
        self.pg_pid = postmaster_pid(server.data_dir)
        self.results: dict[str, Any] = {}

    def serve(self, app: str, model: WorkerModel, inline: bool = False) -> Gunicorn:
        env = app_env(self.url, inline, self.work / "instance")
        return Gunicorn(app, model, env, log_file=self.work / "gunicorn.log")

    def meter(self, g: Gunicorn) -> CpuMeter:
        roots = {"gunicorn": g.proc.pid}
        if self.pg_pid:
            roots["postgres"] = self.pg_pid
        return CpuMeter(roots)

    def closed(self, g: Gunicorn, path: str, seconds: float, ids: Path | None) -> dict[str, Any]:
        return run_loadgen(
            g.url + path,
            SECRET,
            seconds=seconds,
            connections=self.args.connections,
            ids_out=ids,
            meter=self.meter(g),
        )

    def tune(self) -> WorkerModel:
        print(
            f"\n== tuning: closed loop, {self.args.connections} connections, "
            f"{self.args.tune_seconds} s each, the default mode",
            flush=True,
        )
        best: tuple[float, WorkerModel] | None = None
        table = {}
        for text_model in self.args.candidates:
            model = WorkerModel.parse(text_model)
            truncate(self.url)
            with self.serve("wsgi:app", model) as g:
                result = self.closed(g, "/webhooks/stripe", self.args.tune_seconds, None)
            table[model.label] = result
            print(line(model.label, result), flush=True)
            score = result["ok_rps"] if errors_of(result) == 0 else 0.0
            if best is None or score > best[0]:
                best = (score, model)
        self.results["tuning"] = table
        assert best is not None
        print(f"  -> best: {best[1].label}", flush=True)
        return best[1]

    def workers(self) -> list[subprocess.Popen[bytes]]:
        return [start_worker(self.url, self.work) for _ in range(self.args.event_workers)]

    def run(self, model: WorkerModel) -> None:
        seconds, rate = self.args.seconds, self.args.rate
        print(f"\n== bare endpoint (bench/bare_app.py), {model.label}", flush=True)
        with self.serve("bench.bare_app:app", model) as g:
            bare = self.closed(g, "/", seconds, None)
        self.results["bare"] = bare
        print(line("bare, closed loop", bare), flush=True)

        for mode in self.args.modes:
            inline = MODES[mode]
            print(
                f"\n== wsgi:app, {mode} (RECOVERY_PROCESS_INLINE={int(inline)}), {model.label}",
                flush=True,
            )
            truncate(self.url)
            ids = self.work / f"acked-{mode}-closed.txt"
            with self.serve("wsgi:app", model, inline) as g:
                closed = self.closed(g, "/webhooks/stripe", seconds, ids)
                closed["inbox"] = check_inbox(self.url, ids)
                print(line(f"{mode} closed loop", closed), flush=True)
                print(f"    inbox: {json.dumps(closed['inbox'])}", flush=True)
                if not inline:
                    closed["commits"] = ingest_commits(self.url)
                    print(f"    ingest statements: {json.dumps(closed['commits'])}", flush=True)
                truncate(self.url)
                ids = self.work / f"acked-{mode}-rate.txt"
                workers = [] if inline else self.workers()
                worker_cpu = sum(sum(tree_cpu(w.pid).values()) for w in workers)
                try:
                    fixed = run_loadgen(
                        g.url + "/webhooks/stripe",
                        SECRET,
                        seconds=self.args.rate_seconds or seconds,
                        rate=rate,
                        ids_out=ids,
                        meter=self.meter(g),
                    )
                    if workers:
                        fixed["processed"] = processed_latency(self.url, ids)
                        worker_cpu = (
                            sum(sum(tree_cpu(w.pid).values()) for w in workers) - worker_cpu
                        )
                        fixed["worker"] = worker_batches(self.url, ids)
                        done = fixed["processed"]["processed"]
                        fixed["worker"]["cpu_ms_per_event"] = (
                            round(worker_cpu / done * 1000, 3) if done else None
                        )
                finally:
                    for w in workers:
                        stop_worker(w)
                fixed["inbox"] = check_inbox(self.url, ids)
                print(line(f"{mode} fixed {rate:g}/s", fixed), flush=True)
                print(f"    service time (from send, not due): {fixed['service_time_ms']}")
                if "processed" in fixed:
                    print(f"    receipt to processed: {json.dumps(fixed['processed'])}")
                    print(f"    worker: {json.dumps(fixed['worker'])}")
                print(f"    inbox: {json.dumps(fixed['inbox'])}", flush=True)
            self.results[mode] = {"closed": closed, "rate": fixed}

    def profile(self, model: WorkerModel, seconds: float) -> None:
        print(
            f"\n== profile: py-spy on the workers, default mode, {model.label}, {seconds:g} s",
            flush=True,
        )
        truncate(self.url)
        raw = self.work / "profile.txt"
        with self.serve("wsgi:app", model, False) as g, py_spy(g.proc.pid, seconds, raw):
            time.sleep(0.5)
            result = run_loadgen(
                g.url + "/webhooks/stripe",
                SECRET,
                seconds=seconds - 3,
                connections=self.args.connections,
                warmup=1.0,
            )
        print(line("under py-spy (slower)", result))
        if not raw.exists():
            print("  py-spy wrote nothing (ptrace not permitted?)")
            return
        total, inclusive, own = hot_spots(raw, top=self.args.top)
        print(f"  {total} busy samples from the workers (idle waits dropped); raw stacks: {raw}")
        print("  inclusive (share of busy samples with the function on the stack):")
        for name, share in inclusive:
            print(f"    {share:6.1%}  {name}")
        print("  self (share of busy samples where the function itself was running):")
        for name, share in own[:20]:
            print(f"    {share:6.1%}  {name}")
        self.results["profile"] = {"samples": total, "inclusive": inclusive, "self": own}


def start_worker(database_url: str, work: Path) -> subprocess.Popen[bytes]:
    """A `recovery worker` process on the database, as deployed beside gunicorn."""
    env = app_env(database_url, False, work / "instance")
    log = open(work / "worker.log", "ab")  # noqa: SIM115 - the process keeps it
    proc = subprocess.Popen(
        [sys.executable, "-m", "recovery.cli", "worker"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    time.sleep(3.0)  # imported, connected, listening
    if proc.poll() is not None:
        raise RuntimeError(f"the worker did not start: {work / 'worker.log'}")
    return proc


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def processed_latency(url: str, ids_file: Path, wait: float = 60.0) -> dict[str, Any]:
    """For the events acknowledged in a run: milliseconds from receipt (the web process stored
    it) to processed (a worker committed it), once the worker caught up (up to `wait` s)."""
    acked = ids_file.read_text().split()
    engine = create_engine(url)
    query = text(
        "SELECT EXTRACT(EPOCH FROM (processed_at - received_at)) * 1000 FROM stripe_events "
        "WHERE id = ANY(:ids) AND status = 'processed' ORDER BY received_at"
    )
    deadline = time.monotonic() + wait
    while True:
        with engine.connect() as conn:
            in_arrival = [float(v) for v in conn.scalars(query, {"ids": acked})]
        if len(in_arrival) >= len(acked) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    engine.dispose()
    values = sorted(in_arrival)
    # p95 of each fifth of the run by arrival: a lag that grows fifth after fifth is a worker
    # slower than the rate; one that shrinks is a start-up backlog being drained.
    size = max(1, len(in_arrival) // 5)
    fifths = [sorted(in_arrival[i : i + size]) for i in range(0, size * 5, size)]
    by_fifth = [round(f[min(len(f) - 1, int(len(f) * 0.95))], 1) for f in fifths if f]

    def pct(q: float) -> float | None:
        if not values:
            return None
        return round(values[min(len(values) - 1, int(len(values) * q / 100))], 1)

    return {
        "acked": len(acked),
        "processed": len(values),
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "max_ms": round(values[-1], 1) if values else None,
        "p95_by_fifth_ms": by_fifth,
    }


def targets(results: dict[str, Any], rate: float, modes: list[str]) -> list[tuple[str, bool, str]]:
    bare = results["bare"]["ok_rps"]
    out = []
    for name in modes:
        closed, fixed = results[name]["closed"], results[name]["rate"]
        rps, p99 = closed["ok_rps"], fixed["latency_ms"]["p99"]
        share = rps / bare if bare else 0.0
        if name == "default":
            out.append(
                (
                    f"{name}: >= {TARGET_RPS:,.0f} events/s closed loop",
                    rps >= TARGET_RPS,
                    f"{rps:.0f}/s, {errors_of(closed)} non-2xx",
                )
            )
            out.append(
                (
                    f"{name}: >= 50 % of the bare endpoint",
                    share >= TARGET_BARE_SHARE,
                    f"{rps:.0f} / {bare:.0f} = {share:.1%}",
                )
            )
            out.append(
                (
                    f"{name}: p99 < {TARGET_P99_MS:.0f} ms at {rate:g}/s",
                    p99 is not None and p99 < TARGET_P99_MS and errors_of(fixed) == 0,
                    f"p99 {p99} ms, {errors_of(fixed)} non-2xx",
                )
            )
            done = fixed.get("processed", {})
            p95 = done.get("p95_ms")
            out.append(
                (
                    f"{name}: receipt to processed p95 < 1 s at {rate:g}/s",
                    p95 is not None
                    and p95 < TARGET_PROCESSED_P95_MS
                    and done.get("processed") == done.get("acked"),
                    f"p95 {p95} ms; {done.get('processed')} of {done.get('acked')} processed",
                )
            )
        missing = closed["inbox"]["acked_missing"] + fixed["inbox"]["acked_missing"]
        acked = closed["inbox"]["acked"] + fixed["inbox"]["acked"]
        out.append(
            (
                f"{name}: every 2xx event is in stripe_events",
                missing == 0,
                f"{acked - missing} of {acked} acknowledged ids present",
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="per measured run")
    parser.add_argument("--rate", type=float, default=500.0, help="fixed-rate run, events/s")
    parser.add_argument("--rate-seconds", type=float, default=0.0, help="default: --seconds")
    parser.add_argument("--connections", type=int, default=16, help="closed-loop concurrency")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="sync:N or gthread:WxT")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--tune", action="store_true", help="try worker models first")
    parser.add_argument("--tune-seconds", type=float, default=10.0)
    parser.add_argument("--candidates", nargs="+", default=TUNE_CANDIDATES)
    parser.add_argument("--profile", action="store_true", help="py-spy even if targets are met")
    parser.add_argument("--profile-seconds", type=float, default=20.0)
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument("--json-out", type=Path)
    parser.add_argument(
        "--event-workers",
        type=int,
        default=1,
        help="`recovery worker` processes beside gunicorn in the default mode (they split the "
        "events: SKIP LOCKED)",
    )
    args = parser.parse_args(argv)

    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    machine = machine_description()
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    server = start_postgres(work / "pg", "bench")
    try:
        upgrade(server.url)
        bench = Bench(args, server, work)
        model = bench.tune() if args.tune else WorkerModel.parse(args.model)
        bench.run(model)
        checks = targets(bench.results, args.rate, args.modes)
        if args.profile or not all(ok for _, ok, _ in checks):
            bench.profile(model, args.profile_seconds)
        results = bench.results
        pg = postgres_version(server.bin_dir)
    finally:
        server.stop()

    bare = results["bare"]["ok_rps"]
    print("\n== summary")
    for name in args.modes:
        closed, fixed = results[name]["closed"], results[name]["rate"]
        lat = fixed["latency_ms"]
        print(
            f"  {name}: {closed['ok_rps']:.0f} events/s closed loop "
            f"({closed['ok_rps'] / bare:.0%} of bare {bare:.0f} req/s); "
            f"at {args.rate:g}/s: p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms"
        )
        done = fixed.get("processed")
        if done:
            print(
                f"  {name}: processed within p50 {done['p50_ms']} ms, p95 {done['p95_ms']} ms, "
                f"p99 {done['p99_ms']} ms ({args.event_workers} worker process(es))"
            )
    print("\n== targets")
    for label, ok, detail in checks:
        print(f"  [{'met' if ok else 'MISSED'}] {label}: {detail}")

    versions = package_versions(
        ["gunicorn", "flask", "werkzeug", "sqlalchemy", "psycopg", "aiohttp", "py-spy"]
    )
    print("\n== how these figures were made")
    print(f"  started {started}; command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"  machine: {json.dumps(machine)}")
    print(
        f"  loadavg at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
        "(when the machine is busy, wall-clock figures are noisy)"
    )
    print(f"  versions: {json.dumps(versions)}; {pg}")
    print(
        f"  gunicorn: {model.label} (--no-control-socket, no access log, no --preload), "
        "app wsgi:app or bench.bare_app:app on 127.0.0.1"
    )
    print(
        "  PostgreSQL: throwaway, tests/support/postgres.py options (fsync=off, "
        "synchronous_commit=off, full_page_writes=off: durability settings of a test server; "
        "autovacuum_naptime=1s: tables filled from empty are analyzed as they grow)"
    )
    print(
        f"  load: bench/loadgen.py (aiohttp, 1 process) closed loop {args.connections} "
        f"connections for {args.seconds:g} s after a 2 s warm-up; fixed rate {args.rate:g}/s "
        f"for {args.rate_seconds or args.seconds:g} s, latency from each request's due time"
    )
    print(
        "  events: bench/event_mix.py, 4000 templates over 2000 customers, fresh id/created/"
        "signature per request; tables truncated before each run"
    )
    if args.json_out:
        args.json_out.write_text(json.dumps({"results": results, "checks": checks}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
