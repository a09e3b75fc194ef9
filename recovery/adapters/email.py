"""Plain-text email over SMTP.

Messages are built with `email.message.EmailMessage` and `email.headerregistry.Address`, never
by pasting strings into headers: CR/LF in a display name cannot add a header (bpo-39073,
docs/messaging.md), and we strip them before CPython has to refuse them. The Message-ID is derived
from the outbox dedupe key, so a message re-sent after a crash carries the same id and
receivers (and our own tests) can tell it is the same message.
"""

from __future__ import annotations

import hashlib
import smtplib
import ssl
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Literal, Protocol
from urllib.parse import parse_qs, unquote, urlsplit


class SendError(Exception):
    """Delivery did not happen. `permanent`: trying again cannot help (a hard bounce)."""

    def __init__(self, message: str, *, permanent: bool, code: int | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.code = code


class Mailer(Protocol):
    def send(self, message: EmailMessage) -> str: ...


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    username: str | None
    password: str | None
    tls: Literal["none", "starttls", "implicit"]
    timeout: float = 30.0


def parse_smtp_url(url: str) -> SmtpConfig:
    """smtp://user:pass@host:port?tls=starttls|implicit|none (default: implicit for smtps://
    and port 465, starttls on 587, none otherwise - say tls= explicitly in production)."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError("RECOVERY_SMTP_URL must look like smtp://user:pass@host:587?tls=starttls")
    query = parse_qs(parts.query)
    port = parts.port or (465 if parts.scheme == "smtps" else 587)
    if parts.scheme == "smtps" or port == 465:
        default = "implicit"
    else:
        default = "starttls" if port == 587 else "none"
    tls = query.get("tls", [default])[0]
    if tls not in ("none", "starttls", "implicit"):
        raise ValueError("RECOVERY_SMTP_URL tls= must be starttls, implicit or none")
    return SmtpConfig(
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=tls,  # type: ignore[arg-type]
    )


def _one_line(value: str) -> str:
    return " ".join(value.split())


def address(display_name: str, addr: str) -> Address:
    """An Address whose display name cannot smuggle a header (CR/LF collapsed to spaces)."""
    return Address(display_name=_one_line(display_name), addr_spec=_one_line(addr))


def message_id(dedupe_key: str, sender: str) -> str:
    """<digest@sender-domain>: stable across re-sends of one outbox message."""
    digest = hashlib.sha256(dedupe_key.encode()).hexdigest()[:32]
    domain = sender.rpartition("@")[2] or "recovery.invalid"
    return f"<{digest}@{domain}>"


def build(
    *,
    sender: Address,
    reply_to: Address,
    to: Address,
    subject: str,
    body: str,
    dedupe_key: str,
    date: datetime,
    list_unsubscribe: str | None = None,
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Reply-To"] = reply_to
    msg["Subject"] = _one_line(subject)
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = message_id(dedupe_key, sender.addr_spec)
    # Transactional mail about the customer's own account: no List-Unsubscribe (CAN-SPAM's
    # transactional category, docs/messaging.md); automated, so auto-responders stay quiet.
    msg["Auto-Submitted"] = "auto-generated"
    if list_unsubscribe:  # marketing: RFC 8058 (docs/messaging.md#one-click-unsubscribe)
        msg["List-Unsubscribe"] = f"<{_one_line(list_unsubscribe)}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(body, subtype="plain", charset="utf-8")
    return msg


class SmtpMailer:
    def __init__(self, config: SmtpConfig) -> None:
        self.config = config

    def _connect(self) -> smtplib.SMTP:
        c = self.config
        if c.tls == "implicit":
            return smtplib.SMTP_SSL(
                c.host, c.port, timeout=c.timeout, context=ssl.create_default_context()
            )
        smtp = smtplib.SMTP(c.host, c.port, timeout=c.timeout)
        if c.tls == "starttls":
            smtp.starttls(context=ssl.create_default_context())
        return smtp

    def send(self, message: EmailMessage) -> str:
        """Hand the message to the SMTP server. Returns its Message-ID."""
        try:
            with self._connect() as smtp:
                if self.config.username:
                    smtp.login(self.config.username, self.config.password or "")
                refused = smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            permanent = all(code >= 500 for code in codes)
            raise SendError(f"recipient refused ({codes})", permanent=permanent) from exc
        except smtplib.SMTPResponseException as exc:
            # 5xx is a permanent failure (RFC 5321 4.2.1), 4xx a temporary one. An
            # authentication failure (535) is our configuration: worth retrying once fixed.
            permanent = exc.smtp_code >= 500 and exc.smtp_code not in (530, 534, 535)
            raise SendError(
                f"SMTP {exc.smtp_code}", permanent=permanent, code=exc.smtp_code
            ) from exc
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:
            raise SendError(f"SMTP unavailable: {exc.__class__.__name__}", permanent=False) from exc
        if refused:
            raise SendError("recipient refused", permanent=True)
        return str(message["Message-ID"])
