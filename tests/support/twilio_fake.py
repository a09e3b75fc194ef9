"""A local stand-in for Twilio's Messages API, served on loopback for the real twilio SDK.

Records every request; answers like Twilio (201 with a Message resource, 400 with
{"code": ...} for scripted errors); lists messages newest first.
"""

from __future__ import annotations

import base64
import json
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

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            fake.requests.append({"method": "GET", "path": parts.path, "query": query})
            found = [m for m in reversed(fake.messages) if m["to"] == query.get("To", m["to"])]
            self._reply(200, {"messages": found, "next_page_uri": None, "page": 0})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            auth = base64.b64decode(self.headers["Authorization"].split()[1]).decode()
            fake.requests.append({"method": "POST", "path": self.path, "form": form, "auth": auth})
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
