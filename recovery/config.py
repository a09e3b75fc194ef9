"""Settings from the environment (the business rules from TOML are `recovery.rules`).

Everything has a default that runs on one machine with nothing set. Production mode
(RECOVERY_ENV=production) refuses to start on the defaults that are unsafe there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEV_SECRET_KEY = "dev-insecure-secret-key"
DEV_WEBHOOK_SECRET = "whsec_dev_local"


class ConfigError(RuntimeError):
    """A setting is missing or invalid; the message says which and how to fix it."""


def _split(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(part.strip() for part in value.split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    env: str = "development"
    instance_path: Path = Path("instance")
    database_url: str = ""
    stripe_api_key: str = ""
    stripe_webhook_secrets: tuple[str, ...] = (DEV_WEBHOOK_SECRET,)
    stripe_api_base: str | None = None
    api_keys: tuple[str, ...] = ()
    secret_key: str = DEV_SECRET_KEY
    public_url: str = "http://127.0.0.1:5000"
    rules_path: Path | None = None
    # Stripe events are a few KiB; an invoice with hundreds of lines stays well under this.
    webhook_max_bytes: int = 1024 * 1024
    # Process an event in the request that stored it (after the commit). Off (the default): the
    # request only stores it and wakes a worker, which processes events in batches.
    process_inline: bool = False
    worker_tick_seconds: float = 1.0
    # Threads per worker process: provider calls (Stripe, SMTP, Twilio) of different subjects run
    # at once, each with no database transaction open.
    worker_threads: int = 8
    # The most one provider call may take, the SDK's own retries included: well inside the
    # 5-minute lease on a due action, so no other worker takes it over while it runs.
    provider_deadline_seconds: float = 60.0
    # Processed events, finished due actions and sent or cancelled messages older than this are
    # deleted by a daily job (never what a case timeline or a dashboard figure still needs).
    retention_days: int = 90
    log_level: str = "INFO"
    extra: Mapping[str, str] = field(default_factory=dict)
    # Reminders. Unset: messages stay in the local outbox (the table) and the log.
    smtp_url: str = ""  # smtp://user:pass@host:port?tls=starttls|implicit
    mail_from: str = ""  # overrides [business] sender_email
    twilio_account_sid: str = ""
    twilio_auth_token: str = ""
    twilio_messaging_service_sid: str = ""
    twilio_from_number: str = ""
    twilio_api_base: str = ""  # a local stand-in instead of https://api.twilio.com

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, instance_path: Path | None = None
    ) -> Settings:
        env = os.environ if environ is None else environ
        instance = Path(env.get("RECOVERY_INSTANCE_PATH") or instance_path or "instance").resolve()
        database_url = env.get("RECOVERY_DATABASE_URL") or f"sqlite:///{instance / 'recovery.db'}"
        rules = env.get("RECOVERY_RULES")
        try:
            max_bytes = int(env.get("RECOVERY_WEBHOOK_MAX_BYTES", 1024 * 1024))
            tick = float(env.get("RECOVERY_WORKER_TICK_SECONDS", 1.0))
            threads = int(env.get("RECOVERY_WORKER_THREADS", 8))
            deadline = float(env.get("RECOVERY_PROVIDER_DEADLINE_SECONDS", 60.0))
            retention = int(env.get("RECOVERY_RETENTION_DAYS", 90))
        except ValueError as exc:
            raise ConfigError(f"invalid number in the environment: {exc}") from exc
        return cls(
            env=env.get("RECOVERY_ENV", "development"),
            instance_path=instance,
            database_url=database_url,
            stripe_api_key=env.get("STRIPE_API_KEY", ""),
            stripe_webhook_secrets=_split(env.get("STRIPE_WEBHOOK_SECRETS"))
            or (() if env.get("RECOVERY_ENV") == "production" else (DEV_WEBHOOK_SECRET,)),
            stripe_api_base=env.get("STRIPE_API_BASE") or None,
            api_keys=_split(env.get("RECOVERY_API_KEYS")),
            secret_key=env.get("RECOVERY_SECRET_KEY") or DEV_SECRET_KEY,
            public_url=(env.get("RECOVERY_PUBLIC_URL") or "http://127.0.0.1:5000").rstrip("/"),
            rules_path=Path(rules) if rules else None,
            webhook_max_bytes=max_bytes,
            process_inline=env.get("RECOVERY_PROCESS_INLINE", "0") not in ("0", "false", "no"),
            worker_tick_seconds=tick,
            worker_threads=threads,
            provider_deadline_seconds=deadline,
            retention_days=retention,
            log_level=env.get("RECOVERY_LOG_LEVEL", "INFO"),
            smtp_url=env.get("RECOVERY_SMTP_URL", ""),
            mail_from=env.get("RECOVERY_MAIL_FROM", ""),
            twilio_account_sid=env.get("TWILIO_ACCOUNT_SID", ""),
            twilio_auth_token=env.get("TWILIO_AUTH_TOKEN", ""),
            twilio_messaging_service_sid=env.get("TWILIO_MESSAGING_SERVICE_SID", ""),
            twilio_from_number=env.get("TWILIO_FROM_NUMBER", ""),
            twilio_api_base=env.get("TWILIO_API_BASE", ""),
        )

    def production_problems(self) -> list[str]:
        """What makes these settings unsafe for production, one actionable line each."""
        problems = []
        if self.secret_key == DEV_SECRET_KEY or len(self.secret_key) < 32:
            problems.append(
                "RECOVERY_SECRET_KEY is not set (or shorter than 32 characters): set it to a long "
                'random value, e.g. python -c "import secrets; print(secrets.token_hex(32))"'
            )
        if not self.stripe_webhook_secrets or DEV_WEBHOOK_SECRET in self.stripe_webhook_secrets:
            problems.append(
                "STRIPE_WEBHOOK_SECRETS is not set: copy the endpoint's signing secret (whsec_...) "
                "from the Stripe Dashboard; separate several with commas while rotating"
            )
        if not self.stripe_api_key:
            problems.append("STRIPE_API_KEY is not set: use a restricted or secret key (sk_/rk_)")
        if not self.public_url.startswith("https://"):
            problems.append(
                "RECOVERY_PUBLIC_URL must be the https:// address customers reach this service at"
            )
        return problems

    def check(self) -> None:
        if self.is_production:
            problems = self.production_problems()
            if problems:
                raise ConfigError(
                    "refusing to start in production with unsafe settings:\n  - "
                    + "\n  - ".join(problems)
                )
