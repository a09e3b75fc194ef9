"""Settings from the environment (the business rules from TOML are `recovery.rules`).

Everything has a default that runs on one machine with nothing set. Every value that can be
checked without the network is checked when the settings are read (`from_env`) and again when a
runtime is built (`check`): a bad value stops the process with a message naming the setting and
showing a good one, instead of failing later at send or charge time. Production mode
(RECOVERY_ENV=production) also refuses the defaults that are unsafe there. What needs the
network (does the SMTP server take our password, is the webhook endpoint registered) is
`recovery doctor`'s job (`recovery.services.ops`).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.policy import default as email_policy
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from recovery.domain.sms import e164

DEV_SECRET_KEY = "dev-insecure-secret-key"
DEV_WEBHOOK_SECRET = "whsec_dev_local"

ENVIRONMENTS = ("development", "test", "production")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")
# live: act (charge, send, change Stripe). shadow: decide everything, act on nothing, and record
# what would have been done (README: Shadow mode).
MODES = ("live", "shadow")
MIN_METRICS_TOKEN = 16
FLAGS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
SMTP_TLS = ("none", "starttls", "implicit")
# flask-limiter's storages (the `limits` package): https://limits.readthedocs.io/en/stable/storage.html
RATELIMIT_SCHEMES = (
    "memory",
    "redis",
    "rediss",
    "redis+unix",
    "redis+cluster",
    "redis+sentinel",
    "memcached",
    "mongodb",
    "mongodb+srv",
)
MIN_API_KEY = 12  # a bearer key shorter than this can be guessed
MIN_EMBED_SECRET = 32
# Shapes of the providers' identifiers (https://www.twilio.com/docs/glossary/what-is-a-sid,
# https://docs.stripe.com/keys): a value of another shape is a copy-paste slip.
TWILIO_ACCOUNT_SID = re.compile(r"AC[0-9a-f]{32}")
TWILIO_SERVICE_SID = re.compile(r"MG[0-9a-f]{32}")
TWILIO_AUTH_TOKEN = re.compile(r"[A-Za-z0-9]{32}")
# An alphanumeric sender ID: 1-11 letters, digits and spaces, at least one letter.
ALPHANUMERIC_SENDER = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")
STRIPE_KEY = re.compile(r"(sk|rk)_(test|live)_[A-Za-z0-9_]+")
WEBHOOK_SECRET = re.compile(r"whsec_[A-Za-z0-9+/=_-]+")
DKIM_SELECTOR = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_-]{1,63})*")

# A good value for each setting, shown next to a bad one.
EXAMPLES = {
    "RECOVERY_ENV": "production (or development, test)",
    "RECOVERY_DATABASE_URL": "postgresql+psycopg://recovery:secret@db.internal/recovery",
    "RECOVERY_INSTANCE_PATH": "/var/lib/recovery",
    "STRIPE_API_KEY": "rk_live_... (a restricted key) or sk_live_...",
    "STRIPE_WEBHOOK_SECRETS": "whsec_new,whsec_old",
    "STRIPE_API_BASE": "http://127.0.0.1:8420",
    "RECOVERY_API_KEYS": "32 random characters from `openssl rand -hex 16`",
    "RECOVERY_SECRET_KEY": 'python -c "import secrets; print(secrets.token_hex(32))"',
    "RECOVERY_PUBLIC_URL": "https://billing.example.com",
    "RECOVERY_RULES": "/etc/recovery/rules.toml",
    "RECOVERY_WEBHOOK_MAX_BYTES": "1048576",
    "RECOVERY_PROCESS_INLINE": "0 (or 1)",
    "RECOVERY_WORKER_TICK_SECONDS": "1",
    "RECOVERY_WORKER_THREADS": "8",
    "RECOVERY_WORKER_LOOPS": "2",
    "RECOVERY_PROVIDER_DEADLINE_SECONDS": "60",
    "RECOVERY_RETENTION_DAYS": "90",
    "RECOVERY_LOG_LEVEL": "INFO",
    "RECOVERY_LOG_FORMAT": "json (or text)",
    "RECOVERY_MODE": "shadow (or live)",
    "RECOVERY_METRICS_TOKEN": 'python -c "import secrets; print(secrets.token_hex(16))"',
    "RECOVERY_SMTP_URL": "smtp://user:pass@smtp.example.com:587?tls=starttls",
    "RECOVERY_MAIL_FROM": "billing@acme.example or Dana at Acme <billing@acme.example>",
    "TWILIO_ACCOUNT_SID": "AC followed by 32 hex digits",
    "TWILIO_AUTH_TOKEN": "the 32-character Auth Token from the Twilio Console",
    "TWILIO_MESSAGING_SERVICE_SID": "MG followed by 32 hex digits",
    "TWILIO_FROM_NUMBER": "+15017122661 (E.164) or an alphanumeric sender ID such as Acme",
    "TWILIO_API_BASE": "http://127.0.0.1:8421",
    "RECOVERY_DKIM_SELECTOR": "s1 (the s= tag of your mail's DKIM-Signature header)",
    "RECOVERY_DNS_SERVERS": "1.1.1.1,9.9.9.9 or 127.0.0.1:5353",
    "RECOVERY_EMBED_SECRET": 'python -c "import secrets; print(secrets.token_hex(32))"',
    "RECOVERY_RATELIMIT_STORAGE_URL": "redis://cache.internal:6379",
    "RECOVERY_DEMO": "1 (or 0)",
    "RECOVERY_CANCEL_LINK_SECRET": "16 or more random characters",
    "RECOVERY_CANCEL_WEBHOOK_URL": "https://app.example.com/hooks/recovery",
    "RECOVERY_CANCEL_WEBHOOK_SECRET": "16 or more random characters",
}


class ConfigError(RuntimeError):
    """A setting is missing or invalid; the message says which and how to fix it."""


def _split(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(part.strip() for part in value.split(",") if part.strip())


def problem(name: str, what: str) -> str:
    """One line: the setting, what is wrong, and a good value."""
    return f"{name} {what}; e.g. {EXAMPLES[name]}"


def _http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def parse_sender(value: str) -> tuple[str, str] | None:
    """(display name, address) of `billing@acme.example` or `Dana at Acme <billing@acme.example>`;
    None when the value is not exactly one well-formed address (RFC 5322, read by the standard
    library's header parser, which records anything it had to guess as a defect)."""
    if not value.strip() or any(ch in value for ch in "\r\n"):
        return None
    header = email_policy.header_factory("From", value)
    if header.defects or len(header.addresses) != 1:
        return None
    address = header.addresses[0]
    if not address.username or "." not in address.domain:
        return None
    return address.display_name, address.addr_spec


def smtp_url_problem(url: str) -> str | None:
    """Why `url` is no SMTP URL `recovery.adapters.email.parse_smtp_url` accepts, or None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "has a port that is not a number from 1 to 65535"
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        return "must look like smtp://user:pass@host:port?tls=starttls"
    if port == 0:
        return "has a port that is not a number from 1 to 65535"
    tls = parse_qs(parts.query).get("tls", ["none"])[0]
    if tls not in SMTP_TLS:
        return "has tls= other than starttls, implicit or none"
    return None


def _dns_server_ok(value: str) -> bool:
    host, port = value, "53"
    if value.startswith("["):  # [::1]:5353
        host, _, rest = value[1:].partition("]")
        port = rest.removeprefix(":") or "53"
    elif value.count(":") == 1:
        host, port = value.split(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return port.isdigit() and 0 < int(port) < 65536


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
    # Claim/decide/record loops per worker process on PostgreSQL, each on its own connection and
    # sharing the threads above: one loop waits on database round trips most of its time.
    # SQLite (one writer) always runs one.
    worker_loops: int = 2
    # The most one provider call may take, the SDK's own retries included: well inside the
    # 5-minute lease on a due action, so no other worker takes it over while it runs.
    provider_deadline_seconds: float = 60.0
    # Processed events, finished due actions and sent or cancelled messages older than this are
    # deleted by a daily job (never what a case timeline or a dashboard figure still needs).
    retention_days: int = 90
    log_level: str = "INFO"
    log_format: str = "text"  # or "json": one JSON object per line (recovery.logs)
    extra: Mapping[str, str] = field(default_factory=dict)
    # Reminders. Unset: messages stay in the local outbox (the table) and the log.
    smtp_url: str = ""  # smtp://user:pass@host:port?tls=starttls|implicit
    # `billing@acme.example` or `Dana at Acme <billing@acme.example>`: the address overrides
    # [business] sender_email, a display name the "<sender_name> at <business>" of the From header.
    mail_from: str = ""
    twilio_account_sid: str = ""
    twilio_auth_token: str = ""
    twilio_messaging_service_sid: str = ""
    twilio_from_number: str = ""
    twilio_api_base: str = ""  # a local stand-in instead of https://api.twilio.com
    # `recovery doctor`: the DKIM selector the mail provider signs with, and which DNS servers
    # to ask (default: the system's resolver).
    dkim_selector: str = ""
    dns_servers: tuple[str, ...] = ()
    # The in-app banner (/embed/v1): the secret the business signs banner tokens with.
    embed_secret: str = ""
    # shadow: webhooks, cases and plans run, but nothing is charged, sent or changed at Stripe.
    mode: str = "live"
    # When set, GET /metrics wants `Authorization: Bearer <token>`.
    metrics_token: str = ""

    @property
    def is_shadow(self) -> bool:
        return self.mode == "shadow"

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def mail_from_name(self) -> str:
        """The display name of RECOVERY_MAIL_FROM ("" when it is a bare address or unset)."""
        parsed = parse_sender(self.mail_from) if self.mail_from else None
        return parsed[0] if parsed else ""

    @property
    def mail_from_address(self) -> str:
        """The address of RECOVERY_MAIL_FROM ("" when unset)."""
        parsed = parse_sender(self.mail_from) if self.mail_from else None
        return parsed[1] if parsed else ""

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, instance_path: Path | None = None
    ) -> Settings:
        """The settings in `environ` (default: the process environment), every value checked:
        a bad one raises ConfigError naming each bad setting with a good example."""
        env = os.environ if environ is None else environ
        problems = _environment_problems(env)
        instance = Path(env.get("RECOVERY_INSTANCE_PATH") or instance_path or "instance").resolve()
        database_url = env.get("RECOVERY_DATABASE_URL") or f"sqlite:///{instance / 'recovery.db'}"
        rules = env.get("RECOVERY_RULES")
        max_bytes = _number(env, "RECOVERY_WEBHOOK_MAX_BYTES", 1024 * 1024, int, problems)
        tick = _number(env, "RECOVERY_WORKER_TICK_SECONDS", 1.0, float, problems)
        threads = _number(env, "RECOVERY_WORKER_THREADS", 8, int, problems)
        loops = _number(env, "RECOVERY_WORKER_LOOPS", 2, int, problems)
        deadline = _number(env, "RECOVERY_PROVIDER_DEADLINE_SECONDS", 60.0, float, problems)
        retention = _number(env, "RECOVERY_RETENTION_DAYS", 90, int, problems)
        settings = cls(
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
            webhook_max_bytes=int(max_bytes),
            process_inline=FLAGS.get(env.get("RECOVERY_PROCESS_INLINE", "0").lower(), False),
            worker_tick_seconds=float(tick),
            worker_threads=int(threads),
            worker_loops=int(loops),
            provider_deadline_seconds=float(deadline),
            retention_days=int(retention),
            log_level=env.get("RECOVERY_LOG_LEVEL", "INFO").upper(),
            log_format=env.get("RECOVERY_LOG_FORMAT", "text").lower(),
            smtp_url=env.get("RECOVERY_SMTP_URL", ""),
            mail_from=env.get("RECOVERY_MAIL_FROM", ""),
            twilio_account_sid=env.get("TWILIO_ACCOUNT_SID", ""),
            twilio_auth_token=env.get("TWILIO_AUTH_TOKEN", ""),
            twilio_messaging_service_sid=env.get("TWILIO_MESSAGING_SERVICE_SID", ""),
            twilio_from_number=env.get("TWILIO_FROM_NUMBER", ""),
            twilio_api_base=env.get("TWILIO_API_BASE", ""),
            dkim_selector=env.get("RECOVERY_DKIM_SELECTOR", "").strip(),
            dns_servers=_split(env.get("RECOVERY_DNS_SERVERS")),
            embed_secret=env.get("RECOVERY_EMBED_SECRET", ""),
            mode=env.get("RECOVERY_MODE", "live").strip().lower() or "live",
            metrics_token=env.get("RECOVERY_METRICS_TOKEN", "").strip(),
        )
        problems += settings.problems()
        if problems:
            raise ConfigError(_listed("invalid settings", problems))
        return settings

    def problems(self) -> list[str]:
        """Every value of these settings that cannot work, one actionable line each."""
        found: list[str] = []
        add = found.append
        if self.env not in ENVIRONMENTS:
            add(problem("RECOVERY_ENV", f"is {self.env!r}, not one of {', '.join(ENVIRONMENTS)}"))
        if self.database_url:
            try:
                url = make_url(self.database_url)
            except ArgumentError:
                url = None
            if url is None or url.get_backend_name() not in ("sqlite", "postgresql"):
                add(problem("RECOVERY_DATABASE_URL", "is not a SQLite or PostgreSQL URL"))
            elif url.get_backend_name() == "postgresql" and url.drivername != "postgresql+psycopg":
                add(problem("RECOVERY_DATABASE_URL", "must name the psycopg driver"))
        if self.stripe_api_key.startswith("pk_"):
            add(problem("STRIPE_API_KEY", "is a publishable key, which cannot call the API"))
        elif self.stripe_api_key and not STRIPE_KEY.fullmatch(self.stripe_api_key):
            add(problem("STRIPE_API_KEY", "is not a Stripe secret or restricted key"))
        if any(not WEBHOOK_SECRET.fullmatch(s) for s in self.stripe_webhook_secrets):
            add(problem("STRIPE_WEBHOOK_SECRETS", "holds a value that is not a whsec_ secret"))
        if self.stripe_api_base is not None and not _http_url(self.stripe_api_base):
            add(problem("STRIPE_API_BASE", "is not an http(s) URL"))
        if any(len(k) < MIN_API_KEY or not k.isprintable() or " " in k for k in self.api_keys):
            add(problem("RECOVERY_API_KEYS", f"holds a key shorter than {MIN_API_KEY} characters"))
        if self.secret_key != DEV_SECRET_KEY and len(self.secret_key) < 16:
            add(problem("RECOVERY_SECRET_KEY", "is shorter than 16 characters"))
        parts = urlsplit(self.public_url)
        if not _http_url(self.public_url) or parts.query or parts.fragment:
            add(problem("RECOVERY_PUBLIC_URL", "is not an http(s) URL without query or fragment"))
        if self.rules_path is not None and not self.rules_path.is_file():
            add(problem("RECOVERY_RULES", f"names {str(self.rules_path)!r}, which is no file"))
        if not 1024 <= self.webhook_max_bytes <= 64 * 1024 * 1024:
            add(problem("RECOVERY_WEBHOOK_MAX_BYTES", "must be from 1024 to 67108864"))
        if not 0.05 <= self.worker_tick_seconds <= 60:
            add(problem("RECOVERY_WORKER_TICK_SECONDS", "must be from 0.05 to 60"))
        if not 1 <= self.worker_threads <= 256:
            add(problem("RECOVERY_WORKER_THREADS", "must be from 1 to 256"))
        if not 1 <= self.worker_loops <= 8:  # each holds a connection of the pool
            add(problem("RECOVERY_WORKER_LOOPS", "must be from 1 to 8"))
        # the 5-minute lease must outlive a provider call, or another worker would take it over
        if not 1 <= self.provider_deadline_seconds <= 240:
            add(problem("RECOVERY_PROVIDER_DEADLINE_SECONDS", "must be from 1 to 240"))
        if self.retention_days < 0:
            add(problem("RECOVERY_RETENTION_DAYS", "must be 0 (keep everything) or more"))
        if self.log_level not in LOG_LEVELS:
            add(problem("RECOVERY_LOG_LEVEL", f"is not one of {', '.join(LOG_LEVELS)}"))
        if self.log_format not in LOG_FORMATS:
            add(problem("RECOVERY_LOG_FORMAT", "is not text or json"))
        smtp = smtp_url_problem(self.smtp_url) if self.smtp_url else None
        if smtp is not None:
            add(problem("RECOVERY_SMTP_URL", smtp))
        if self.mail_from and parse_sender(self.mail_from) is None:
            add(problem("RECOVERY_MAIL_FROM", "is not one email address"))
        found += self._twilio_problems()
        if self.dkim_selector and not DKIM_SELECTOR.fullmatch(self.dkim_selector):
            add(problem("RECOVERY_DKIM_SELECTOR", "is not a DNS label"))
        if any(not _dns_server_ok(s) for s in self.dns_servers):
            add(problem("RECOVERY_DNS_SERVERS", "holds a value that is not an IP[:port]"))
        if self.embed_secret and len(self.embed_secret) < MIN_EMBED_SECRET:
            add(problem("RECOVERY_EMBED_SECRET", f"is shorter than {MIN_EMBED_SECRET} characters"))
        if self.mode not in MODES:
            add(problem("RECOVERY_MODE", f"is {self.mode!r}, not live or shadow"))
        token = self.metrics_token
        if token and (len(token) < MIN_METRICS_TOKEN or not token.isprintable() or " " in token):
            add(problem("RECOVERY_METRICS_TOKEN", f"is shorter than {MIN_METRICS_TOKEN} letters"))
        return found

    def _twilio_problems(self) -> list[str]:
        found = []
        sid, token = self.twilio_account_sid, self.twilio_auth_token
        if sid and not TWILIO_ACCOUNT_SID.fullmatch(sid):
            found.append(problem("TWILIO_ACCOUNT_SID", "is not an account SID"))
        if token and not TWILIO_AUTH_TOKEN.fullmatch(token):
            found.append(problem("TWILIO_AUTH_TOKEN", "is not 32 letters and digits"))
        if sid and not token:  # (a token alone is fine: it checks Twilio's webhook signatures)
            found.append(problem("TWILIO_AUTH_TOKEN", "is not set, but TWILIO_ACCOUNT_SID is"))
        service, number = self.twilio_messaging_service_sid, self.twilio_from_number
        if service and not TWILIO_SERVICE_SID.fullmatch(service):
            found.append(problem("TWILIO_MESSAGING_SERVICE_SID", "is not a messaging service SID"))
        if number and e164(number) != number and not ALPHANUMERIC_SENDER.fullmatch(number):
            found.append(problem("TWILIO_FROM_NUMBER", "is no E.164 number or sender ID"))
        if sid and token and not (service or number):
            found.append(
                problem("TWILIO_MESSAGING_SERVICE_SID", "(or TWILIO_FROM_NUMBER) must be set")
            )
        if self.twilio_api_base and not _http_url(self.twilio_api_base):
            found.append(problem("TWILIO_API_BASE", "is not an http(s) URL"))
        return found

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
        """Raise ConfigError when a value cannot work, or is unsafe in production."""
        problems = self.problems()
        if problems:
            raise ConfigError(_listed("invalid settings", problems))
        if self.is_production:
            problems = self.production_problems()
            if problems:
                raise ConfigError(
                    _listed("refusing to start in production with unsafe settings", problems)
                )


def _listed(title: str, problems: list[str]) -> str:
    return f"{title}:\n  - " + "\n  - ".join(problems)


def _number(
    env: Mapping[str, str],
    name: str,
    default: float,
    kind: type[int] | type[float],
    problems: list[str],
) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return kind(raw)
    except ValueError:
        problems.append(problem(name, f"is {raw!r}, not a number"))
        return default


def _environment_problems(env: Mapping[str, str]) -> list[str]:
    """Checks of settings read elsewhere straight from the environment (the rate-limit storage,
    the demo switch, the cancel flow's secrets), and of values that do not survive parsing."""
    found = []
    for name in ("RECOVERY_PROCESS_INLINE", "RECOVERY_DEMO"):
        value = env.get(name)
        if value is not None and value.strip() and value.strip().lower() not in FLAGS:
            found.append(problem(name, f"is {value!r}, not 1 or 0"))
    instance = env.get("RECOVERY_INSTANCE_PATH")
    if instance and Path(instance).exists() and not Path(instance).is_dir():
        found.append(problem("RECOVERY_INSTANCE_PATH", "names a file, not a directory"))
    storage = env.get("RECOVERY_RATELIMIT_STORAGE_URL")
    if storage and urlsplit(storage).scheme not in RATELIMIT_SCHEMES:
        found.append(problem("RECOVERY_RATELIMIT_STORAGE_URL", "is no memory/Redis/Memcached URL"))
    link_secret = env.get("RECOVERY_CANCEL_LINK_SECRET", "").strip()
    if link_secret and len(link_secret) < 16:
        found.append(problem("RECOVERY_CANCEL_LINK_SECRET", "is shorter than 16 characters"))
    hook_url = env.get("RECOVERY_CANCEL_WEBHOOK_URL", "").strip()
    if hook_url and not _http_url(hook_url):
        found.append(problem("RECOVERY_CANCEL_WEBHOOK_URL", "is not an http(s) URL"))
    if hook_url and len(env.get("RECOVERY_CANCEL_WEBHOOK_SECRET", "").strip()) < 16:
        found.append(
            problem("RECOVERY_CANCEL_WEBHOOK_SECRET", "(16+ characters) is required with the URL")
        )
    return found
