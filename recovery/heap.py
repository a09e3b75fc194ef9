"""The garbage collector of a long-running process, told once the process has started.

CPython's cyclic collector walks every tracked object of the generations it collects, and its
oldest generation holds what a process made while starting - modules, SQLAlchemy's mappers and
compiled statements, Babel's locale data, Jinja's templates - none of which ever becomes
garbage. Walking it again at every full collection was a fifth of a worker's CPU: 1.5 s of
8.6 CPU s in nine full collections (bench/worker_throughput.py, 16,000 actions, 2 processes),
each a pause of about 170 ms with the interpreter lock held. `gc.freeze()` moves those objects
to a generation the collector never walks; collections then see only what the process made
since. Called by the processes' entry points (`recovery worker`, the server of `recovery run`
and `recovery demo`, `wsgi.py`), never by library code: tests build many apps in one process,
and what a freeze holds stays until the process ends. (The demo's history freezes its own
start for the length of the history: recovery/devtools/history/loop.py.)
"""

from __future__ import annotations

import gc


def settle() -> None:
    """Once the process holds what it keeps for its lifetime: collect what starting left as
    garbage, then freeze the rest out of later collections."""
    gc.collect()
    gc.freeze()
