"""A DNS server on loopback (dnslib) answering TXT questions from a dict: enough for the
doctor's SPF, DKIM and DMARC look-ups, asked by dnspython exactly as a real resolver is."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from dnslib import QTYPE, RCODE, RR, TXT
from dnslib.server import BaseResolver, DNSLogger, DNSServer


@dataclass
class Zone:
    """name -> TXT values; a name that is absent answers NXDOMAIN."""

    txt: dict[str, list[str]] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)
    port: int = 0

    @property
    def server(self) -> str:
        """The RECOVERY_DNS_SERVERS value that points at this server."""
        return f"127.0.0.1:{self.port}"


class _Resolver(BaseResolver):  # type: ignore[misc]
    def __init__(self, zone: Zone) -> None:
        self.zone = zone

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        self.zone.asked.append(name)
        values = self.zone.txt.get(name)
        if values is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype == QTYPE.TXT:
            for value in values:
                # A TXT record is a list of strings of at most 255 bytes each (RFC 1035 3.3.14).
                chunks = [value[i : i + 255] for i in range(0, len(value), 255)] or [""]
                reply.add_answer(RR(name, QTYPE.TXT, rdata=TXT(chunks), ttl=60))
        return reply


@contextmanager
def dns_server(txt: dict[str, list[str]] | None = None) -> Iterator[Zone]:
    zone = Zone(txt=dict(txt or {}))
    server = DNSServer(
        _Resolver(zone), address="127.0.0.1", port=0, logger=DNSLogger("-request,-reply,-truncated")
    )
    zone.port = server.server.server_address[1]
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield zone
    finally:
        server.server.shutdown()
        server.server.server_close()
