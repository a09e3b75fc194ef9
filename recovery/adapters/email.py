"""Plain-text email over SMTP.

Messages are built with `email.message.EmailMessage` and `email.headerregistry.Address`, never
by pasting arbitrary strings into headers: CR/LF in a display name cannot add a header
(bpo-39073, docs/messaging.md), and we strip them before CPython has to refuse them. An outbox
email (`Email`) is written to bytes directly (`Email.wire`), but only a value of printable
ASCII words goes into a header as it is; every other value, and every display name, goes
through the email package, so the bytes are the ones `send_message` writes. The Message-ID is
derived from the outbox dedupe key, so a message re-sent after a crash carries the same id and
receivers (and our own tests) can tell it is the same message.

Each worker thread keeps one SMTP connection open (logged in once) and reuses it for every
message; a connection the server dropped meanwhile is replaced once, before anything was sent
on it. Every socket wait is capped to the provider call's deadline (adapters/deadline.py), so
a server that accepts and never answers costs at most the deadline.
"""

from __future__ import annotations

import functools
import hashlib
import re
import smtplib
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email import contentmanager, policy
from email.headerregistry import Address, BaseHeader
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any, Literal, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from recovery.adapters import deadline


class SendError(Exception):
    """Delivery did not happen. `permanent`: trying again cannot help (a hard bounce)."""

    def __init__(self, message: str, *, permanent: bool, code: int | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.code = code


class Mailer(Protocol):
    def send(self, message: Outgoing) -> str: ...


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


@functools.lru_cache(maxsize=1024)
def address(display_name: str, addr: str) -> Address:
    """An Address whose display name cannot smuggle a header (CR/LF collapsed to spaces).
    Cached: an Address cannot be changed, and the sender's is built for every message."""
    return Address(display_name=_one_line(display_name), addr_spec=_one_line(addr))


@functools.lru_cache(maxsize=256)
def _header(name: str, value: str, display_name: str | None = None) -> BaseHeader:
    """A header parsed once: the sender's and the fixed ones are the same on every message, and
    parsing a header is most of building a message (~0.1 ms an address). An EmailMessage keeps
    a header object of the right name as it is (`EmailPolicy.header_store_parse`). With
    `display_name`, `value` is an address (an Address cannot be a cache key)."""
    parsed = value if display_name is None else Address(display_name, addr_spec=value)
    header: BaseHeader = policy.default.header_factory(name, parsed)
    return header


def _address_header(name: str, who: Address) -> BaseHeader:
    return _header(name, who.addr_spec, who.display_name)


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
    msg = EmailMessage(policy=policy.default)
    msg["From"] = _address_header("From", sender)
    msg["To"] = to
    msg["Reply-To"] = _address_header("Reply-To", reply_to)
    msg["Subject"] = _one_line(subject)
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = message_id(dedupe_key, sender.addr_spec)
    # Transactional mail about the customer's own account: no List-Unsubscribe (CAN-SPAM's
    # transactional category, docs/messaging.md); automated, so auto-responders stay quiet.
    msg["Auto-Submitted"] = _header("Auto-Submitted", "auto-generated")
    if list_unsubscribe:  # marketing: RFC 8058 (docs/messaging.md#one-click-unsubscribe)
        msg["List-Unsubscribe"] = f"<{_one_line(list_unsubscribe)}>"
        msg["List-Unsubscribe-Post"] = _header(
            "List-Unsubscribe-Post", "List-Unsubscribe=One-Click"
        )
    msg.set_content(body, subtype="plain", charset="utf-8")
    return msg


@dataclass(frozen=True)
class Email:
    """An email's parts (an outbox message decided in the claim's transaction), made into
    bytes on a provider thread by the mailer: `message()` is the `EmailMessage` (the reference),
    `wire()` the same bytes written directly when that is safe (see `_wire`)."""

    sender: tuple[str, str]  # display name, address
    reply_to: tuple[str, str]
    to: str
    subject: str
    body: str
    dedupe_key: str  # the Message-ID derives from it: the same on every attempt
    date: datetime
    list_unsubscribe: str | None = None

    @property
    def message_id(self) -> str:
        return message_id(self.dedupe_key, address(*self.sender).addr_spec)

    def message(self) -> EmailMessage:
        return build(
            sender=address(*self.sender),
            reply_to=address(*self.reply_to),
            to=address("", self.to),
            subject=self.subject,
            body=self.body,
            dedupe_key=self.dedupe_key,
            date=self.date,
            list_unsubscribe=self.list_unsubscribe,
        )

    def wire(self) -> Wire | None:
        return _wire(self)


Outgoing = EmailMessage | Email


@dataclass(frozen=True)
class Wire:
    """What `SMTP.send_message` would hand to `sendmail` for a message: envelope and bytes."""

    sender: str
    recipient: str
    data: bytes


# Building an EmailMessage parses every header and then folds it again to write it out: ~0.7
# ms of CPU a message, most of an email's cost in the worker. `_wire` writes the same bytes
# directly: headers that are the same on every message folded once (cached), a per-message
# header written as it is when it is plain (printable ASCII, nothing the parser would read
# differently, short enough not to fold), any other folded by the email package as
# `send_message` would; the body encoded by the function `set_content` uses. The bytes are
# checked equal to `send_message`'s in tests/test_email.py.
_SMTP_POLICY = policy.default.clone(linesep="\r\n")  # what send_message flattens with
# The function `EmailMessage.set_content` encodes a text body with (7bit, 8bit, quoted-printable
# or base64, whichever it finds best): not public, so tests/test_email.py holds it to its output.
_encode_text: Callable[[str, str, str | None, Any], tuple[str, str]] = contentmanager._encode_text  # type: ignore[attr-defined]
_CRLF = re.compile(r"\r\n|\r|\n")  # the generator's line breaks
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+"
)
_PLAIN_TEXT = re.compile(r"[\x21-\x7e]+( [\x21-\x7e]+)*")
_MAX_LINE = 78  # policy.default's max_line_length: a longer header line is folded


@functools.lru_cache(maxsize=1024)
def _folded(name: str, value: str, display_name: str | None = None) -> bytes:
    """A header exactly as send_message writes it (parsed and folded by the email package)."""
    return _SMTP_POLICY.fold_binary(name, _header(name, value, display_name))


def _plain(name: str, value: str) -> bytes:
    """A header written as it is when the email package would write it unchanged: printable
    ASCII words (no encoded-word look-alike) on one short line; otherwise folded by it."""
    line = f"{name}: {value}\r\n"
    if len(line) - 2 <= _MAX_LINE and "=?" not in value and _PLAIN_TEXT.fullmatch(value):
        return line.encode("ascii")
    return _SMTP_POLICY.fold_binary(name, policy.default.header_factory(name, value))


def _wire(email: Email) -> Wire | None:
    """The message's bytes as send_message would write them, or None when an address needs
    more than plain ASCII (SMTPUTF8: send_message decides that)."""
    sender, reply_to = address(*email.sender), address(*email.reply_to)
    to = _one_line(email.to)
    if not (_PLAIN_ADDRESS.fullmatch(to) and _PLAIN_ADDRESS.fullmatch(sender.addr_spec)):
        return None
    to_line = f"To: {to}\r\n"  # as it is only when the email package would write it so
    if len(to_line) - 2 > _MAX_LINE or "=?" in to:
        return None
    cte, payload = _encode_text(email.body, "utf-8", None, policy.default)
    parts = [
        _folded("From", sender.addr_spec, sender.display_name),
        to_line.encode("ascii"),
        _folded("Reply-To", reply_to.addr_spec, reply_to.display_name),
        _plain("Subject", _one_line(email.subject)),
        _plain("Date", format_datetime(email.date)),
        _plain("Message-ID", email.message_id),
        _folded("Auto-Submitted", "auto-generated"),
    ]
    if email.list_unsubscribe:
        parts.append(_plain("List-Unsubscribe", f"<{_one_line(email.list_unsubscribe)}>"))
        parts.append(_folded("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
    parts += [
        _folded("Content-Type", 'text/plain; charset="utf-8"'),
        _folded("Content-Transfer-Encoding", cte),
        _folded("MIME-Version", "1.0"),
        b"\r\n",
        "\r\n".join(_CRLF.split(payload)).encode("ascii", "surrogateescape"),
    ]
    return Wire(sender.addr_spec, to, b"".join(parts))


class SmtpMailer:
    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._local = threading.local()  # one connection per thread

    def _connect(self) -> smtplib.SMTP:
        c = self.config
        timeout = deadline.cap(c.timeout)
        smtp: smtplib.SMTP
        if c.tls == "implicit":
            smtp = smtplib.SMTP_SSL(
                c.host, c.port, timeout=timeout, context=ssl.create_default_context()
            )
        else:
            smtp = smtplib.SMTP(c.host, c.port, timeout=timeout)
            if c.tls == "starttls":
                smtp.starttls(context=ssl.create_default_context())
        if c.username:
            smtp.login(c.username, c.password or "")
        return smtp

    def _connection(self) -> tuple[smtplib.SMTP, bool]:
        """This thread's connection, and whether it was opened just now."""
        smtp: smtplib.SMTP | None = getattr(self._local, "smtp", None)
        if smtp is not None:
            return smtp, False
        smtp = self._connect()
        self._local.smtp = smtp
        return smtp, True

    def close(self) -> None:
        """Close this thread's connection (the others close with their threads)."""
        smtp: smtplib.SMTP | None = getattr(self._local, "smtp", None)
        self._local.smtp = None
        if smtp is not None:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()

    def _drop(self) -> None:
        smtp: smtplib.SMTP | None = getattr(self._local, "smtp", None)
        self._local.smtp = None
        if smtp is not None:
            smtp.close()

    def _send_on(
        self, smtp: smtplib.SMTP, message: EmailMessage | Wire
    ) -> dict[str, tuple[int, bytes]]:
        sock = getattr(smtp, "sock", None)
        if isinstance(sock, socket.socket):
            sock.settimeout(deadline.cap(self.config.timeout))
        if isinstance(message, Wire):
            return smtp.sendmail(message.sender, [message.recipient], message.data)
        return smtp.send_message(message)

    def send(self, outgoing: Outgoing) -> str:
        """Hand the message to the SMTP server. Returns its Message-ID."""
        message = (
            (outgoing.wire() or outgoing.message()) if isinstance(outgoing, Email) else outgoing
        )
        try:
            smtp, fresh = self._connection()
            try:
                refused = self._send_on(smtp, message)
            except smtplib.SMTPServerDisconnected:
                self._drop()
                if fresh:
                    raise
                # An idle connection the server closed: it fails at the first command, before
                # the message was handed over. Once more on a new one.
                smtp, _ = self._connection()
                refused = self._send_on(smtp, message)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            permanent = all(code >= 500 for code in codes)
            raise SendError(f"recipient refused ({codes})", permanent=permanent) from exc
        except smtplib.SMTPResponseException as exc:
            # 5xx is a permanent failure (RFC 5321 4.2.1), 4xx a temporary one. An
            # authentication failure (535) is our configuration: worth retrying once fixed.
            # The connection stays usable after a refused message (smtplib sends RSET), but a
            # server error may have left it in any state: start the next one afresh.
            self._drop()
            permanent = exc.smtp_code >= 500 and exc.smtp_code not in (530, 534, 535)
            raise SendError(
                f"SMTP {exc.smtp_code}", permanent=permanent, code=exc.smtp_code
            ) from exc
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:
            self._drop()
            reason = f"{exc.__class__.__name__}: {exc}"[:200]  # e.g. "... closed: timed out"
            raise SendError(f"SMTP unavailable: {reason}", permanent=False) from exc
        if refused:
            raise SendError("recipient refused", permanent=True)
        if isinstance(outgoing, Email):
            return outgoing.message_id
        return str(outgoing["Message-ID"])
