"""Dashboard at scale: 1M invoices, 200k cases, 50k cancel sessions in PostgreSQL; p50/p95 of
the pages a billing team opens, through the Flask test client, signed in.

    .venv/bin/python bench/dashboard_scale.py [--invoices 1000000] [--cases 200000]
                                              [--sessions 50000] [--requests 30] [--explain]

The database (a throwaway PostgreSQL from tests/support/postgres.py, migrated with Alembic) is
filled with INSERT ... SELECT generate_series and random() (seeded), over the 12 months before
the frozen clock (2026-11-02 09:00 UTC), more of it recent (a growing business):
- customers (invoices / 4) named from 20 first and 25 last names (so a part of a name matches
  thousands, and an address with its number one), one card each (expiry dates spread over five
  years), one
  subscription each (active/past_due/canceled/trialing; usd 60 %, eur 25 %, gbp 15 %; six plan
  prices) with its item;
- invoices, mostly paid; every 5th is the failed one of a recovery case;
- recovery cases: the last three weeks' mostly in progress, older ones recovered (58 %: our
  retry, card-update link, hosted page, Stripe's retry), lost or closed; decline categories
  soft 55 %, needs_new_card 25 %, needs_customer 12 %, never_retry 8 %; card brands;
- per case: 5 timeline events, 1-2 failed charges, 2 due actions, an email (3 in 4) and an SMS
  (1 in 5); a few thousand expiring-card notices;
- cancel sessions with survey answers, offers and outcomes.
Then VACUUM ANALYZE, as autovacuum would have done on a live database.

Timed (each page --requests times after 2 warm-ups; the case page on a different case each
time): /dashboard for 30 and 90 days, /api/v1/metrics (30 and 90 days), /dashboard/cases with a
status + category filter at page ~1000 by its keyset cursor (and its first page), a case page;
the search (issue 15): by part of a last name (thousands of customers), by part of an email
address (one customer, a different one each time), by invoice, customer and case id, and the
"open" filter; a customer page.
For each page the slowest SQL statement of one request is shown; --explain (or a missed
target) prints EXPLAIN ANALYZE of it. Target (issue 7): p95 < 200 ms. Then each statement of
the 90-day overview (`metrics.overview`, usd, the page's period), its median over --requests
runs: the slowest; and the view and the two 90-day pages per phase (wall, CPU, SQL).

The overview's rollups (issue 11 item 7): after the fill (or on a reused database, after its
migration) the worker's refresh is timed bringing every day up to date; after the pages, a day
of changes is written (UPDATEs: the triggers mark their days dirty), the overview timed while
those days are computed directly, and the refresh that rolls them up timed.
--keep leaves the filled PostgreSQL running; --reuse URL times it again without refilling.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import event, text  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
TARGET_P95_MS = 200.0
API_KEY = "bench-api-key-0123456789abcdef"

# {now} is the frozen clock as a SQL timestamp; :names are bound. A colon inside a string
# literal would be read as a bind parameter, hence the concat(...) with chr(58) for ':'.
FILL = [
    "SELECT setseed(0.42)",
    """INSERT INTO customers (id, email, name, preferred_locales, address_country,
         default_payment_method_id, metadata, deleted, created, version_ts, version_tiebreak)
       SELECT 'cus_' || g,
              lower((ARRAY['olivia','noah','amelia','liam','maya','lukas','lena','camille',
                           'mateo','lucia','joao','ana','priya','arjun','anna','sergei',
                           'fleur','daan','grace','owen'])[1 + g % 20])
                || '.' || lower(replace((ARRAY['Smith','Johnson','Brown','Taylor','Wilson',
                           'Müller','Schmidt','Schneider','Dubois','Martin','García','López',
                           'Silva','Santos','Sharma','Patel','Ivanova','Petrov','de Vries',
                           'Jansen','Okafor','Nakamura','Kowalski','Novak','Lovelace'])
                           [1 + (g / 20) % 25], ' ', '')) || g || '@example.com',
              initcap((ARRAY['olivia','noah','amelia','liam','maya','lukas','lena','camille',
                             'mateo','lucia','joao','ana','priya','arjun','anna','sergei',
                             'fleur','daan','grace','owen'])[1 + g % 20])
                || ' ' || (ARRAY['Smith','Johnson','Brown','Taylor','Wilson','Müller',
                                 'Schmidt','Schneider','Dubois','Martin','García','López',
                                 'Silva','Santos','Sharma','Patel','Ivanova','Petrov',
                                 'de Vries','Jansen','Okafor','Nakamura','Kowalski','Novak',
                                 'Lovelace'])[1 + (g / 20) % 25],
              '[]',
              (ARRAY['US','US','US','DE','FR','GB','GB','NL','ES','CA'])[1 + g % 10],
              'pm_' || g, '{}', false, 0, 0, ''
       FROM generate_series(1, :customers) g""",
    """INSERT INTO payment_methods (id, customer_id, type, brand, last4, exp_month, exp_year,
         funding, fingerprint, country, created, version_ts, version_tiebreak)
       SELECT 'pm_' || g, 'cus_' || g, 'card',
              (ARRAY['visa','visa','visa','visa','visa','mastercard','mastercard','mastercard',
                     'amex','discover'])[1 + (g / 7) % 10],
              lpad((g % 10000)::text, 4, '0'), 1 + (g * 7) % 12, 2026 + (g * 13) % 5,
              (ARRAY['credit','debit','debit','prepaid'])[1 + g % 4], 'fp_' || g, 'US', 0, 0, ''
       FROM generate_series(1, :customers) g""",
    """INSERT INTO subscriptions (id, customer_id, status, collection_method, currency,
         default_payment_method_id, cancel_at_period_end, current_period_start,
         current_period_end, metadata, created, version_ts, version_tiebreak)
       SELECT 'sub_' || g, 'cus_' || g,
              CASE WHEN g % 50 < 40 THEN 'active' WHEN g % 50 < 44 THEN 'past_due'
                   WHEN g % 50 < 49 THEN 'canceled' ELSE 'trialing' END,
              'charge_automatically',
              CASE WHEN g % 20 < 12 THEN 'usd' WHEN g % 20 < 17 THEN 'eur' ELSE 'gbp' END,
              'pm_' || g, g % 37 = 0,
              {now} - (g % 30) * interval '1 day', {now} + (30 - g % 30) * interval '1 day',
              '{}', 0, 0, ''
       FROM generate_series(1, :customers) g""",
    """INSERT INTO subscription_items (id, subscription_id, price_id, product_id, unit_amount,
         quantity, currency, interval, interval_count)
       SELECT 'si_' || g, 'sub_' || g, 'price_' || (g % 6), 'prod_' || (g % 6),
              (ARRAY[900, 1900, 2900, 4900, 9900, 19900])[1 + g % 6], 1 + (g % 11 = 0)::int,
              CASE WHEN g % 20 < 12 THEN 'usd' WHEN g % 20 < 17 THEN 'eur' ELSE 'gbp' END,
              'month', 1
       FROM generate_series(1, :customers) g""",
    """INSERT INTO invoices (id, customer_id, subscription_id, status, currency, amount_due,
         amount_paid, amount_remaining, attempt_count, attempted, billing_reason,
         collection_method, auto_advance, created, version_ts, version_tiebreak)
       SELECT 'in_' || n, 'cus_' || c, 'sub_' || c, st,
              CASE WHEN c % 20 < 12 THEN 'usd' WHEN c % 20 < 17 THEN 'eur' ELSE 'gbp' END,
              amt, CASE WHEN st = 'paid' THEN amt ELSE 0 END,
              CASE WHEN st IN ('paid', 'void') THEN 0 ELSE amt END,
              CASE WHEN n % 5 = 0 THEN 2 ELSE 1 END, true, 'subscription_cycle',
              'charge_automatically', false,
              extract(epoch FROM {now} - (1 - sqrt(random())) * interval '365 days')::bigint,
              0, ''
       FROM (SELECT n, (n - 1) % :customers + 1 AS c,
                    (ARRAY[900, 1900, 2900, 4900, 9900, 19900])[1 + ((n - 1) % :customers + 1) % 6]
                      AS amt,
                    CASE WHEN n % 5 = 0 THEN 'open' WHEN n % 97 = 0 THEN 'void'
                         WHEN n % 89 = 0 THEN 'draft' ELSE 'paid' END AS st
             FROM generate_series(1, :invoices) n) i""",
    # Cases: case g is about invoice 5g. Age biased to recent; status by age.
    """CREATE TEMP TABLE bench_cases AS
       SELECT g, 5 * g AS inv, (5 * g - 1) % :customers + 1 AS c,
              random() AS r1, random() AS r2, random() AS r3, random() AS r4,
              (1 - sqrt(random())) * 365 AS age
       FROM generate_series(1, :cases) g""",
    """INSERT INTO recovery_cases (id, invoice_id, customer_id, subscription_id, status, awaiting,
         decline_category, decline_code, card_brand, currency, amount_due, amount_recovered,
         recovered_via, close_reason, opened_at, closed_at, our_attempts, next_retry_at,
         next_step_reason, hosted_invoice_url, dunning_paused)
       SELECT g, 'in_' || inv, 'cus_' || c, 'sub_' || c, status,
              CASE WHEN status = 'awaiting_customer' THEN 'new_card' END,
              category,
              CASE category WHEN 'soft' THEN (ARRAY['insufficient_funds','do_not_honor',
                   'generic_decline','try_again_later'])[1 + (g % 4)]
                   WHEN 'needs_new_card' THEN 'expired_card'
                   WHEN 'needs_customer' THEN 'authentication_required'
                   ELSE 'stolen_card' END,
              (ARRAY['visa','visa','visa','visa','visa','mastercard','mastercard','mastercard',
                     'amex','discover'])[1 + (c / 7) % 10],
              CASE WHEN c % 20 < 12 THEN 'usd' WHEN c % 20 < 17 THEN 'eur' ELSE 'gbp' END,
              amt, CASE WHEN status = 'recovered' THEN amt ELSE 0 END,
              CASE WHEN status = 'recovered' THEN (ARRAY['our_retry','our_retry','our_retry',
                   'card_update_link','card_update_link','hosted_invoice_page',
                   'stripe_retry','out_of_band'])[1 + floor(r3 * 8)::int] END,
              CASE WHEN status = 'closed' THEN (ARRAY['voided','marked_uncollectible',
                   'subscription_cancelled','nothing_due'])[1 + floor(r3 * 4)::int] END,
              opened, CASE WHEN status IN ('recovered','lost','closed')
                           THEN least(opened + r4 * interval '21 days', {now}) END,
              CASE WHEN status = 'recovered' THEN 1 + floor(r4 * 3)::int ELSE floor(r4 * 4)::int
              END,
              CASE WHEN status = 'retrying' THEN {now} + r4 * interval '5 days' END,
              CASE WHEN status = 'retrying' THEN 'next retry after the likely payday' END,
              'https://invoice.stripe.com/i/acct_x/test_in_' || inv, false
       FROM (SELECT *, {now} - age * interval '1 day' AS opened,
                    (ARRAY[900, 1900, 2900, 4900, 9900, 19900])[1 + c % 6] AS amt,
                    CASE WHEN r2 < 0.55 THEN 'soft' WHEN r2 < 0.80 THEN 'needs_new_card'
                         WHEN r2 < 0.92 THEN 'needs_customer' ELSE 'never_retry' END AS category,
                    CASE WHEN age < 21 THEN
                           CASE WHEN r1 < 0.35 THEN 'retrying' WHEN r1 < 0.45
                                THEN 'awaiting_customer' WHEN r1 < 0.50 THEN 'open'
                                WHEN r1 < 0.90 THEN 'recovered' ELSE 'closed' END
                         ELSE CASE WHEN r1 < 0.58 THEN 'recovered' WHEN r1 < 0.85 THEN 'lost'
                                   ELSE 'closed' END END AS status
             FROM bench_cases) x""",
    "SELECT setval(pg_get_serial_sequence('recovery_cases', 'id'), :cases)",
    # The timeline: 5 lines per case, an hour apart.
    """INSERT INTO case_events (case_id, at, kind, summary, data, dedupe_key)
       SELECT id, opened_at + k * interval '1 hour',
              (ARRAY['opened','decision','our_attempt','decision','note'])[k + 1],
              (ARRAY['payment of 49.00 USD failed','retry at the likely payday',
                     'our retry 1 declined: insufficient_funds','retry in 3 days',
                     'reminder planned'])[k + 1],
              '{}', concat('case', chr(58), id, chr(58), k)
       FROM recovery_cases, generate_series(0, 4) k""",
    """INSERT INTO payment_attempts (id, invoice_id, customer_id, payment_method_id, status,
         amount, currency, failure_code, decline_code, card_brand, card_funding,
         card_fingerprint, created, version_ts, version_tiebreak)
       SELECT 'ch_' || id || '_' || k, invoice_id, customer_id, 'pm_' || substr(customer_id, 5),
              'failed', amount_due, currency, 'card_declined', decline_code, card_brand,
              'debit', 'fp_' || substr(customer_id, 5),
              extract(epoch FROM opened_at)::bigint + k * 86400, 0, ''
       FROM recovery_cases, generate_series(0, 1) k WHERE k = 0 OR id % 2 = 0""",
    """INSERT INTO due_actions (kind, subject, dedupe_key, due_at, status, attempts,
         max_attempts, payload, created_at, finished_at)
       SELECT CASE k WHEN 0 THEN 'case.retry' ELSE 'case.window_end' END,
              concat('case', chr(58), id),
              concat('case', chr(58), id, chr(58), CASE k WHEN 0 THEN 'attempt'
                     ELSE 'window_end' END),
              opened_at + (1 + k * 20) * interval '1 day',
              CASE WHEN status IN ('recovered','lost','closed') THEN
                     CASE k WHEN 0 THEN 'done' ELSE 'cancelled' END
                   ELSE 'pending' END,
              1 - k, 8, json_build_object('case_id', id, 'attempt', 1), opened_at,
              closed_at
       FROM recovery_cases, generate_series(0, 1) k""",
    """INSERT INTO outbox_messages (about, case_id, customer_id, channel, template, step, locale,
         recipient, subject, body, send_after, dedupe_key, status, attempts, provider_id,
         created_at, sent_at, finished_at)
       SELECT concat('case', chr(58), id), id, customer_id, ch,
              'reminder_' || ch, 'first', 'en',
              CASE ch WHEN 'email' THEN 'customer' || substr(customer_id, 5) || '@example.com'
                      ELSE '+4915' || lpad(substr(customer_id, 5), 9, '0') END,
              CASE ch WHEN 'email' THEN 'Your payment did not go through' ELSE '' END,
              'Your payment did not go through. Update your card here.',
              opened_at + interval '1 day', concat('bench', chr(58), ch, chr(58), id),
              CASE WHEN opened_at + interval '1 day' <= {now} THEN 'sent' ELSE 'pending' END,
              1, 'prov', opened_at,
              CASE WHEN opened_at + interval '1 day' <= {now} THEN opened_at + interval '1 day'
              END,
              CASE WHEN opened_at + interval '1 day' <= {now} THEN opened_at + interval '1 day'
              END
       FROM recovery_cases, (VALUES ('email'), ('sms')) AS chs(ch)
       WHERE (ch = 'email' AND id % 4 <> 0) OR (ch = 'sms' AND id % 5 = 0)""",
    # Expiring-card notices: one per customer whose card expires around now (a few thousand).
    """INSERT INTO outbox_messages (about, customer_id, channel, template, step, locale,
         recipient, subject, body, send_after, dedupe_key, status, attempts, provider_id,
         created_at, sent_at, finished_at)
       SELECT concat('expiry', chr(58), 'sub_', g, chr(58), 'pm_', g), 'cus_' || g, 'email',
              'card_expiring', 'notice', 'en', 'customer' || g || '@example.com',
              'Your card expires soon', 'Your card expires soon. Update it here.',
              {now} - (g % 40) * interval '1 day', concat('bench', chr(58), 'expiry', chr(58), g),
              'sent', 1, 'prov', {now} - (g % 40) * interval '1 day',
              {now} - (g % 40) * interval '1 day', {now} - (g % 40) * interval '1 day'
       FROM generate_series(1, :customers) g
       WHERE 2026 + (g * 13) % 5 = 2026 AND 1 + (g * 7) % 12 IN (10, 11, 12) AND g % 10 = 0""",
    """INSERT INTO cancel_sessions (id, token_hash, source, customer_id, subscription_id,
         return_url, locale, display_locale, metadata, variant, created_at, expires_at,
         survey_at, offer_shown_at, decided_at, applied_at, reason, reason_text, offer_decided,
         offer_shown, offer_terms, outcome, cancel_at_period_end, ends_at, currency, mrr_before,
         mrr_after, stripe_status)
       SELECT 'cs_' || g, md5('a' || g) || md5('b' || g), 'api', 'cus_' || c, 'sub_' || c,
              'https://example.com/account', 'en', 'en', '{}', 'default', created,
              created + interval '1 day', created + interval '1 minute',
              CASE WHEN o <> 'abandoned' OR r < 0.5 THEN created + interval '2 minutes' END,
              CASE WHEN o <> 'abandoned' THEN created + interval '3 minutes' END,
              CASE WHEN o <> 'abandoned' THEN created + interval '4 minutes' END,
              (ARRAY['too_expensive','not_using','missing_feature','switching',
                     'temporary','other'])[1 + floor(r * 6)::int],
              CASE WHEN g % 7 = 0 THEN 'I only need it in the summer, the price is too high.'
              END,
              true, (ARRAY['pause','downgrade','longer_term','discount'])[1 + g % 4],
              '{}', o, CASE WHEN o = 'cancelled' THEN true END, NULL,
              CASE WHEN c % 20 < 12 THEN 'usd' WHEN c % 20 < 17 THEN 'eur' ELSE 'gbp' END,
              (ARRAY[900, 1900, 2900, 4900, 9900, 19900])[1 + c % 6],
              CASE WHEN o LIKE 'saved%' THEN (ARRAY[900, 1900, 2900, 4900, 9900, 19900])[1 + c % 6]
                   / 2 END,
              CASE WHEN o = 'abandoned' THEN 'none' ELSE 'applied' END
       FROM (SELECT g, (7 * g - 1) % :customers + 1 AS c, random() AS r,
                    {now} - (1 - sqrt(random())) * interval '365 days' AS created,
                    (ARRAY['cancelled','cancelled','cancelled','cancelled','saved_by_pause',
                           'saved_by_downgrade','saved_by_longer_term','saved_by_discount',
                           'abandoned','abandoned'])[1 + floor(random() * 10)::int] AS o
             FROM generate_series(1, :sessions) g) s""",
]


def fill(url: str, invoices: int, cases: int, sessions: int) -> dict[str, Any]:
    from sqlalchemy import create_engine

    params = {
        "invoices": invoices,
        "cases": cases,
        "sessions": sessions,
        "customers": max(invoices // 4, 1),
    }
    if 5 * cases > invoices:
        raise SystemExit("--cases may be at most --invoices / 5 (a case per 5th invoice)")
    now_sql = f"timestamp '{NOW.replace(tzinfo=None).isoformat(sep=' ')}'"
    engine = create_engine(url)
    took: dict[str, Any] = {}
    started = time.perf_counter()
    with engine.begin() as conn:
        for statement in FILL:
            t0 = time.perf_counter()
            sql = statement.replace("{now}", now_sql)
            conn.execute(text(sql), {k: v for k, v in params.items() if f":{k}" in sql})
            head = " ".join(sql.split()[:4])
            took[head] = round(time.perf_counter() - t0, 1)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        t0 = time.perf_counter()
        conn.execute(text("VACUUM ANALYZE"))
        took["VACUUM ANALYZE"] = round(time.perf_counter() - t0, 1)
        counts = {
            table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in (
                "customers",
                "invoices",
                "recovery_cases",
                "case_events",
                "payment_attempts",
                "due_actions",
                "outbox_messages",
                "cancel_sessions",
            )
        }
        size = conn.execute(text("SELECT pg_size_pretty(pg_database_size(current_database()))"))
        counts["database size"] = size.scalar_one()
    engine.dispose()
    took["total"] = round(time.perf_counter() - started, 1)
    return {"rows": counts, "seconds": took, "customers": params["customers"]}


# ---- timing ------------------------------------------------------------------------------------


class StatementLog:
    """Every SQL statement of the requests made while `active`, with its duration."""

    def __init__(self, engine: Engine) -> None:
        self.active = False
        self.rows: list[tuple[float, str, Any]] = []
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        conn.info["bench_t0"] = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if self.active:
            took = time.perf_counter() - conn.info.pop("bench_t0", time.perf_counter())
            self.rows.append((took, statement, params))

    @contextmanager
    def capture(self) -> Iterator[list[tuple[float, str, Any]]]:
        self.rows = []
        self.active = True
        try:
            yield self.rows
        finally:
            self.active = False


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-len(ordered) * q // 100)))
    return ordered[int(rank) - 1]


def time_page(
    get: Callable[[int], Any], n: int, log: StatementLog
) -> tuple[dict[str, Any], tuple[float, str, Any] | None]:
    for i in range(2):  # warm-up: templates compiled, statement caches filled
        get(-1 - i)
    times = []
    statuses: set[int] = set()
    for i in range(n):
        t0 = time.perf_counter()
        resp = get(i)
        times.append((time.perf_counter() - t0) * 1000)
        statuses.add(resp.status_code)
        size = len(resp.get_data())
    with log.capture() as rows:
        get(n)
    slowest = max(rows, key=lambda r: r[0]) if rows else None
    return {
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(pct(times, 95), 1),
        "max_ms": round(max(times), 1),
        "statuses": sorted(statuses),
        "bytes": size,
        "statements": len(rows),
        "sql_ms": round(sum(r[0] for r in rows) * 1000, 1),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }, slowest


def explain(engine: Engine, statement: str, params: Any) -> str:
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, params)
        return "\n".join(str(r[0]) for r in cursor.fetchall())
    finally:
        raw.close()


def deep_cursor(
    engine: Engine, status: str, category: str, page: int, size: int
) -> tuple[Any, int]:
    """The keyset cursor that opens page `page` (or the last full page) of the filtered list."""
    from recovery.services.reporting import case_list

    with engine.connect() as conn:
        total = conn.execute(
            text("SELECT count(*) FROM recovery_cases WHERE status = :s AND decline_category = :c"),
            {"s": status, "c": category},
        ).scalar_one()
        offset = max(0, min((page - 1) * size, total - size)) - 1
        row = conn.execute(
            text(
                "SELECT opened_at, id FROM recovery_cases WHERE status = :s "
                "AND decline_category = :c ORDER BY opened_at DESC, id DESC OFFSET :o LIMIT 1"
            ),
            {"s": status, "c": category, "o": max(offset, 0)},
        ).one()
    cursor = case_list.encode_cursor(row[0].replace(tzinfo=UTC), row[1])
    return cursor, offset // size + 2


def overview_statements(
    rt: Any, n: int, log: StatementLog, pages: dict[str, Callable[[int], Any]]
) -> dict[str, Any]:
    """Where the 90-day overview's time goes (issue 11 item 7): each statement of
    `metrics.overview` (usd, the page's period: the 90 calendar days to today), its median
    over n runs after 2 warm-ups, and per phase - wall, this process's CPU, the time in SQL
    statements (the server's work and the result rows' processing) - for the view alone and
    for the two 90-day pages around it (their rest: the currency picker, the template, the
    charts, the JSON)."""
    from datetime import timedelta

    from recovery.services.reporting import metrics

    today = NOW.date()
    start, end = metrics.period_of(today - timedelta(days=89), today)

    def phases(run: Callable[[], Any]) -> tuple[dict[str, float], list[list[Any]]]:
        walls, cpus, sqls, runs = [], [], [], []
        for i in range(n + 2):
            with log.capture() as rows:
                c0, t0 = time.process_time(), time.perf_counter()
                run()
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            if i >= 2:
                walls.append(wall * 1000)
                cpus.append(cpu * 1000)
                sqls.append(sum(r[0] for r in rows) * 1000)
                runs.append(list(rows))
        return {
            "wall_p50_ms": round(statistics.median(walls), 1),
            "wall_p95_ms": round(pct(walls, 95), 1),
            "cpu_p50_ms": round(statistics.median(cpus), 1),
            "sql_p50_ms": round(statistics.median(sqls), 1),
            "statements": len(runs[0]),
        }, runs

    view, runs = phases(lambda: metrics.overview(rt, start, end, "usd", NOW))
    out = []
    for k in range(min(len(r) for r in runs)):
        ms = statistics.median(r[k][0] for r in runs) * 1000
        out.append({"ms": round(ms, 1), "sql": " ".join(runs[0][k][1].split())})
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    total = sum(o["ms"] for o in out)
    print(
        f"\n== metrics.overview, 90 days, usd: {len(out)} statements, median of {n} runs, "
        f"{total:.1f} ms in SQL; loadavg {load}",
        flush=True,
    )
    for o in sorted(out, key=lambda o: -o["ms"])[:8]:
        print(f"  {o['ms']:>6.1f} ms  {o['sql'][:110]}", flush=True)
    split = {"metrics.overview": view}
    for name in ("/dashboard (90 days)", "/api/v1/metrics (90 days)"):
        split[name], _ = phases(lambda get=pages[name]: get(0))
    print("  per phase, medians (wall p95): wall, this process's CPU, SQL", flush=True)
    for name, f in split.items():
        print(
            f"  {name:<28} wall {f['wall_p50_ms']:>6.1f} ms ({f['wall_p95_ms']:>6.1f})  CPU "
            f"{f['cpu_p50_ms']:>6.1f} ms  SQL {f['sql_p50_ms']:>6.1f} ms in "
            f"{f['statements']} statements",
            flush=True,
        )
    return {"statements": out, "phases": split}


# A day of changes (the bench's business: 200k cases a year, the last three weeks' in progress):
# a day's share (1/21) of the last three weeks' cases paid or lost, a day's renewals paid, the
# last two days' cancel sessions decided - through UPDATEs, so the triggers mark their days
# dirty. The same rows each run (a --reuse run marks the same days dirty again).
A_DAY = [
    """UPDATE recovery_cases SET status = CASE WHEN id % 3 = 0 THEN 'lost' ELSE 'recovered' END,
         amount_recovered = CASE WHEN id % 3 = 0 THEN 0 ELSE amount_due END,
         recovered_via = CASE WHEN id % 3 = 0 THEN NULL ELSE 'our_retry' END,
         closed_at = {now}
       WHERE opened_at > {now} - interval '21 days' AND id % 21 = 0""",
    """UPDATE invoices SET status = 'paid', amount_paid = amount_due, amount_remaining = 0
       WHERE id IN (SELECT 'in_' || (5 * g + 1)
                                        FROM generate_series(1, 200000, 365) g)""",
    """UPDATE cancel_sessions SET outcome = 'cancelled', decided_at = {now}
       WHERE created_at > {now} - interval '2 days'""",
]


def refresh_rollups(rt: Any, when: str) -> dict[str, Any]:
    """The worker's refresh, timed: every dirty (day, currency) recomputed."""
    from recovery.services.reporting.metrics.rollup_refresh import refresh

    with rt.db.engine.connect() as conn:
        dirty = conn.execute(
            text("SELECT count(*), count(DISTINCT (day, currency)) FROM overview_dirty_days")
        ).one()
    t0 = time.perf_counter()
    days = refresh(rt)
    took = round(time.perf_counter() - t0, 2)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"== rollups {when}: {days} (day, currency) recomputed from {dirty[0]} dirty rows in "
        f"{took} s (the worker's refresh); loadavg {load}",
        flush=True,
    )
    return {"days": days, "dirty_rows": dirty[0], "seconds": took, "loadavg": load}


def a_day_of_changes(
    rt: Any, pages: dict[str, Callable[[int], Any]], n: int, log: StatementLog
) -> dict[str, Any]:
    """A day's changes written, the overview timed while their days are dirty (computed
    directly), then the refresh that rolls them up."""
    now_sql = f"timestamp '{NOW.replace(tzinfo=None).isoformat(sep=' ')}'"
    t0 = time.perf_counter()
    with rt.db.engine.begin() as conn:
        changed = sum(conn.execute(text(sql.replace("{now}", now_sql))).rowcount for sql in A_DAY)
    print(
        f"\n== a day of changes: {changed} rows updated in {time.perf_counter() - t0:.1f} s "
        "(cases paid or lost, renewals paid, sessions decided)",
        flush=True,
    )
    out: dict[str, Any] = {"rows": changed}
    for name in ("/dashboard (30 days)", "/api/v1/metrics (90 days)"):
        figures, _ = time_page(pages[name], n, log)
        out[name + " while dirty"] = figures
        print(
            f"  {name + ' (its days dirty)':<58} p50 {figures['p50_ms']:>7.1f} ms  p95 "
            f"{figures['p95_ms']:>7.1f} ms  max {figures['max_ms']:>7.1f} ms; "
            f"loadavg {figures['loadavg']}",
            flush=True,
        )
    out["refresh"] = refresh_rollups(rt, "after a day of changes")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--invoices", type=int, default=1_000_000)
    parser.add_argument("--cases", type=int, default=200_000)
    parser.add_argument("--sessions", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--page", type=int, default=1000, help="depth of the filtered case list")
    parser.add_argument("--status", default="recovered")
    parser.add_argument("--category", default="soft")
    parser.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE every page")
    parser.add_argument("--keep", action="store_true", help="leave PostgreSQL running")
    parser.add_argument(
        "--reuse", metavar="URL", help="time a database a --keep run filled (migrated first)"
    )
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)

    from bench.stack import machine_description, package_versions, postgres_version
    from recovery.adapters.clock import FrozenClock
    from recovery.adapters.stripe_fake import FakeStripeGateway
    from recovery.app import create_app
    from recovery.config import Settings
    from recovery.migrate import upgrade
    from recovery.services.registry import build_runtime
    from recovery.services.reporting import case_list
    from tests.support.dashboard import ADMIN, add_user, login
    from tests.support.postgres import start_postgres

    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    machine = machine_description()
    work = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    server = None if args.reuse else start_postgres(work / "pg", "bench")
    url = args.reuse or (server.url if server else "")
    results: dict[str, Any] = {}
    try:
        upgrade(url)
        if server is not None:
            print(
                f"== filling: {args.invoices} invoices, {args.cases} cases, {args.sessions} "
                f"cancel sessions ({time.strftime('%H:%M:%S')})",
                flush=True,
            )
            filled = fill(url, args.invoices, args.cases, args.sessions)
            results["fill"] = filled
            print(f"  rows: {json.dumps(filled['rows'])}", flush=True)
            print(f"  seconds: {json.dumps(filled['seconds'])}", flush=True)
        else:
            print(f"== reusing {url} as filled by an earlier --keep run", flush=True)

        clock = FrozenClock(NOW)
        settings = Settings(
            database_url=url,
            api_keys=(API_KEY,),
            instance_path=work / "instance",
            log_level="WARNING",
        )
        rt = build_runtime(settings, clock=clock, gateway=FakeStripeGateway(clock=clock))
        results["rollups"] = {"after_fill": refresh_rollups(rt, "after the fill")}
        app = create_app(runtime=rt)
        if server is not None:  # a reused database has its admin already
            add_user(rt, ADMIN, "admin")
        client = app.test_client()
        assert login(client, ADMIN).status_code == 302, "sign-in failed"
        log = StatementLog(rt.db.engine)
        bearer = {"Authorization": f"Bearer {API_KEY}"}

        deep, depth = deep_cursor(
            rt.db.engine, args.status, args.category, args.page, case_list.PAGE_SIZE
        )
        filters = f"status={args.status}&category={args.category}"
        case_ids = [1 + (i * 7919) % args.cases for i in range(args.requests + 3)]
        # The customers of those cases (case g is invoice 5g's, customer (5g - 1) % n + 1).
        n_customers = args.invoices // 4
        customer_ids = [(5 * c - 1) % n_customers + 1 for c in case_ids]
        with rt.db.engine.connect() as conn:
            emails = dict(
                conn.execute(
                    text("SELECT id, email FROM customers WHERE id = ANY(:ids)"),
                    {"ids": [f"cus_{c}" for c in customer_ids]},
                ).all()
            )
        # the middle of the address: "a.okafor1234" of olivia.okafor1234@example.com
        customer_emails = [emails[f"cus_{c}"].split("@")[0][4:] for c in customer_ids]
        pages: dict[str, Callable[[int], Any]] = {
            "/dashboard (30 days)": lambda i: client.get("/dashboard?period=30"),
            "/dashboard (90 days)": lambda i: client.get("/dashboard?period=90"),
            "/api/v1/metrics (30 days)": lambda i: client.get("/api/v1/metrics", headers=bearer),
            "/metrics (Prometheus scrape)": lambda i: client.get("/metrics"),
            "/api/v1/metrics (90 days)": lambda i: client.get(
                "/api/v1/metrics?from=2026-08-04&to=2026-11-01", headers=bearer
            ),
            f"/dashboard/cases?{filters} (page 1)": lambda i: client.get(
                f"/dashboard/cases?{filters}"
            ),
            f"/dashboard/cases?{filters} (page {depth}, keyset)": lambda i: client.get(
                f"/dashboard/cases?{filters}&after={deep}"
            ),
            "/dashboard/cases/<id> (a different case each time)": lambda i: client.get(
                f"/dashboard/cases/{case_ids[i]}"
            ),
            "/dashboard/cases?status=open": lambda i: client.get("/dashboard/cases?status=open"),
            "/dashboard/cases?q=<part of a name> (thousands match)": lambda i: client.get(
                "/dashboard/cases?q=kafo"
            ),
            "/dashboard/cases?q=<part of an email> (one customer)": lambda i: client.get(
                f"/dashboard/cases?q={customer_emails[i]}"
            ),
            "/dashboard/cases?q=in_<id>": lambda i: client.get(
                f"/dashboard/cases?q=in_{5 * case_ids[i]}"
            ),
            "/dashboard/cases?q=cus_<id>": lambda i: client.get(
                f"/dashboard/cases?q=cus_{customer_ids[i]}"
            ),
            "/dashboard/cases?q=%23<case>": lambda i: client.get(
                f"/dashboard/cases?q=%23{case_ids[i]}"
            ),
            "/dashboard/customers/<id> (a different one each time)": lambda i: client.get(
                f"/dashboard/customers/cus_{customer_ids[i]}"
            ),
        }
        print(f"\n== timing: {args.requests} requests per page after 2 warm-ups", flush=True)
        timings: dict[str, Any] = {}
        for name, get in pages.items():
            figures, slowest = time_page(get, args.requests, log)
            timings[name] = figures
            met = figures["p95_ms"] < TARGET_P95_MS and figures["statuses"] == [200]
            print(
                f"  {name:<58} p50 {figures['p50_ms']:>7.1f} ms  p95 {figures['p95_ms']:>7.1f} "
                f"ms  max {figures['max_ms']:>7.1f} ms  [{'met' if met else 'MISSED'}]  "
                f"HTTP {figures['statuses']}; {figures['statements']} statements, "
                f"{figures['sql_ms']} ms in SQL; loadavg {figures['loadavg']}",
                flush=True,
            )
            if slowest is not None:
                sql = " ".join(slowest[1].split())
                print(f"      slowest statement {slowest[0] * 1000:.1f} ms: {sql[:220]}")
                figures["slowest_sql"] = sql
                figures["slowest_sql_ms"] = round(slowest[0] * 1000, 1)
                if args.explain or not met:
                    plan = explain(rt.db.engine, slowest[1], slowest[2])
                    figures["plan"] = plan
                    print("      " + plan.replace("\n", "\n      "))
        results["timings"] = timings
        results["overview_statements"] = overview_statements(rt, args.requests, log, pages)
        results["rollups"]["after_a_day"] = a_day_of_changes(rt, pages, args.requests, log)
        rt.db.dispose()
        pg = postgres_version(server.bin_dir if server else None)
        with rt.db.engine.connect() as conn:
            indexes = [
                r[0]
                for r in conn.execute(
                    text(
                        "SELECT indexname FROM pg_indexes WHERE tablename IN "
                        "('recovery_cases', 'cancel_sessions', 'outbox_messages', 'case_events',"
                        " 'customers') ORDER BY 1"
                    )
                )
            ]
    finally:
        if server is not None and args.keep:
            from tests.support import postgres

            postgres._running_servers.pop(id(server), None)  # not stopped at exit: reused later
            print(
                f"\nPostgreSQL left running: {server.url} (stop: python -m "
                f"tests.support.postgres stop {server.data_dir})"
            )
        elif server is not None:
            server.stop()

    print("\n== how these figures were made")
    print(f"  started {started}; command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"  machine: {json.dumps(machine)}")
    print(f"  loadavg at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    versions = package_versions(["flask", "sqlalchemy", "psycopg", "jinja2"])
    print(f"  versions: {json.dumps(versions)}; {pg}")
    print(
        "  requests: Flask test client in this process (no HTTP, no gunicorn), signed in as an "
        "admin; clock frozen at 2026-11-02 09:00 UTC; PostgreSQL throwaway (fsync=off)"
    )
    print(f"  indexes on the dashboard's tables: {', '.join(indexes)}")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
