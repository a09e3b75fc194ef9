"""Peer benchmark: recovery's webhook vs dj-stripe's, same events, same server, same database.

    .venv/bin/python bench/djstripe_peer.py [--seconds 60] [--rate 100] [--model gthread:2x4]

In one run, on one throwaway PostgreSQL (two databases):

- recovery: gunicorn `wsgi:app` in its default mode (the request verifies and stores the
  event; a `recovery worker` process beside it processes it, and the fixed-rate run reports
  how long that took after receipt);
- dj-stripe 2.11 on Django 5.2 (PyPI), stock mode: its webhook view stores the trigger,
  verifies the signature, then re-fetches the object of every event from the Stripe API and
  syncs it (and what it references). The API is a local stand-in (bench/stripe_standin.py)
  serving the same Stripe-shaped objects the events carry - on loopback, so the ~100-300 ms a
  real Stripe round trip costs is NOT included: stock dj-stripe is measured at its best.

Both behind gunicorn with the same worker model, fed by the same load generator
(bench/loadgen.py: same event mix and seed, fresh ids and signatures) - a closed-loop run and a
fixed-rate run each. The Django project is generated in a temp dir; dj-stripe lives in its own
virtualenv under ~/.cache/recovery-bench (created on first use), never in .venv.
Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy.engine import make_url  # noqa: E402

from bench.stack import (  # noqa: E402
    CpuMeter,
    Gunicorn,
    WorkerModel,
    free_port,
    machine_description,
    package_versions,
    postgres_version,
    postmaster_pid,
    run_loadgen,
    wait_http,
)
from bench.webhook_ingest import (  # noqa: E402
    SECRET,
    app_env,
    check_inbox,
    errors_of,
    fmt_latency,
    line,
    processed_latency,
    start_worker,
    stop_worker,
    truncate,
)
from recovery.migrate import upgrade  # noqa: E402
from tests.support.postgres import start_postgres  # noqa: E402

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "recovery-bench"
PINS = ["dj-stripe==2.11.0", "Django==5.2.*", "gunicorn==27.0.1", "psycopg[binary]==3.3.9"]
DJ_SECRET = "whsec_djbench_" + "s" * 24
DJ_KEY = "sk_test_" + "Bench0123456789abcdefXYZ"  # fake, shaped like a real test key
ENDPOINT_UUID = uuid.UUID("6f1c7c3e-5d0b-4a55-9b3e-0c2f8d0a1b2c")


def ensure_venv() -> Path:
    """dj-stripe's own virtualenv (cached); returns its bin directory."""
    venv = CACHE / "djstripe-venv"
    marker = venv / ".bench-pins"
    if not (marker.exists() and marker.read_text() == "\n".join(PINS)):
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", *PINS],
            check=True,
        )
        marker.write_text("\n".join(PINS))
    return venv / "bin"


def write_project(project: Path, database_url: str, api_port: int) -> None:
    url = make_url(database_url)
    (project / "djbench").mkdir(parents=True)
    (project / "djbench" / "__init__.py").write_text("")
    settings = f"""
        SECRET_KEY = "bench-only-not-secret-{uuid.uuid4().hex}"
        DEBUG = False
        ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
        INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "djstripe"]
        MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
        ROOT_URLCONF = "djbench.urls"
        USE_TZ = True
        DATABASES = {{"default": {{
            "ENGINE": "django.db.backends.postgresql",
            "NAME": {url.database!r}, "USER": {url.username!r}, "HOST": {url.host!r},
            "PORT": {url.port!r}, "CONN_MAX_AGE": 60,
        }}}}
        DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
        STRIPE_LIVE_MODE = False
        STRIPE_TEST_SECRET_KEY = {DJ_KEY!r}
        DJSTRIPE_FOREIGN_KEY_TO_FIELD = "id"
        DJSTRIPE_WEBHOOK_VALIDATION = "verify_signature"
        STRIPE_API_HOST = "http://127.0.0.1:{api_port}"
        LOGGING = {{"version": 1, "disable_existing_loggers": False,
                    "handlers": {{"stderr": {{"class": "logging.StreamHandler"}}}},
                    "root": {{"handlers": ["stderr"], "level": "WARNING"}}}}
    """
    (project / "djbench" / "settings.py").write_text(textwrap.dedent(settings))
    (project / "djbench" / "urls.py").write_text(
        "from django.urls import include, path\n"
        'urlpatterns = [path("stripe/", include("djstripe.urls", namespace="djstripe"))]\n'
    )
    (project / "djbench" / "wsgi.py").write_text(
        "import os\n"
        'os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djbench.settings")\n'
        "from django.core.wsgi import get_wsgi_application\n"
        "application = get_wsgi_application()\n"
    )
    seed = f"""
        import os
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djbench.settings")
        import django
        django.setup()
        from djstripe.models import APIKey, WebhookEndpoint
        # The API key row and its Account (one GET /v1/account to the stand-in, now, not per
        # event) - without them every event asks Stripe for the account.
        key, _ = APIKey.objects.get_or_create_by_api_key({DJ_KEY!r})
        key.refresh_account()
        key.refresh_from_db()
        WebhookEndpoint.objects.update_or_create(
            id="we_bench0000000001",
            defaults=dict(
                djstripe_uuid={str(ENDPOINT_UUID)!r}, secret={DJ_SECRET!r},
                url="http://127.0.0.1/stripe/webhook/{ENDPOINT_UUID}/", enabled_events=["*"],
                status="enabled", livemode=False, api_version="2026-05-27.dahlia",
                djstripe_validation_method="verify_signature", djstripe_tolerance=300,
                djstripe_owner_account=key.djstripe_owner_account,
            ),
        )
        print("account", key.djstripe_owner_account_id)
    """
    (project / "seed.py").write_text(textwrap.dedent(seed))
    check = """
        import json, os, sys
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djbench.settings")
        import django
        django.setup()
        from djstripe.models import Event, WebhookEventTrigger
        acked = set(open(sys.argv[1]).read().split())
        ids = set(Event.objects.values_list("id", flat=True))
        print(json.dumps({
            "acked": len(acked), "events": len(ids), "acked_missing": len(acked - ids),
            "triggers": WebhookEventTrigger.objects.count(),
            "triggers_processed": WebhookEventTrigger.objects.filter(processed=True).count(),
            "triggers_with_error": WebhookEventTrigger.objects.exclude(exception="").count(),
            "errors": list(WebhookEventTrigger.objects.exclude(exception="")
                           .values_list("exception", flat=True).distinct()[:5]),
        }))
    """
    (project / "check.py").write_text(textwrap.dedent(check))
    truncate = """
        import os
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djbench.settings")
        import django
        django.setup()
        from django.db import connection
        keep = {"djstripe_apikey", "djstripe_account", "djstripe_webhookendpoint"}
        with connection.cursor() as cur:
            cur.execute("select tablename from pg_tables where schemaname='public' "
                        "and tablename like 'djstripe_%'")
            tables = [r[0] for r in cur.fetchall() if r[0] not in keep]
            cur.execute("TRUNCATE " + ", ".join(tables) + " CASCADE")
    """
    (project / "truncate.py").write_text(textwrap.dedent(truncate))


def django(bin_dir: Path, project: Path, *args: str, timeout: float = 600) -> str:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "djbench.settings", "PYTHONPATH": str(project)}
    result = subprocess.run(
        [str(bin_dir / "python"), *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result.stdout


def measure(
    name: str,
    url: str,
    secret: str,
    g: Gunicorn,
    args: argparse.Namespace,
    work: Path,
    pg_pid: int | None,
) -> dict[str, Any]:
    def meter() -> CpuMeter:
        roots = {"gunicorn": g.proc.pid}
        if pg_pid:
            roots["postgres"] = pg_pid
        if args.standin_pid:
            roots["stripe stand-in"] = args.standin_pid
        return CpuMeter(roots)

    closed_ids, rate_ids = work / f"{name}-closed.txt", work / f"{name}-rate.txt"
    closed = run_loadgen(
        url,
        secret,
        seconds=args.seconds,
        connections=args.connections,
        ids_out=closed_ids,
        meter=meter(),
    )
    print(line(f"{name} closed loop", closed), flush=True)
    return {"closed": closed, "closed_ids": closed_ids, "rate_ids": rate_ids, "meter": meter}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=100.0, help="fixed-rate run, events/s")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--model", default="gthread:2x4", help="sync:N or gthread:WxT")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    model = WorkerModel.parse(args.model)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    machine = machine_description()

    bin_dir = ensure_venv()
    work = Path(tempfile.mkdtemp(prefix="bench-djstripe-"))
    project = work / "project"
    server = start_postgres(work / "pg", "bench_recovery")
    standin = None
    results: dict[str, Any] = {}
    try:
        recovery_url = server.url
        upgrade(recovery_url)
        dj_url = server.create_database("bench_djstripe")
        api_port = free_port()
        counts_file = work / "standin-counts.json"
        standin = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bench" / "stripe_standin.py"),
                "--port",
                str(api_port),
                "--counts-out",
                str(counts_file),
            ],
            stdin=subprocess.DEVNULL,
        )
        wait_http(api_port, path="/v1/account")
        args.standin_pid = standin.pid
        write_project(project, dj_url, api_port)
        t0 = time.monotonic()
        django(bin_dir, project, "-m", "django", "migrate", "--noinput")
        print(f"dj-stripe migrations: {time.monotonic() - t0:.0f} s", flush=True)
        print(django(bin_dir, project, "seed.py").strip(), flush=True)
        pg_pid = postmaster_pid(server.data_dir)

        # -- recovery
        env = app_env(recovery_url, False, work / "instance")
        print(f"\n== recovery (wsgi:app, the default mode), {model.label}", flush=True)
        with Gunicorn("wsgi:app", model, env, log_file=work / "recovery.log") as g:
            url = g.url + "/webhooks/stripe"
            r = measure("recovery", url, SECRET, g, args, work, pg_pid)
            r["closed"]["inbox"] = check_inbox(recovery_url, r["closed_ids"])
            print(f"    inbox: {json.dumps(r['closed']['inbox'])}", flush=True)
            # The closed loop's events are left pending (no worker ran): without this the worker
            # would spend the fixed-rate run on that backlog, and the receipt-to-processed
            # figure would measure the backlog, not the fixed rate.
            truncate(recovery_url)
            worker = start_worker(recovery_url, work)  # processes what the requests store
            try:
                r["rate"] = run_loadgen(
                    url,
                    SECRET,
                    seconds=args.seconds,
                    rate=args.rate,
                    ids_out=r["rate_ids"],
                    meter=r["meter"](),
                )
                r["rate"]["processed"] = processed_latency(recovery_url, r["rate_ids"])
            finally:
                stop_worker(worker)
            r["rate"]["inbox"] = check_inbox(recovery_url, r["rate_ids"])
            print(line(f"recovery fixed {args.rate:g}/s", r["rate"]), flush=True)
            print(f"    receipt to processed: {json.dumps(r['rate']['processed'])}", flush=True)
        results["recovery"] = r

        # -- dj-stripe, stock
        dj_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("RECOVERY_", "STRIPE_"))},
            "DJANGO_SETTINGS_MODULE": "djbench.settings",
            "PYTHONPATH": str(project),
        }
        print(f"\n== dj-stripe (stock: re-fetch from the stand-in API), {model.label}", flush=True)
        with Gunicorn(
            "djbench.wsgi:application",
            model,
            dj_env,
            gunicorn=bin_dir / "gunicorn",
            cwd=project,
            log_file=work / "djstripe.log",
        ) as g:
            url = f"{g.url}/stripe/webhook/{ENDPOINT_UUID}/"
            d = measure("dj-stripe", url, DJ_SECRET, g, args, work, pg_pid)
            d["closed"]["stored"] = json.loads(
                django(bin_dir, project, "check.py", str(d["closed_ids"]))
            )
            print(f"    stored: {json.dumps(d['closed']['stored'])}", flush=True)
            django(bin_dir, project, "truncate.py")
            d["rate"] = run_loadgen(
                url,
                DJ_SECRET,
                seconds=args.seconds,
                rate=args.rate,
                ids_out=d["rate_ids"],
                meter=d["meter"](),
            )
            d["rate"]["stored"] = json.loads(
                django(bin_dir, project, "check.py", str(d["rate_ids"]))
            )
            print(line(f"dj-stripe fixed {args.rate:g}/s", d["rate"]), flush=True)
            print(f"    stored: {json.dumps(d['rate']['stored'])}", flush=True)
        results["djstripe"] = d
        pg = postgres_version(server.bin_dir)
    finally:
        if standin is not None and standin.poll() is None:
            standin.terminate()
            standin.wait(timeout=10)
        server.stop()
    calls = json.loads(counts_file.read_text()) if counts_file.exists() else {}
    dj_sent = results["djstripe"]["closed"]["sent"] + results["djstripe"]["rate"]["sent"]

    rec, dj = results["recovery"], results["djstripe"]
    ratio = rec["closed"]["ok_rps"] / dj["closed"]["ok_rps"] if dj["closed"]["ok_rps"] else 0
    print("\n== summary (closed loop: throughput; fixed rate: latency from each due time)")
    for name, r in (("recovery", rec), ("dj-stripe (stock)", dj)):
        print(
            f"  {name:<18} {r['closed']['ok_rps']:>7.1f} events/s, non-2xx "
            f"{errors_of(r['closed'])}; at {args.rate:g}/s: {fmt_latency(r['rate'])}, "
            f"non-2xx {errors_of(r['rate'])}"
        )
    done = rec["rate"]["processed"]
    print(
        f"  recovery at {args.rate:g}/s: processed within p50 {done['p50_ms']} ms, "
        f"p95 {done['p95_ms']} ms, p99 {done['p99_ms']} ms (worker beside gunicorn)"
    )
    print(f"  ratio recovery / dj-stripe: {ratio:.1f}x")
    total_calls = sum(calls.values())
    print(
        f"  dj-stripe's calls to the Stripe stand-in: {total_calls} for {dj_sent} events "
        f"({total_calls / max(dj_sent, 1):.2f} per event): {json.dumps(calls)}"
    )
    print("\n== how these figures were made")
    print(f"  started {started}; command: {shlex.join([sys.executable, *sys.argv])}")
    print(
        f"  machine: {json.dumps(machine)}; loadavg at end "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (shared machine: noisy)"
    )
    print(f"  recovery side: {json.dumps(package_versions(['gunicorn', 'flask', 'sqlalchemy']))}")
    dj_versions = package_versions(
        ["dj-stripe", "django", "stripe", "gunicorn", "psycopg"], bin_dir / "python"
    )
    print(f"  dj-stripe side: {json.dumps(dj_versions)}")
    print(f"  {pg}; both apps on one throwaway server (fsync=off), two databases")
    print(
        f"  gunicorn {model.label} for both; load: bench/loadgen.py, {args.connections} "
        f"connections x {args.seconds:g} s closed loop, then {args.rate:g}/s for "
        f"{args.seconds:g} s; dj-stripe mode: stock (re-fetch via STRIPE_API_HOST stand-in)"
    )
    if args.json_out:
        for r in results.values():
            r.pop("meter", None)
        args.json_out.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
