"""A local stand-in for Twilio's Messages API, served on loopback for the real twilio SDK.

Records every request; answers like Twilio (201 with a Message resource, 400 with
{"code": ...} for scripted errors); lists messages newest first. For `recovery doctor` it also
answers the reads that check an account: the account itself, its phone numbers, its messaging
services and their sender pools; with `auth_token` set, a request with other credentials gets
Twilio's 401 (error 20003).
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class TwilioFake:
    requests: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    errors: list[tuple[int, int]] = field(default_factory=list)  # (status, code), used in order
    url: str = ""
    # The account, for the doctor's reads. Credentials are checked only when a token is set.
    account_sid: str = ""
    auth_token: str = ""
    account_status: str = "active"
    account_type: str = "Full"
    numbers: list[dict[str, Any]] = field(default_factory=list)  # {"phone_number", "capabilities"}
    services: dict[str, list[str]] = field(default_factory=dict)  # MG sid -> its phone numbers

    @property
    def sent(self) -> list[dict[str, Any]]:
        return [r["form"] for r in self.requests if r["method"] == "POST"]

    def fail_next(self, status: int, code: int) -> None:
        self.errors.append((status, code))


def _handler(fake: TwilioFake) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _refused(self) -> bool:
            """Twilio's answer to wrong credentials, when the fake checks them."""
            if not fake.auth_token:
                return False
            auth = base64.b64decode(self.headers["Authorization"].split()[1]).decode()
            if auth == f"{fake.account_sid}:{fake.auth_token}":
                return False
            self._reply(401, {"code": 20003, "message": "Authenticate", "status": 401})
            return True

        def _account_reads(self, path: str, query: dict[str, str]) -> bool:
            if match := re.fullmatch(r"/2010-04-01/Accounts/(AC\w+)\.json", path):
                self._reply(
                    200,
                    {
                        "sid": match[1],
                        "friendly_name": "Acme",
                        "status": fake.account_status,
                        "type": fake.account_type,
                    },
                )
            elif path.endswith("/IncomingPhoneNumbers.json"):
                wanted = query.get("PhoneNumber")
                found = [n for n in fake.numbers if wanted in (None, n["phone_number"])]
                self._reply(200, {"incoming_phone_numbers": found, "next_page_uri": None})
            elif match := re.fullmatch(r"/v1/Services/(MG\w+)(/PhoneNumbers)?", path):
                if match[1] not in fake.services:
                    self._reply(404, {"code": 20404, "message": "Not found", "status": 404})
                elif match[2]:
                    pool = [{"phone_number": n} for n in fake.services[match[1]]]
                    meta = {"key": "phone_numbers", "next_page_url": None, "page": 0}
                    self._reply(200, {"phone_numbers": pool, "meta": meta})
                else:
                    self._reply(200, {"sid": match[1], "friendly_name": "Acme reminders"})
            else:
                return False
            return True

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            fake.requests.append({"method": "GET", "path": parts.path, "query": query})
            if self._refused() or self._account_reads(parts.path, query):
                return
            found = [m for m in reversed(fake.messages) if m["to"] == query.get("To", m["to"])]
            self._reply(200, {"messages": found, "next_page_uri": None, "page": 0})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            auth = base64.b64decode(self.headers["Authorization"].split()[1]).decode()
            fake.requests.append({"method": "POST", "path": self.path, "form": form, "auth": auth})
            if self._refused():
                return
            if fake.errors:
                status, code = fake.errors.pop(0)
                return self._reply(
                    status, {"code": code, "message": f"error {code}", "status": status}
                )
            sid = f"SM{len(fake.messages):032d}"
            message = {
                "sid": sid,
                "to": form["To"],
                "from": form.get("From"),
                "messaging_service_sid": form.get("MessagingServiceSid"),
                "body": form["Body"],
                "status": "queued",
                "date_created": format_datetime(datetime.now(UTC)),
                "num_segments": "1",
            }
            fake.messages.append(message)
            self._reply(201, message)

    return Handler


@contextmanager
def twilio_fake() -> Iterator[TwilioFake]:
    fake = TwilioFake()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
