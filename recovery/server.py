"""Serving the app: werkzeug's threaded server with the worker in the same process (the
single-machine setup of `recovery run` and the demo). Production runs gunicorn (`wsgi.py`) and
`recovery worker` processes instead."""

from __future__ import annotations

import signal
import threading
from typing import Any

import click

from recovery import heap
from recovery.app import create_app
from recovery.runtime import Runtime
from recovery.worker import Worker


def serve(rt: Runtime, host: str, port: int, *, with_worker: bool) -> None:
    from werkzeug.serving import make_server

    app = create_app(runtime=rt)
    server = make_server(host, port, app, threaded=True)
    worker_instance = Worker(rt) if with_worker else None
    heap.settle()
    if worker_instance is not None:
        worker_instance.start(blocking=False)

    def stop(*_: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    click.echo(f"recovery is listening on http://{host}:{server.server_port}")
    try:
        server.serve_forever()
    finally:
        if worker_instance is not None:
            worker_instance.stop()
