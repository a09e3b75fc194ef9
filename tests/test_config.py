"""Settings work with nothing set; production refuses unsafe defaults and says what is missing."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from recovery.app import create_app
from recovery.cli import main
from recovery.config import ConfigError, Settings
from recovery.domain.retry_policy import RetryRules
from recovery.domain.retry_policy import RulesError as RetryRulesError
from recovery.migrate import upgrade
from recovery.rules import DEFAULT_RULES_PATH, Rules, RulesError, parse_retry_rules


def test_nothing_set_gives_a_working_sqlite_setup(tmp_path: Path) -> None:
    settings = Settings.from_env({}, instance_path=tmp_path)
    assert settings.database_url == f"sqlite:///{tmp_path / 'recovery.db'}"
    assert settings.env == "development"
    settings.check()  # no complaint outside production
    upgrade(settings.database_url)
    health = create_app(settings).test_client().get("/healthz")
    assert health.json["database"] == "ok"
    assert health.json["worker"]["ok"] is False  # no worker has started yet


def test_environment_is_read(tmp_path: Path) -> None:
    env = {
        "RECOVERY_DATABASE_URL": "postgresql+psycopg://u@db/recovery",
        "STRIPE_API_KEY": "sk_test_123",
        "STRIPE_WEBHOOK_SECRETS": "whsec_new, whsec_old",
        "STRIPE_API_BASE": "http://127.0.0.1:8420",
        "RECOVERY_API_KEYS": "key-one-0123456789,key-two-0123456789",
        "RECOVERY_PUBLIC_URL": "https://billing.example.com/",
    }
    s = Settings.from_env(env, instance_path=tmp_path)
    assert s.stripe_webhook_secrets == ("whsec_new", "whsec_old")
    assert s.api_keys == ("key-one-0123456789", "key-two-0123456789")
    assert s.public_url == "https://billing.example.com"
    assert s.stripe_api_base == "http://127.0.0.1:8420"


def test_production_refuses_unsafe_defaults_naming_each(tmp_path: Path) -> None:
    s = Settings.from_env({"RECOVERY_ENV": "production"}, instance_path=tmp_path)
    with pytest.raises(ConfigError) as info:
        s.check()
    message = str(info.value)
    for name in (
        "RECOVERY_SECRET_KEY",
        "STRIPE_WEBHOOK_SECRETS",
        "STRIPE_API_KEY",
        "RECOVERY_PUBLIC_URL",
    ):
        assert name in message


def test_production_starts_when_configured(tmp_path: Path) -> None:
    env = {
        "RECOVERY_ENV": "production",
        "RECOVERY_SECRET_KEY": "s" * 64,
        "STRIPE_WEBHOOK_SECRETS": "whsec_live",
        "STRIPE_API_KEY": "sk_live_x",
        "RECOVERY_PUBLIC_URL": "https://billing.example.com",
    }
    Settings.from_env(env, instance_path=tmp_path).check()


def test_cli_reports_the_refusal_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECOVERY_ENV", "production")
    monkeypatch.setenv("RECOVERY_INSTANCE_PATH", str(tmp_path))
    for name in ("RECOVERY_SECRET_KEY", "STRIPE_WEBHOOK_SECRETS", "STRIPE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(main, ["events", "list"])
    assert result.exit_code == 1
    assert "refusing to start in production" in result.output
    assert "STRIPE_WEBHOOK_SECRETS is not set" in result.output


def test_rules_file_overrides_defaults_key_by_key(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('[business]\nname = "Globex"\n')
    rules = Rules.load(path)
    assert rules.business.name == "Globex"
    assert rules.business.sender_email == "billing@acme.example"  # default kept


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[business]\nnmae = "typo"\n', "unknown key in rules file: business.nmae"),
        ('[business]\nname = ""\n', "business.name must be a non-empty string"),
        ("[business\n", "not valid TOML"),
        ("business = 3\n", "business must be a table"),
        ('[retry]\nwindow_days = "28"\n', "retry.window_days: expected an integer, got '28'"),
        ("[retry]\nwindow_days = 90\n", "retry.window_days: expected 1..60"),
    ],
)
def test_bad_rules_files_fail_with_the_key_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(RulesError) as info:
        Rules.load(path)
    assert message in str(info.value)


def test_missing_rules_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="does not exist"):
        Rules.load(tmp_path / "nope.toml")


# ---- the [retry] table -----------------------------------------------------------------------


def test_rules_file_and_code_defaults_agree() -> None:
    data = tomllib.loads(DEFAULT_RULES_PATH.read_text(encoding="utf-8"))
    assert parse_retry_rules(data["retry"]) == RetryRules()


def test_unknown_key_in_rules_file_is_an_error() -> None:
    data = tomllib.loads(DEFAULT_RULES_PATH.read_text(encoding="utf-8"))
    with pytest.raises(RetryRulesError, match=r"retry\.window_dayz"):
        parse_retry_rules({**data["retry"], "window_dayz": 14})


def test_partial_rules_keep_the_other_defaults() -> None:
    rules = parse_retry_rules({"window_days": 14, "network_caps": {"visa": 15}})
    assert rules == replace(
        RetryRules(), window_days=14, network_caps=replace(RetryRules().network_caps, visa=15)
    )


@pytest.mark.parametrize(
    ("settings_", "key"),
    [
        ({"window_days": "28"}, "retry.window_days"),
        ({"window_days": True}, "retry.window_days"),
        ({"window_days": 90}, "retry.window_days"),
        ({"max_attempts": 0}, "retry.max_attempts"),
        ({"payday_targeting": "yes"}, "retry.payday_targeting"),
        ({"payday_weekdays": ["fryday"]}, "retry.payday_weekdays"),
        ({"payday_weekdays": "friday"}, "retry.payday_weekdays"),
        ({"payday_days_of_month": [1, 32]}, "retry.payday_days_of_month"),
        ({"local_hour_start": 10, "local_hour_end": 8}, "retry.local_hour_end"),
        ({"min_gap_hours": 30}, "retry.min_gap_hours"),
        ({"retry_owner": "both"}, "retry.retry_owner"),
        ({"end_of_dunning": "delete_customer"}, "retry.end_of_dunning"),
        ({"network_caps": {"amex": 10}}, "retry.network_caps.amex"),
        ({"network_caps": {"visa": "20"}}, "retry.network_caps.visa"),
        ({"network_caps": 20}, "retry.network_caps"),
    ],
)
def test_bad_rules_name_the_key(settings_: dict[str, Any], key: str) -> None:
    with pytest.raises(RetryRulesError) as caught:
        parse_retry_rules(settings_)
    assert key in str(caught.value)
    assert isinstance(caught.value, ValueError)
