"""SMTP servers on loopback (aiosmtpd) the way providers run them: STARTTLS with a certificate,
AUTH LOGIN/PLAIN with a password, AUTH offered only after STARTTLS - and a certificate authority
of the test's own (openssl), so TLS is verified as in production."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.conftest import skip_or_fail
from tests.support.smtp_sink import SmtpSink


def self_signed(folder: Path) -> tuple[Path, Path]:
    """(certificate, key) for 127.0.0.1 and localhost; the certificate is its own CA."""
    if shutil.which("openssl") is None:
        skip_or_fail("openssl is missing: apt-get install openssl")
    cert, key = folder / "cert.pem", folder / "key.pem"
    args = "req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 -addext"
    san = "subjectAltName=IP:127.0.0.1,DNS:localhost"
    subprocess.run(
        ["openssl", *args.split(), san, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def client_trusting(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def smtp_server(
    *,
    tls: tuple[Path, Path] | None = None,
    users: dict[str, str] | None = None,
    auth_require_tls: bool = True,
) -> Iterator[SmtpSink]:
    """An SMTP sink with STARTTLS (`tls`: certificate and key) and/or AUTH (`users`)."""
    sink = SmtpSink(port=_free_port())
    options: dict[str, Any] = {}
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
        options["tls_context"] = context
    if users is not None:

        def authenticator(
            server: Any, session: Any, envelope: Any, mechanism: str, data: Any
        ) -> AuthResult:
            good = isinstance(data, LoginPassword) and users.get(data.login.decode()) == (
                data.password.decode()
            )
            return AuthResult(success=good, handled=False)

        options.update(authenticator=authenticator, auth_require_tls=auth_require_tls)
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port, **options)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()
