"""Every setting is checked when a command starts: a bad value stops it, naming the setting and
showing a good one. And a sender written the usual way ("Dana at Acme <billing@...>") works."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from recovery.adapters.clock import FrozenClock
from recovery.app import create_app
from recovery.cli import main
from recovery.config import EXAMPLES, ConfigError, Settings
from recovery.runtime import Runtime
from recovery.services.registry import build_runtime
from tests.conftest import make_settings
from tests.support.scenario import Story
from tests.support.smtp_sink import SmtpSink, smtp_sink

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "0123456789abcdef" * 2
SERVICE = "MG" + "0123456789abcdef" * 2

# (setting, a bad value, other settings the bad one needs to be read at all)
BAD: list[tuple[str, str, dict[str, str]]] = [
    ("RECOVERY_ENV", "prod", {}),
    ("RECOVERY_DATABASE_URL", "mysql://u@db/recovery", {}),
    ("RECOVERY_DATABASE_URL", "postgresql://u@db/recovery", {}),  # psycopg2 is not installed
    ("RECOVERY_DATABASE_URL", "not a url", {}),
    ("STRIPE_API_KEY", "pk_live_abc123", {}),
    ("STRIPE_API_KEY", "sk_prod_abc123", {}),
    ("STRIPE_WEBHOOK_SECRETS", "whsec_ok,we_1NdMbAEd", {}),
    ("STRIPE_API_BASE", "localhost:8420", {}),
    ("RECOVERY_API_KEYS", "short", {}),
    ("RECOVERY_SECRET_KEY", "Pw3Ty6Hs1", {}),
    ("RECOVERY_PUBLIC_URL", "billing.example.com", {}),
    ("RECOVERY_PUBLIC_URL", "https://billing.example.com/?a=1", {}),
    ("RECOVERY_RULES", "/nonexistent/rules.toml", {}),
    ("RECOVERY_WEBHOOK_MAX_BYTES", "1MB", {}),
    ("RECOVERY_WEBHOOK_MAX_BYTES", "10", {}),
    ("RECOVERY_PROCESS_INLINE", "maybe", {}),
    ("RECOVERY_WORKER_TICK_SECONDS", "0", {}),
    ("RECOVERY_WORKER_TICK_SECONDS", "fast", {}),
    ("RECOVERY_LOG_LEVEL", "LOUD", {}),
    ("RECOVERY_LOG_FORMAT", "xml", {}),
    ("RECOVERY_SMTP_URL", "smtp.example.com:587", {}),
    ("RECOVERY_SMTP_URL", "smtp://smtp.example.com:587?tls=ssl", {}),
    ("RECOVERY_SMTP_URL", "smtp://smtp.example.com:port", {}),
    ("RECOVERY_MAIL_FROM", "Dana at Acme billing@acme.example", {}),
    ("RECOVERY_MAIL_FROM", "billing@acme.example, sales@acme.example", {}),
    ("RECOVERY_MAIL_FROM", "billing@localhost", {}),
    ("TWILIO_ACCOUNT_SID", "SK" + "0" * 32, {"TWILIO_AUTH_TOKEN": TOKEN}),
    ("TWILIO_AUTH_TOKEN", "Hn3Jk8Lm-tok", {}),
    ("TWILIO_AUTH_TOKEN", "", {"TWILIO_ACCOUNT_SID": SID, "TWILIO_FROM_NUMBER": "+15017122661"}),
    ("TWILIO_MESSAGING_SERVICE_SID", "", {"TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": TOKEN}),
    ("TWILIO_MESSAGING_SERVICE_SID", "PN" + "0" * 32, {}),
    ("TWILIO_FROM_NUMBER", "015112345678", {}),
    ("TWILIO_API_BASE", "127.0.0.1:8421", {}),
    ("RECOVERY_DKIM_SELECTOR", "s1._domainkey.acme.example.", {}),
    ("RECOVERY_DNS_SERVERS", "dns.example.com", {}),
    ("RECOVERY_DNS_SERVERS", "127.0.0.1:99999", {}),
    ("RECOVERY_EMBED_SECRET", "Zq8Lr2Kx9Vb4", {}),
    ("RECOVERY_MODE", "dry-run", {}),
    ("RECOVERY_METRICS_TOKEN", "Pr0m3th", {}),
    ("RECOVERY_RATELIMIT_STORAGE_URL", "localhost:6379", {}),
    ("RECOVERY_DEMO", "on", {}),
    ("RECOVERY_CANCEL_LINK_SECRET", "short", {}),
    ("RECOVERY_CANCEL_WEBHOOK_URL", "hooks.example.com", {}),
    ("RECOVERY_CANCEL_WEBHOOK_SECRET", "", {"RECOVERY_CANCEL_WEBHOOK_URL": "https://a.example"}),
]
SECRETS = {
    "STRIPE_API_KEY",
    "RECOVERY_SECRET_KEY",
    "TWILIO_AUTH_TOKEN",
    "RECOVERY_EMBED_SECRET",
    "RECOVERY_METRICS_TOKEN",
}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, str]]:
    """An environment with none of our settings but a private instance folder."""
    import os

    for name in list(os.environ):
        if name.startswith(("RECOVERY_", "STRIPE_", "TWILIO_")):
            monkeypatch.delenv(name)
    env = {"RECOVERY_INSTANCE_PATH": str(tmp_path)}
    yield env


@pytest.mark.parametrize(("name", "value", "needs"), BAD, ids=[f"{n}={v!r}" for n, v, _ in BAD])
def test_a_bad_value_stops_every_command_naming_the_setting(
    clean_env: dict[str, str], name: str, value: str, needs: dict[str, str]
) -> None:
    env = {**clean_env, **needs, name: value}
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    message = str(info.value)
    assert f"{name} " in message and f"e.g. {EXAMPLES[name]}" in message, message
    if name in SECRETS and value:
        assert value not in message  # a secret is never echoed into a log
    # The command line stops before doing anything, with the same words and no traceback.
    result = CliRunner().invoke(main, ["db", "upgrade"], env=env)
    assert result.exit_code == 1, result.output
    assert f"{name} " in result.output
    assert "Traceback" not in result.output
    assert not (Path(clean_env["RECOVERY_INSTANCE_PATH"]) / "recovery.db").exists()


def test_create_app_checks_the_same(clean_env: dict[str, str], monkeypatch: Any) -> None:
    monkeypatch.setenv("RECOVERY_INSTANCE_PATH", clean_env["RECOVERY_INSTANCE_PATH"])
    monkeypatch.setenv("RECOVERY_SMTP_URL", "smtp://smtp.example.com:587?tls=ssl")
    with pytest.raises(ConfigError, match="RECOVERY_SMTP_URL"):
        create_app()
    # ... and a runtime built from a Settings object made in code.
    bad = Settings(database_url="sqlite://", mail_from="Dana <billing@>")
    with pytest.raises(ConfigError, match="RECOVERY_MAIL_FROM"):
        build_runtime(bad)


def test_every_problem_is_listed_at_once(clean_env: dict[str, str]) -> None:
    bad = {"RECOVERY_LOG_LEVEL": "LOUD", "TWILIO_FROM_NUMBER": "12", "RECOVERY_ENV": "x"}
    env = {**clean_env, **bad}
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    for name in ("RECOVERY_LOG_LEVEL", "TWILIO_FROM_NUMBER", "RECOVERY_ENV"):
        assert name in str(info.value)


GOOD = {
    "RECOVERY_ENV": "production",
    "RECOVERY_DATABASE_URL": "postgresql+psycopg://u:p@db.internal/recovery",
    "STRIPE_API_KEY": "rk_live_51Habc",
    "STRIPE_WEBHOOK_SECRETS": "whsec_new,whsec_old",
    "RECOVERY_API_KEYS": "k" * 32,
    "RECOVERY_SECRET_KEY": "s" * 64,
    "RECOVERY_PUBLIC_URL": "https://billing.example.com/recovery/",
    "RECOVERY_WEBHOOK_MAX_BYTES": "2097152",
    "RECOVERY_PROCESS_INLINE": "no",
    "RECOVERY_WORKER_TICK_SECONDS": "0.5",
    "RECOVERY_LOG_LEVEL": "warning",
    "RECOVERY_LOG_FORMAT": "json",
    "RECOVERY_SMTP_URL": "smtps://user:p%40ss@smtp.example.com",
    "RECOVERY_MAIL_FROM": '"Dana, Acme billing" <billing@acme.example>',
    "TWILIO_ACCOUNT_SID": SID,
    "TWILIO_AUTH_TOKEN": TOKEN,
    "TWILIO_MESSAGING_SERVICE_SID": SERVICE,
    "TWILIO_FROM_NUMBER": "Acme",
    "RECOVERY_DKIM_SELECTOR": "s1.mail",
    "RECOVERY_DNS_SERVERS": "1.1.1.1, [::1]:5353, 127.0.0.1:5353",
    "RECOVERY_EMBED_SECRET": "e" * 32,
    "RECOVERY_RATELIMIT_STORAGE_URL": "redis://cache:6379",
    "RECOVERY_DEMO": "0",
}


def test_good_values_of_every_setting_start(clean_env: dict[str, str]) -> None:
    settings = Settings.from_env({**clean_env, **GOOD})
    settings.check()
    assert settings.log_level == "WARNING" and settings.log_format == "json"
    assert settings.mail_from_name == "Dana, Acme billing"
    assert settings.mail_from_address == "billing@acme.example"
    assert settings.dns_servers == ("1.1.1.1", "[::1]:5353", "127.0.0.1:5353")
    assert settings.process_inline is False
    bare = Settings.from_env({**clean_env, "RECOVERY_MAIL_FROM": "b@acme.example"})
    assert (bare.mail_from_name, bare.mail_from_address) == ("", "b@acme.example")


# ---- the sender as people write it ----------------------------------------------------------


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with smtp_sink() as s:
        yield s


@pytest.mark.parametrize(
    ("mail_from", "display_name", "address"),
    [
        ("Robin at Globex <robin@globex.example>", "Robin at Globex", "robin@globex.example"),
        ("robin@globex.example", "Dana at Acme", "robin@globex.example"),  # the rules' name
    ],
)
def test_a_display_name_sender_delivers_with_that_name(
    sqlite_url: str,
    tmp_path: Path,
    clock: FrozenClock,
    fake_gateway: Any,
    sink: SmtpSink,
    mail_from: str,
    display_name: str,
    address: str,
) -> None:
    settings = make_settings(sqlite_url, tmp_path, smtp_url=sink.url, mail_from=mail_from)
    rt: Runtime = build_runtime(settings, clock=clock, gateway=fake_gateway)
    story = Story(rt, fake_gateway, clock)
    billing = story.customer()
    story.deliver()
    story.stripe_charges(billing.invoice, decline_code="generic_decline")
    story.worker.run_until_idle()
    [mail] = sink.messages
    sender = mail["From"].addresses[0]
    assert (sender.display_name, sender.addr_spec) == (display_name, address)
    assert sink.envelopes[0][0] == address  # the envelope sender (bounces) too
    assert mail["Message-ID"].endswith(f"@{address.split('@')[1]}>")
    rt.db.dispose()
