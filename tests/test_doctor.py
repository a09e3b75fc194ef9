"""`recovery doctor` against real local parts: a database at and behind the latest migration, a
worker's heartbeat, aiosmtpd with and without STARTTLS and AUTH, a DNS server on loopback with
good and bad SPF/DKIM/DMARC records, the Twilio stand-in through the real SDK, the Stripe fake
and Stripe's account reads through the real SDK. Every failure names its fix."""

from __future__ import annotations

import base64
import ssl
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from recovery.adapters.clock import FrozenClock
from recovery.adapters.stripe.protocol import PINNED_API_VERSION
from recovery.adapters.stripe.sdk import StripeSdkGateway
from recovery.adapters.stripe_fake import FakeStripeGateway
from recovery.migrate import upgrade
from recovery.runtime import Runtime
from recovery.services.ops import mail_checks, stripe_checks, twilio_checks
from recovery.services.ops.checks import Check, Status
from recovery.services.ops.doctor import run
from recovery.services.registry import ON_EVENT, build_runtime
from recovery.worker import Worker
from tests.conftest import make_settings
from tests.support.dns_server import Zone, dns_server
from tests.support.smtp_auth import client_trusting, self_signed, smtp_server
from tests.support.stripe_account import endpoint, stripe_account
from tests.support.twilio_fake import TwilioFake, twilio_fake

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "0123456789abcdef" * 2
SERVICE = "MG" + "fedcba9876543210" * 2
KEY = "rk_test_51DoctorProbe"
EVENTS = stripe_checks.stripe_event_types(ON_EVENT)
DKIM_KEY = base64.b64encode(bytes(range(256)) + bytes(38)).decode()  # a 2048-bit key's length
GOOD_DNS = {
    "acme.example": ["v=spf1 include:_spf.mail.example -all", "google-site-verification=x"],
    "s1._domainkey.acme.example": [f"v=DKIM1; k=rsa; p={DKIM_KEY}"],
    "_dmarc.acme.example": ["v=DMARC1; p=quarantine; rua=mailto:dmarc@acme.example"],
}


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def assert_fails(check: Check, *in_fix: str) -> None:
    assert check.status is Status.FAIL, check
    assert check.fix, f"{check.name} fails without saying what to do"
    for words in in_fix:
        assert words in check.fix, (words, check.fix)


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


def runtime_for(url: str, tmp_path: Path, clock: FrozenClock, gateway: Any, **kw: Any) -> Runtime:
    return build_runtime(make_settings(url, tmp_path, **kw), clock=clock, gateway=gateway)


# ---- the installation ---------------------------------------------------------------------------


def test_database_migrations_and_worker(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any
) -> None:
    rt = runtime_for(database_url, tmp_path, clock, fake_gateway)
    checks = by_name(run(rt).checks)
    assert checks["database"].status is Status.OK
    assert checks["migrations"].status is Status.OK
    assert_fails(checks["worker"], "recovery worker", "recovery run")  # none ever ran

    Worker(rt).heartbeat()
    assert by_name(run(rt).checks)["worker"].status is Status.OK
    clock.advance(timedelta(minutes=10))
    stale = by_name(run(rt).checks)["worker"]
    assert "10 min ago" in stale.detail
    assert_fails(stale, "recovery worker")
    rt.db.dispose()


def test_a_database_behind_the_code_says_to_migrate(
    tmp_path: Path, clock: FrozenClock, fake_gateway: Any
) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0009")
    rt = runtime_for(url, tmp_path, clock, fake_gateway)
    migrations = by_name(run(rt).checks)["migrations"]
    assert "at 0009" in migrations.detail
    assert_fails(migrations, "recovery db upgrade")
    rt.db.dispose()


def test_an_unreachable_database_is_named(
    tmp_path: Path, clock: FrozenClock, fake_gateway: Any
) -> None:
    url = "postgresql+psycopg://recovery:pw@127.0.0.1:1/recovery?connect_timeout=5"
    rt = runtime_for(url, tmp_path, clock, fake_gateway)
    report = run(rt)
    assert report.failed
    assert_fails(by_name(report.checks)["database"], "RECOVERY_DATABASE_URL")
    assert "worker" not in by_name(report.checks)  # nothing to read heartbeats from
    assert "pw" not in report.checks[0].detail
    rt.db.dispose()
    missing = runtime_for(f"sqlite:///{tmp_path / 'none.db'}", tmp_path, clock, fake_gateway)
    assert_fails(run(missing).checks[0], "recovery db upgrade")
    assert not (tmp_path / "none.db").exists()  # the doctor created nothing


@pytest.mark.parametrize(
    ("env", "url", "status", "fix"),
    [
        ("production", "http://billing.example.com", Status.FAIL, "https://"),
        ("production", "https://127.0.0.1:5000", Status.FAIL, "public https address"),
        ("production", "https://billing.example.com", Status.OK, ""),
        ("development", "http://127.0.0.1:5000", Status.OK, ""),
    ],
)
def test_the_public_url_is_https_in_production(
    sqlite_url: str, tmp_path: Path, env: str, url: str, status: Status, fix: str
) -> None:
    from recovery.services.ops.local_checks import public_url

    check = public_url(make_settings(sqlite_url, tmp_path, env=env, public_url=url))
    assert check.status is status, check
    assert fix in check.fix


# ---- SMTP ---------------------------------------------------------------------------------------


def smtp_check(url: str, trust: ssl.SSLContext | None) -> Check:
    settings = make_settings("sqlite://", Path("."), smtp_url=url)
    return mail_checks.smtp(settings, ssl_context=trust, timeout=10)


def test_smtp_plain_relay_on_loopback() -> None:
    with smtp_server() as sink:
        check = smtp_check(f"smtp://127.0.0.1:{sink.port}?tls=none", None)
    assert check.status is Status.OK and "EHLO ok" in check.detail, check
    assert sink.messages == []  # nothing sent


def test_smtp_starttls_and_login(cert: tuple[Path, Path]) -> None:
    with smtp_server(tls=cert, users={"mailer": "s3cret"}) as sink:
        port = sink.port
        good = smtp_check(
            f"smtp://mailer:s3cret@127.0.0.1:{port}?tls=starttls", client_trusting(cert[0])
        )
        wrong = smtp_check(
            f"smtp://mailer:nope@127.0.0.1:{port}?tls=starttls", client_trusting(cert[0])
        )
        untrusted = smtp_check(f"smtp://mailer:s3cret@127.0.0.1:{port}?tls=starttls", None)
        no_tls = smtp_check(f"smtp://mailer:s3cret@127.0.0.1:{port}?tls=none", None)
    assert good.status is Status.OK and "EHLO, STARTTLS, AUTH ok" in good.detail, good
    assert_fails(wrong, "password")
    assert "refused the login (535)" in wrong.detail
    assert_fails(untrusted, "host name written on the server's certificate")
    assert_fails(no_tls, "tls=starttls")  # AUTH is offered only after STARTTLS
    assert sink.messages == []


def test_smtp_auth_on_a_plain_loopback_relay_and_a_server_that_is_down() -> None:
    with smtp_server(users={"mailer": "s3cret"}, auth_require_tls=False) as sink:
        url = f"smtp://mailer:s3cret@localhost:{sink.port}?tls=none"
        assert smtp_check(url, None).status is Status.OK  # loopback
    settings = make_settings("sqlite://", Path("."), smtp_url="smtp://u:p@192.0.2.1:25?tls=none")
    # Not loopback and no TLS: would warn once connected; here nothing listens at all.
    down = mail_checks.smtp(settings, ssl_context=None, timeout=0.5)
    assert_fails(down, "host and port")


def test_smtp_starttls_asked_of_a_server_without_it() -> None:
    with smtp_server() as sink:
        check = smtp_check(f"smtp://127.0.0.1:{sink.port}?tls=starttls", None)
    assert "does not offer STARTTLS" in check.detail
    assert_fails(check, "587", "465")


def test_smtp_not_set_is_a_warning_saying_what_to_set() -> None:
    check = smtp_check("", None)
    assert check.status is Status.WARN and "RECOVERY_SMTP_URL" in check.fix


# ---- SPF, DKIM, DMARC against a DNS server on loopback -----------------------------------------


def dns_checks(zone: Zone, selector: str = "s1", mail_from: str = "") -> dict[str, Check]:
    settings = make_settings(
        "sqlite://",
        Path("."),
        dns_servers=(zone.server,),
        dkim_selector=selector,
        mail_from=mail_from,
    )
    return by_name(mail_checks.mail(settings, "billing@acme.example", ssl_context=None, timeout=5))


def test_good_records_pass() -> None:
    with dns_server(GOOD_DNS) as zone:
        checks = dns_checks(zone)
    assert {n: checks[n].status for n in ("SPF", "DKIM", "DMARC")} == dict.fromkeys(
        ("SPF", "DKIM", "DMARC"), Status.OK
    )
    assert "p=quarantine" in checks["DMARC"].detail
    assert "s1._domainkey.acme.example" in zone.asked


def test_the_sender_domain_comes_from_a_display_name_mail_from() -> None:
    records = {k.replace("acme.example", "globex.example"): v for k, v in GOOD_DNS.items()}
    with dns_server(records) as zone:
        checks = dns_checks(zone, mail_from="Robin at Globex <robin@globex.example>")
    assert checks["SPF"].status is Status.OK and "globex.example" in checks["SPF"].detail


BAD_DNS: list[tuple[str, dict[str, list[str] | None], str, Status, str]] = [
    ("no SPF", {"acme.example": ["google-site-verification=x"]}, "SPF", Status.FAIL, "v=spf1"),
    ("two SPF", {"acme.example": ["v=spf1 -all", "v=spf1 mx -all"]}, "SPF", Status.FAIL, "merge"),
    ("SPF +all", {"acme.example": ["v=spf1 +all"]}, "SPF", Status.FAIL, "-all"),
    ("SPF open end", {"acme.example": ["v=spf1 mx"]}, "SPF", Status.WARN, "-all"),
    ("no DKIM", {"s1._domainkey.acme.example": None}, "DKIM", Status.FAIL, "DKIM public key"),
    ("revoked DKIM", {"s1._domainkey.acme.example": ["v=DKIM1; p="]}, "DKIM", Status.FAIL, "TXT"),
    ("bad DKIM", {"s1._domainkey.acme.example": ["v=DKIM1; p=@@@"]}, "DKIM", Status.FAIL, "whole"),
    ("no DMARC", {"_dmarc.acme.example": None}, "DMARC", Status.FAIL, "_dmarc.acme.example"),
    (
        "DMARC none",
        {"_dmarc.acme.example": ["v=DMARC1; p=none"]},
        "DMARC",
        Status.WARN,
        "quarantine",
    ),
    (
        "DMARC bad p",
        {"_dmarc.acme.example": ["v=DMARC1; p=maybe"]},
        "DMARC",
        Status.FAIL,
        "p=quarantine",
    ),
]


@pytest.mark.parametrize(
    ("change", "which", "status", "fix"),
    [case[1:] for case in BAD_DNS],
    ids=[case[0] for case in BAD_DNS],
)
def test_bad_records_are_named_with_their_fix(
    change: dict[str, list[str] | None], which: str, status: Status, fix: str
) -> None:
    records = dict(GOOD_DNS)
    for name, values in change.items():
        if values is None:
            records.pop(name)
        else:
            records[name] = values
    with dns_server(records) as zone:
        checks = dns_checks(zone)
    assert checks[which].status is status, checks[which]
    assert fix in checks[which].fix
    others = {n for n in ("SPF", "DKIM", "DMARC") if n != which}
    assert all(checks[n].status is Status.OK for n in others)


def test_no_dkim_selector_warns_and_a_silent_dns_server_is_no_verdict() -> None:
    with dns_server(GOOD_DNS) as zone:
        assert "RECOVERY_DKIM_SELECTOR" in dns_checks(zone, selector="")["DKIM"].detail
        port = zone.port
    # The server is gone: nothing answers on that port.
    settings = make_settings("sqlite://", Path("."), dns_servers=(f"127.0.0.1:{port}",))
    checks = by_name(mail_checks.mail(settings, "b@acme.example", ssl_context=None, timeout=0.5))
    assert checks["SPF"].status is Status.WARN and "RECOVERY_DNS_SERVERS" in checks["SPF"].fix


# ---- Twilio through the real SDK ----------------------------------------------------------------


@pytest.fixture
def twilio() -> Iterator[TwilioFake]:
    with twilio_fake() as fake:
        fake.account_sid, fake.auth_token = SID, TOKEN
        fake.numbers.append({"phone_number": "+15017122661", "capabilities": {"sms": True}})
        fake.numbers.append({"phone_number": "+15017122662", "capabilities": {"sms": False}})
        fake.services[SERVICE] = ["+15017122661"]
        yield fake


def twilio_checks_for(fake: TwilioFake, **kw: Any) -> dict[str, Check]:
    values = {
        "twilio_account_sid": SID,
        "twilio_auth_token": TOKEN,
        "twilio_api_base": fake.url,
        **kw,
    }
    return by_name(twilio_checks.twilio(make_settings("sqlite://", Path("."), **values), timeout=5))


def test_twilio_credentials_and_senders(twilio: TwilioFake) -> None:
    good = twilio_checks_for(twilio, twilio_messaging_service_sid=SERVICE)
    assert good["Twilio account"].status is Status.OK
    assert good["Twilio sender"].status is Status.OK, good["Twilio sender"]
    assert twilio_checks_for(twilio, twilio_from_number="+15017122661")["Twilio sender"].status is (
        Status.OK
    )
    assert twilio.sent == []  # nothing sent

    wrong = twilio_checks_for(twilio, twilio_auth_token="f" * 32, twilio_from_number="+15017122661")
    assert_fails(wrong["Twilio account"], "Auth Token")
    assert "Twilio sender" not in wrong
    assert_fails(
        twilio_checks_for(twilio, twilio_from_number="+15017122699")["Twilio sender"],
        "TWILIO_FROM_NUMBER",
    )
    assert_fails(
        twilio_checks_for(twilio, twilio_from_number="+15017122662")["Twilio sender"], "SMS"
    )
    assert_fails(
        twilio_checks_for(twilio, twilio_messaging_service_sid="MG" + "0" * 32)["Twilio sender"],
        "TWILIO_MESSAGING_SERVICE_SID",
    )
    twilio.services[SERVICE] = []
    empty = twilio_checks_for(twilio, twilio_messaging_service_sid=SERVICE)["Twilio sender"]
    assert empty.status is Status.WARN and "sender pool" in empty.fix


@pytest.mark.parametrize(
    ("status", "kind", "verdict"),
    [("suspended", "Full", Status.FAIL), ("active", "Trial", Status.WARN)],
)
def test_twilio_account_state(twilio: TwilioFake, status: str, kind: str, verdict: Status) -> None:
    twilio.account_status, twilio.account_type = status, kind
    check = twilio_checks_for(twilio, twilio_from_number="+15017122661")["Twilio account"]
    assert check.status is verdict and check.fix


# ---- Stripe: the fake, and Stripe's reads through the SDK --------------------------------------


def stripe_report(gateway: Any, tmp_path: Path, clock: FrozenClock, **kw: Any) -> dict[str, Check]:
    settings = make_settings("sqlite://", tmp_path, **{"stripe_api_key": KEY, **kw})
    rt = build_runtime(settings, clock=clock, gateway=gateway)
    events = stripe_checks.stripe_event_types(rt.handlers.on_event)
    checks, _ = stripe_checks.stripe(rt.settings, rt.rules, rt.gateway, events, clock.now())
    return by_name(checks)


def test_the_webhook_endpoint_at_stripe(tmp_path: Path, clock: FrozenClock) -> None:
    fake = FakeStripeGateway(clock=clock)
    url = "http://recovery.test/webhooks/stripe"
    missing = stripe_report(fake, tmp_path, clock)["Stripe webhook"]
    assert_fails(missing, url, "invoice.payment_failed", "STRIPE_WEBHOOK_SECRETS")
    assert "recovery.refetched" not in missing.fix  # our own events are not Stripe's

    fake.put(endpoint("https://elsewhere.example/hook", EVENTS, id="we_other"))
    fake.put(endpoint(url, [e for e in EVENTS if e != "charge.failed"], id="we_ours"))
    partial = stripe_report(fake, tmp_path, clock)
    assert "does not send: charge.failed" in partial["Stripe webhook"].detail
    assert_fails(partial["Stripe webhook"], "add these events")
    assert partial["Stripe API version"].status is Status.WARN
    assert PINNED_API_VERSION in partial["Stripe API version"].fix

    fake.put(endpoint(url, EVENTS, id="we_ours", api_version=PINNED_API_VERSION))
    good = stripe_report(fake, tmp_path, clock)
    assert good["Stripe webhook"].status is Status.OK
    assert good["Stripe API version"].status is Status.OK
    assert good["Stripe permissions"].status is Status.OK
    assert good["Stripe key"].detail == "restricted key, test mode"
    assert not [r for r in fake.requests if r.idempotency_key]  # reads only

    fake.put(endpoint(url, ["*"], id="we_ours", status="disabled"))
    assert_fails(stripe_report(fake, tmp_path, clock)["Stripe webhook"], "enable it")


def test_key_modes(tmp_path: Path, clock: FrozenClock) -> None:
    fake = FakeStripeGateway(clock=clock)
    live_here = stripe_report(fake, tmp_path, clock, stripe_api_key="rk_live_x1")["Stripe key"]
    assert live_here.status is Status.WARN and "RECOVERY_ENV=production" in live_here.fix
    prod = {"env": "production", "public_url": "https://billing.example.com"}
    test_in_prod = stripe_report(fake, tmp_path, clock, stripe_api_key="sk_test_x1", **prod)
    assert test_in_prod["Stripe key"].status is Status.WARN
    secret = stripe_report(fake, tmp_path, clock, stripe_api_key="sk_live_x1", **prod)
    assert "restricted key" in secret["Stripe key"].fix


def test_permissions_probed_through_the_sdk(tmp_path: Path, clock: FrozenClock) -> None:
    with stripe_account(KEY, forbidden={"setup_intents", "sessions"}) as account:
        sdk = StripeSdkGateway(KEY, api_base=account.url, max_retries=0)
        checks = stripe_report(sdk, tmp_path, clock)
        refused = stripe_report(
            StripeSdkGateway("rk_test_rolled", api_base=account.url, max_retries=0),
            tmp_path,
            clock,
        )
    permissions = checks["Stripe permissions"]
    assert "may not read: setup intents, Checkout sessions" in permissions.detail
    assert_fails(permissions, "Write: Customers")
    assert_fails(refused["Stripe permissions"], "STRIPE_API_KEY")
    assert all(path.startswith("/v1/") for path in account.paths)


def test_the_manual_steps_say_why(runtime: Runtime) -> None:
    report = run(runtime)
    [retries, emails] = report.manual
    assert "Smart Retries" in retries.what and "two systems retry" in retries.why
    assert "two emails" in emails.why
    text = "\n".join(report.lines())
    assert "check by hand" in text and "Revenue recovery" in text


# ---- the page and the command -------------------------------------------------------------------


def test_the_health_page_is_for_admins_only(app: Any, runtime: Runtime) -> None:
    from tests.support.dashboard import ADMIN, VIEWER, add_user, login

    add_user(runtime, ADMIN, "admin")
    add_user(runtime, VIEWER, "viewer")
    anonymous = app.test_client()
    assert anonymous.get("/dashboard/health").status_code == 302  # to the sign-in
    viewer = app.test_client()
    login(viewer, VIEWER)
    refused = viewer.get("/dashboard/health")
    assert refused.status_code == 403 and "Only admins" in refused.get_data(as_text=True)
    admin = app.test_client()
    login(admin, ADMIN)
    page = admin.get("/dashboard/health")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"
    assert "script-src" not in page.headers["Content-Security-Policy"]  # no script at all
    for shown in ("database", "worker", "SMTP", "DMARC", "Stripe key", "recovery worker"):
        assert shown in html, shown
    assert "Smart Retries" in html and "two emails" in html


@pytest.fixture
def local_parts(
    tmp_path: Path, cert: tuple[Path, Path]
) -> Iterator[tuple[dict[str, str], Any, Any, Any, Any]]:
    """Every part a live run talks to, on loopback, and the environment that points at them."""
    public = "http://127.0.0.1:5000"
    with (
        smtp_server(tls=cert, users={"mailer": "s3cret"}) as smtp,
        dns_server(GOOD_DNS) as zone,
        twilio_fake() as twilio,
        stripe_account(KEY) as stripe,
    ):
        twilio.account_sid, twilio.auth_token = SID, TOKEN
        twilio.services[SERVICE] = ["+15017122661"]
        stripe.endpoints.append(
            endpoint(f"{public}/webhooks/stripe", EVENTS, api_version=PINNED_API_VERSION)
        )
        env = {
            "RECOVERY_INSTANCE_PATH": str(tmp_path),
            "RECOVERY_PUBLIC_URL": public,
            "STRIPE_API_KEY": KEY,
            "STRIPE_API_BASE": stripe.url,
            "RECOVERY_SMTP_URL": f"smtp://mailer:s3cret@127.0.0.1:{smtp.port}?tls=starttls",
            "SSL_CERT_FILE": str(cert[0]),  # how an operator trusts a private CA, too
            "RECOVERY_MAIL_FROM": "Dana at Acme <billing@acme.example>",
            "RECOVERY_DKIM_SELECTOR": "s1",
            "RECOVERY_DNS_SERVERS": zone.server,
            "TWILIO_ACCOUNT_SID": SID,
            "TWILIO_AUTH_TOKEN": TOKEN,
            "TWILIO_MESSAGING_SERVICE_SID": SERVICE,
            "TWILIO_API_BASE": twilio.url,
        }
        yield env, smtp, zone, twilio, stripe


def _doctor(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, name: str) -> tuple[int, str]:
    import os

    from click.testing import CliRunner

    from recovery.cli import main

    for var in list(os.environ):
        if var.startswith(("RECOVERY_", "STRIPE_", "TWILIO_")):
            monkeypatch.delenv(var)
    result = CliRunner().invoke(main, ["doctor"], env=env)
    artifacts = Path(__file__).resolve().parent.parent / "artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / f"doctor_{name}.txt").write_text(result.output)
    return result.exit_code, result.output


def test_recovery_doctor_on_a_good_and_a_broken_local_setup(
    local_parts: tuple[dict[str, str], Any, Any, Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from recovery.adapters.clock import SystemClock
    from recovery.config import Settings

    env, smtp, zone, twilio, stripe = local_parts
    upgrade(f"sqlite:///{env['RECOVERY_INSTANCE_PATH']}/recovery.db")
    rt = build_runtime(Settings.from_env(env), clock=SystemClock())
    Worker(rt).heartbeat()  # a worker beating now
    rt.db.dispose()

    code, out = _doctor(env, monkeypatch, "good")
    assert code == 0, out
    assert out.rstrip().endswith("0 warn, 0 fail"), out
    assert smtp.messages == [] and twilio.sent == []  # nothing was sent

    stripe.endpoints.clear()
    zone.txt.pop("_dmarc.acme.example")
    twilio.auth_token = "f" * 32  # rotated in the console, not here
    broken = {**env, "RECOVERY_SMTP_URL": env["RECOVERY_SMTP_URL"].replace("s3cret", "wrong")}
    code, out = _doctor(broken, monkeypatch, "broken")
    assert code == 1, out
    failing = [line.split()[1] for line in out.splitlines() if line.startswith("fail")]
    assert failing == ["Stripe", "SMTP", "DMARC", "Twilio"], out
    # Under each failure, what to do.
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("fail"):
            assert "->" in lines[i + 1], line
