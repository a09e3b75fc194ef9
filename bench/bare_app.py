"""The stack's ceiling: a WSGI app that reads the body and answers 200, nothing else.

Served by the same gunicorn configuration as `wsgi:app` and fed the same signed events, it
measures what gunicorn + the load generator + the kernel cost without Flask, the signature
check or the database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    environ["wsgi.input"].read()  # consume the body, as any webhook endpoint must
    body = b'{"received":true}'
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]
