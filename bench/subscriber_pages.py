"""Subscriber pages over real HTTP: bytes transferred and time to first byte of `/update/<link>`,
`/cancel/<session>` and the cancel flow's next step, served by gunicorn from PostgreSQL.

    .venv/bin/python bench/subscriber_pages.py [--requests 200] [--model gthread:2x4]

Set-up: a throwaway PostgreSQL (tests/support/postgres.py), migrated; in this process a Runtime
on the same database with the in-repo Stripe fake creates --requests card-update links (one per
open recovery case, as a reminder would) and --requests cancel sessions (through
`cancel_flow.start_session`, as `POST /api/v1/cancel-sessions` does). gunicorn then serves
`wsgi:app` (and, for the ceiling, bench/bare_app.py) on 127.0.0.1, as bench/webhook_ingest.py
does.

Each request is a fresh TCP connection sending `Accept-Encoding: gzip` (a phone opening a link
from a message): TTFB is from the last byte of the request sent to the first byte of the answer;
bytes are everything the server sent (status line, headers, body). Each page is opened once per
link or session, so no request hits a warm per-object cache, and requests come from rotating
loopback source addresses (127.0.0.2-127.0.0.101) because the card-update pages are rate-limited
per IP (60 a minute). Requests run one at a time: this is latency, not throughput.

Timed, --requests each:
1. GET /update/<token>                 the card-update page (counts the open: one UPDATE)
2. GET /cancel/<token>                 the survey
3. POST /cancel/<token>                the survey answer (reason "temporary") -> 303 to the offer
4. GET /cancel/<token>/offer           the offer page (a pause)
5. GET / on bench/bare_app.py          the same gunicorn with a WSGI app that answers 200
The pages link no stylesheet, script, font or image (CSS is inline), so the page is the whole
download. Not run in CI.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shlex
import socket
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SECRET_KEY = "bench-secret-key-0123456789abcdef0123456789"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
COOKIE = re.compile(rb"^set-cookie:\s*([^;\r\n]+)", re.IGNORECASE | re.MULTILINE)
WARM = 8  # links and sessions used to warm the workers up, not timed
RULES = """
[cancel_flow]
return_url_hosts = ["shop.example"]
"""


# ---- one HTTP exchange on a fresh connection ---------------------------------------------------


class Answer:
    def __init__(self, raw: bytes, ttfb: float, total: float) -> None:
        head, _, body = raw.partition(b"\r\n\r\n")
        self.raw, self.head, self.body = raw, head, body
        self.ttfb_ms, self.total_ms = ttfb * 1000, total * 1000
        self.status = int(head.split(b" ", 2)[1])
        self.gzip = b"content-encoding: gzip" in head.lower()

    def text(self) -> str:
        data = gzip.decompress(self.body) if self.gzip else self.body
        return data.decode()

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip().decode()
        return None

    def cookies(self) -> str:
        return "; ".join(m.decode() for m in COOKIE.findall(self.head))


def exchange(port: int, source: str, request: bytes) -> Answer:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        sock.sendall(request)
        sent = time.perf_counter()
        chunks = [sock.recv(65536)]
        first = time.perf_counter()
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        done = time.perf_counter()
    return Answer(b"".join(chunks), first - sent, done - sent)


def http_request(
    method: str, path: str, *, cookie: str = "", form: dict[str, str] | None = None
) -> bytes:
    from urllib.parse import urlencode

    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "User-Agent: Mozilla/5.0 (Linux; Android 14) bench",
        "Accept: text/html",
        "Accept-Encoding: gzip",
        "Connection: close",
    ]
    if cookie:
        lines.append(f"Cookie: {cookie}")
    body = b""
    if form is not None:
        body = urlencode(form).encode()
        lines += ["Content-Type: application/x-www-form-urlencoded", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# ---- set-up ------------------------------------------------------------------------------------


def app_env(url: str, work: Path, rules: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECOVERY_", "STRIPE_"))}
    env.update(
        RECOVERY_DATABASE_URL=url,
        RECOVERY_SECRET_KEY=SECRET_KEY,
        RECOVERY_RULES=str(rules),
        RECOVERY_INSTANCE_PATH=str(work / "instance"),
        RECOVERY_LOG_LEVEL="WARNING",
        RECOVERY_PUBLIC_URL="http://127.0.0.1",
        PYTHONPATH=str(ROOT),
    )
    env.pop("RECOVERY_ENV", None)
    return env


def prepare(env: dict[str, str], n: int) -> tuple[list[str], list[str]]:
    """n card-update link paths and n cancel-session paths."""
    from recovery.adapters.stripe_fake import FakeStripeGateway
    from recovery.config import Settings
    from recovery.models import Customer, Invoice, PaymentMethod, RecoveryCase
    from recovery.services.cancel.flow import StartRequest, session_url, start_session
    from recovery.services.card_update.links import link_for_case
    from recovery.services.registry import build_runtime

    gateway = FakeStripeGateway()
    rt = build_runtime(Settings.from_env(env), gateway=gateway)
    now = rt.clock.now()
    ts = int(now.timestamp())
    updates, cancels = [], []
    with rt.db.transaction() as s:
        for i in range(n):
            cid, pm = f"cus_u{i}", f"pm_u{i}"
            s.add(Customer(id=cid, email=f"kim{i}@example.com", name="Kim", preferred_locales=[]))
            s.add(
                PaymentMethod(
                    id=pm, customer_id=cid, brand="visa", last4="4242", exp_month=9, exp_year=2030
                )
            )
            s.add(
                Invoice(
                    id=f"in_u{i}",
                    customer_id=cid,
                    status="open",
                    currency="eur",
                    amount_due=2900,
                    amount_remaining=2900,
                    attempt_count=1,
                    attempted=True,
                    created=ts - 86400,
                )
            )
            case = RecoveryCase(
                invoice_id=f"in_u{i}",
                customer_id=cid,
                status="retrying",
                decline_category="soft",
                decline_code="insufficient_funds",
                card_brand="visa",
                currency="eur",
                amount_due=2900,
                opened_at=now - timedelta(days=1),
            )
            s.add(case)
            s.flush()
            url = link_for_case(s, case, now, settings=rt.settings, rules=rt.rules)
            updates.append("/" + url.split("://", 1)[1].split("/", 1)[1])
    gateway.add_price("price_pro_monthly", unit_amount=2000, product="prod_pro")
    for i in range(n):
        cid, sub = f"cus_c{i}", f"sub_c{i}"
        gateway.add_customer(cid, email=f"ada{i}@example.com", name="Ada")
        gateway.add_subscription(
            cid,
            id=sub,
            price_id="price_pro_monthly",
            current_period_start=ts - 10 * 86400,
            created=ts - 200 * 86400,
        )
        _row, token = start_session(
            rt, StartRequest(cid, sub, "https://shop.example/account", locale="en")
        )
        cancels.append("/" + session_url(rt.settings, token).split("://", 1)[1].split("/", 1)[1])
    rt.db.dispose()
    return updates, cancels


# ---- measuring ---------------------------------------------------------------------------------


def figures(answers: list[Answer], expect: int) -> dict[str, Any]:
    ttfb = sorted(a.ttfb_ms for a in answers)
    statuses = sorted({a.status for a in answers})
    last = answers[-1]
    body = gzip.decompress(last.body) if last.gzip else last.body
    return {
        "requests": len(answers),
        "statuses": statuses,
        "ok": statuses == [expect],
        "ttfb_p50_ms": round(statistics.median(ttfb), 2),
        "ttfb_p95_ms": round(ttfb[max(0, -(-len(ttfb) * 95 // 100) - 1)], 2),
        "ttfb_max_ms": round(ttfb[-1], 2),
        "total_p50_ms": round(statistics.median(a.total_ms for a in answers), 2),
        "bytes_on_wire": len(last.raw),
        "header_bytes": len(last.head) + 4,
        "body_bytes": len(last.body),
        "gzip_served": last.gzip,
        "body_uncompressed": len(body),
        "body_if_gzipped": len(gzip.compress(body, 6)),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def source(i: int) -> str:
    return f"127.0.0.{2 + i % 100}"


def measure(port: int, updates: list[str], cancels: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    # Warm-up with links and sessions of their own: each worker process compiles its templates
    # and fills its statement cache once; that is start-up, not a page view.
    (warm_updates, updates), (warm_cancels, cancels) = (
        (updates[:WARM], updates[WARM:]),
        (cancels[:WARM], cancels[WARM:]),
    )
    for i, path in enumerate(warm_updates):
        exchange(port, source(i), http_request("GET", path))
    for i, path in enumerate(warm_cancels):
        page = exchange(port, source(i), http_request("GET", path))
        form = {"reason": "temporary", "text": ""}
        if found := CSRF.search(page.text()):
            form["csrf_token"] = unescape(found.group(1))
        posted = exchange(
            port, source(i), http_request("POST", path, cookie=page.cookies(), form=form)
        )
        exchange(port, source(i), http_request("GET", f"{path}/offer", cookie=posted.cookies()))

    update = [exchange(port, source(i), http_request("GET", p)) for i, p in enumerate(updates)]
    out["GET /update/<link>"] = figures(update, 200)

    survey, answer, offer = [], [], []
    for i, path in enumerate(cancels):
        page = exchange(port, source(i), http_request("GET", path))
        survey.append(page)
        cookie = page.cookies()
        found = CSRF.search(page.text())
        form = {"reason": "temporary", "text": ""}
        if found:
            form["csrf_token"] = unescape(found.group(1))
        posted = exchange(port, source(i), http_request("POST", path, cookie=cookie, form=form))
        answer.append(posted)
        where = posted.header("Location") or f"{path}/offer"
        where = "/" + where.split("://", 1)[-1].split("/", 1)[1] if "://" in where else where
        offer.append(
            exchange(port, source(i), http_request("GET", where, cookie=cookie or posted.cookies()))
        )
    out["GET /cancel/<session> (survey)"] = figures(survey, 200)
    out["POST /cancel/<session> (answer -> 303)"] = figures(answer, 303)
    out["GET /cancel/<session>/offer"] = figures(offer, 200)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--model", default="gthread:2x4", help="gunicorn: sync:N or gthread:WxT")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)

    from bench.stack import (
        Gunicorn,
        WorkerModel,
        machine_description,
        package_versions,
        postgres_version,
    )
    from recovery.migrate import upgrade
    from tests.support.postgres import start_postgres

    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    machine = machine_description()
    work = Path(tempfile.mkdtemp(prefix="bench-pages-"))
    rules = work / "rules.toml"
    rules.write_text(RULES)
    server = start_postgres(work / "pg", "bench")
    model = WorkerModel.parse(args.model)
    try:
        upgrade(server.url)
        env = app_env(server.url, work, rules)
        t0 = time.perf_counter()
        updates, cancels = prepare(env, args.requests + WARM)
        print(f"== {args.requests} links and sessions made in {time.perf_counter() - t0:.1f} s")
        log = work / "gunicorn.log"
        with Gunicorn("wsgi:app", model, env, log_file=log) as g:
            results = measure(g.port, updates, cancels)
        with Gunicorn("bench.bare_app:app", model, env, log_file=log) as g:
            for i in range(8):
                exchange(g.port, source(i), http_request("GET", "/"))
            bare = [
                exchange(g.port, source(i), http_request("GET", "/")) for i in range(args.requests)
            ]
            results["GET / (bench/bare_app.py)"] = figures(bare, 200)
        pg = postgres_version(server.bin_dir)
    finally:
        server.stop()

    base = results["GET / (bench/bare_app.py)"]["ttfb_p50_ms"]
    print(
        f"\n== {args.requests} requests each, one at a time, fresh connection each, {model.label}"
    )
    for name, f in results.items():
        gz = (
            "gzip"
            if f["gzip_served"]
            else f"not gzipped (gzip would make the body {f['body_if_gzipped']} B)"
        )
        print(
            f"  {name:<42} TTFB p50 {f['ttfb_p50_ms']:>6.2f} ms  p95 {f['ttfb_p95_ms']:>6.2f} ms  "
            f"max {f['ttfb_max_ms']:>7.2f} ms  (x{f['ttfb_p50_ms'] / base:.1f} bare p50)  "
            f"{f['bytes_on_wire']} B on the wire = {f['header_bytes']} B headers + "
            f"{f['body_bytes']} B body, {gz}; HTTP {f['statuses']}; loadavg {f['loadavg']}"
        )
    print("\n== how these figures were made")
    print(f"  started {started}; command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"  machine: {json.dumps(machine)}")
    print(f"  loadavg at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    versions = package_versions(["gunicorn", "flask", "werkzeug", "jinja2", "sqlalchemy"])
    print(f"  versions: {json.dumps(versions)}; {pg}")
    print(
        f"  gunicorn {model.label} (--no-control-socket, no --preload) on 127.0.0.1; "
        f"PostgreSQL throwaway (fsync=off); clock: the system's ({datetime.now(UTC):%Y-%m-%d})"
    )
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1))
    return 0 if all(f["ok"] for f in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
