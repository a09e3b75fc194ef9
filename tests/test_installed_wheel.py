"""The service as a business installs it: `python -m build` makes an sdist and a wheel, the wheel
goes into a fresh virtualenv, and `recovery run` from an empty directory serves every page -
templates, translations, the default rules and the Alembic migrations all come from the
installed package, none from this checkout."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import stripe

from tests.support.localstripe_server import (
    DEFAULT_SECRET_KEY,
    LocalStripe,
    fail_renewal,
    register_webhook,
    start_localstripe,
)

ROOT = Path(__file__).resolve().parents[1]
WEBHOOK_SECRET = "whsec_dev_local"  # the development default of STRIPE_WEBHOOK_SECRETS
API_KEY = "installed-wheel-test-key"

pytestmark = [pytest.mark.slow, pytest.mark.localstripe]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Installed:
    python: Path
    base_url: str
    instance: Path
    env: dict[str, str]


def _run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"{args}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _request(
    url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _wait_for(url: str, status: int = 200, seconds: float = 60) -> str:
    deadline = time.monotonic() + seconds
    last: tuple[int, str] = (0, "")
    while time.monotonic() < deadline:
        try:
            last = _request(url)
            if last[0] == status:
                return last[1]
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} never answered {status}; last: {last}")


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # The sdist first, then the wheel built from the unpacked sdist: both must carry the files.
    _run(sys.executable, "-m", "build", "--outdir", out, ROOT)
    return out


@pytest.fixture(scope="module")
def localstripe() -> Iterator[LocalStripe]:
    server = start_localstripe()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def installed(
    dists: Path, localstripe: LocalStripe, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installed]:
    venv = tmp_path_factory.mktemp("venv")
    _run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    (wheel,) = dists.glob("*.whl")
    _run(python, "-m", "pip", "install", "--disable-pip-version-check", "-q", wheel)
    empty = tmp_path_factory.mktemp("empty")  # no templates/, migrations/ or rules here
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(empty),
        "RECOVERY_INSTANCE_PATH": str(empty / "instance"),
        "RECOVERY_API_KEYS": API_KEY,
        "RECOVERY_PUBLIC_URL": base,
        "RECOVERY_WORKER_TICK_SECONDS": "0.2",
        "STRIPE_API_KEY": DEFAULT_SECRET_KEY,
        "STRIPE_API_BASE": localstripe.base_url,
        "STRIPE_WEBHOOK_SECRETS": WEBHOOK_SECRET,
    }
    server = subprocess.Popen(
        [venv / "bin" / "recovery", "run", "--port", str(port)],
        cwd=empty,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(f"{base}/healthz")
        register_webhook(
            localstripe.base_url, f"{base}/webhooks/stripe", WEBHOOK_SECRET, webhook_id="wheel"
        )
        yield Installed(python=python, base_url=base, instance=empty / "instance", env=env)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


def test_sdist_and_wheel_carry_templates_migrations_translations_and_rules(dists: Path) -> None:
    (wheel,) = dists.glob("*.whl")
    (sdist,) = dists.glob("*.tar.gz")
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    with tarfile.open(sdist) as tar:
        in_sdist = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    for path in (
        "recovery/templates/emails/soft_decline.txt",
        "recovery/templates/cancel_flow/survey.html",
        "recovery/templates/card_update/update.html",
        "recovery/templates/dashboard/overview.html",
        "recovery/migrations/env.py",
        "recovery/migrations/script.py.mako",
        "recovery/migrations/versions/0001_foundation_inbox_mirror_due_actions.py",
        "recovery/translations/de/LC_MESSAGES/messages.po",
        "recovery/rules.default.toml",
        "recovery/web/static/banner.js",
    ):
        assert path in in_wheel, path
    for path in ("templates/emails/soft_decline.txt", "migrations/env.py", "setup.py"):
        assert path in in_sdist, path


def _api(base: str, path: str, payload: dict[str, Any] | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    data = None
    if payload is not None:
        data = json.dumps(payload).encode()
        headers["Content-Type"] = "application/json"
    status, text = _request(f"{base}{path}", data=data, headers=headers)
    return status, json.loads(text)


def test_installed_service_serves_webhooks_card_update_and_cancel_flow(
    installed: Installed, localstripe: LocalStripe
) -> None:
    base = installed.base_url
    where = _run(
        installed.python, "-c", "import recovery; print(recovery.__file__)", cwd=installed.instance
    )
    assert "site-packages" in where and str(ROOT) not in where

    # A bad signature is refused, as any webhook the service did not get from Stripe.
    status, _ = _request(
        f"{base}/webhooks/stripe", data=b"{}", headers={"Stripe-Signature": "t=1,v1=00"}
    )
    assert status == 400

    # A renewal fails at Stripe (localstripe); its signed webhooks open a case.
    client = stripe.StripeClient(
        DEFAULT_SECRET_KEY, base_addresses={"api": localstripe.base_url}, max_network_retries=0
    )
    product = client.v1.products.create({"name": "Pro"})
    plan = client.v1.plans.create(
        {"product": product.id, "amount": 2000, "currency": "usd", "interval": "month"}
    )
    customer = client.v1.customers.create({"email": "wheel@example.com", "name": "Wheel"})
    good = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    client.v1.customers.update(
        customer.id, {"invoice_settings": {"default_payment_method": good.id}}
    )
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"plan": plan.id}]}
    )
    _, declined = fail_renewal(client, localstripe.base_url, customer.id, subscription.id)
    assert declined == 402
    deadline = time.monotonic() + 30
    cases: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not cases:
        status, listing = _api(base, f"/api/v1/cases?customer={customer.id}")
        assert status == 200
        cases = listing["data"]
        time.sleep(0.2)
    assert cases, "no case opened from localstripe's webhooks"

    # The card-update page, from a link the installed package makes for the case.
    make_link = (
        "from datetime import UTC, datetime\n"
        "from recovery.config import Settings\n"
        "from recovery.models import RecoveryCase\n"
        "from recovery.services.card_update.links import link_for_case\n"
        "from recovery.services.registry import build_runtime\n"
        "rt = build_runtime(Settings.from_env())\n"
        "with rt.db.transaction() as s:\n"
        f"    case = s.get(RecoveryCase, {cases[0]['id']})\n"
        "    print(link_for_case(s, case, datetime.now(UTC), settings=rt.settings,"
        " rules=rt.rules))\n"
    )
    link = _run(installed.python, "-c", make_link, cwd=installed.instance, env=installed.env)
    link = link.strip()
    assert link.startswith(f"{base}/update/")
    status, page = _request(link)
    assert status == 200
    assert "$20.00" in page and "Acme" in page

    # The cancel flow's first page, started the way a business starts it.
    status, started = _api(
        base,
        "/api/v1/cancel-sessions",
        {"customer": customer.id, "subscription": subscription.id, "return_url": "https://a.test"},
    )
    assert status == 201, started
    status, page = _request(started["url"])
    assert status == 200
    assert "<form" in page and "cancel" in page.lower()

    status, health = _request(f"{base}/healthz")
    assert status == 200 and json.loads(health)["status"] == "ok"
