"""A throwaway PostgreSQL server for tests (initdb + pg_ctl), or the one named in the environment.

- ``RECOVERY_TEST_POSTGRES_URL``: use that server instead of starting one. ``start_postgres``
  then creates a fresh database on it (same name as locally) and never stops the server.
- ``RECOVERY_TEST_PID_DIR``: if set, every server started here is recorded there (one file per
  server: data directory, then postmaster PID) so that ``.ci/run`` can stop leftovers of a killed
  test run by their PID.

From a shell: ``python -m tests.support.postgres start --base-dir DIR`` prints the URL and the
data directory and leaves the server running; ``... stop DATA_DIR`` stops it and deletes it.

PostgreSQL's ``initdb`` refuses to run as root: as root every PostgreSQL binary runs through
``runuser -u postgres --`` and the data directory belongs to ``postgres``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

if TYPE_CHECKING:
    import pytest

URL_ENV = "RECOVERY_TEST_POSTGRES_URL"
PID_DIR_ENV = "RECOVERY_TEST_PID_DIR"
DEFAULT_DATABASE = "recovery_test"
PREFERRED_MAJOR = 15
SYSTEM_USER = "postgres"  # owner of the data directory when we run as root
SUPERUSER = "postgres"  # database superuser created by initdb
_UNIX_SOCKET_PATH_MAX = 107  # sizeof(sun_path) - 1 on Linux
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class PostgresError(RuntimeError):
    """PostgreSQL could not be found, initialised or started."""


@dataclass
class PostgresServer:
    """A PostgreSQL server with one fresh database; ``url`` is a SQLAlchemy URL for it."""

    url: str
    port: int
    data_dir: Path | None = None  # None: a server we did not start (RECOVERY_TEST_POSTGRES_URL)
    bin_dir: Path | None = None
    _remove_dir: Path | None = field(default=None, repr=False)
    _registry_file: Path | None = field(default=None, repr=False)
    _running: bool = field(default=True, repr=False)

    @property
    def external(self) -> bool:
        return self.data_dir is None

    def create_database(self, name: str) -> str:
        """Create (or re-create, empty) database ``name`` on this server; return its URL."""
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        if self.external and worker:
            name = f"{name}_{worker}"  # xdist workers share a server they did not start
        return create_database(self.url, name)

    def stop(self) -> None:
        """Stop the server and delete its data. A no-op for an external server or a second call."""
        if not self._running:
            return
        self._running = False
        _running_servers.pop(id(self), None)
        if self.data_dir is None or self.bin_dir is None:
            return
        # Throwaway data: an immediate shutdown is fine and takes a fraction of "fast".
        _run_pg(self.bin_dir / "pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        if self._registry_file is not None:
            self._registry_file.unlink(missing_ok=True)
        if self._remove_dir is not None:
            shutil.rmtree(self._remove_dir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def find_postgres_bin() -> Path | None:
    """The ``bin`` directory of an installed PostgreSQL (15 preferred, else the newest)."""
    candidates: list[tuple[int, Path]] = []
    for bin_dir in Path("/usr/lib/postgresql").glob("*/bin"):
        if (bin_dir / "initdb").is_file() and (bin_dir / "pg_ctl").is_file():
            with contextlib.suppress(ValueError):
                candidates.append((int(bin_dir.parent.name.split(".")[0]), bin_dir))
    if not candidates:
        return None
    for major, bin_dir in candidates:
        if major == PREFERRED_MAJOR:
            return bin_dir
    return max(candidates)[1]


def postgres_url(database: str, port: int, host: str = "127.0.0.1") -> str:
    return f"postgresql+psycopg://{SUPERUSER}@{host}:{port}/{database}"


def _with_psycopg(url: str | URL) -> URL:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def create_database(url_of_server: str, name: str) -> str:
    """Create an empty database ``name`` on the server of ``url_of_server``; return its URL.

    An existing database of that name is dropped first (its connections are terminated), so the
    result is always empty. ``url_of_server`` may name any database on the server.
    """
    if not _NAME.match(name):
        raise ValueError(f"not a plain database name: {name!r}")
    server = _with_psycopg(url_of_server)
    engine = create_engine(
        server.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    try:
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return server.set(database=name).render_as_string(hide_password=False)


def _is_root() -> bool:
    return os.geteuid() == 0


def _as_owner(*args: str) -> list[str]:
    if _is_root():
        return ["runuser", "-u", SYSTEM_USER, "--", *args]
    return list(args)


def _run_pg(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = _as_owner(*(str(arg) for arg in args))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        cwd="/",  # the postgres user may not be allowed into our working directory
        timeout=120,
        check=False,
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _owner_can_use(directory: Path) -> bool:
    """Can the postgres system user reach and write into ``directory``?"""
    if not _is_root():
        return True
    result = subprocess.run(
        ["runuser", "-u", SYSTEM_USER, "--", "test", "-w", str(directory)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        cwd="/",
        check=False,
    )
    return result.returncode == 0


def _make_data_dir(base_dir: Path) -> tuple[Path, Path]:
    """Return (data directory, directory to delete on stop)."""
    base_dir.mkdir(parents=True, exist_ok=True)
    data_dir = base_dir / "pgdata"
    # The unix socket lives in the data directory and its path must fit in sun_path.
    fits = len(str(data_dir.resolve())) + len("/.s.PGSQL.65535") <= _UNIX_SOCKET_PATH_MAX
    if fits:
        data_dir.mkdir(mode=0o700)
        if _is_root():
            shutil.chown(data_dir, SYSTEM_USER, SYSTEM_USER)
        if _owner_can_use(data_dir):
            return data_dir, data_dir
        data_dir.rmdir()
    # pytest's base temp dir is 0700 root: the postgres user cannot traverse it, use /tmp.
    data_dir = Path(tempfile.mkdtemp(prefix="recovery-pg-"))
    if _is_root():
        shutil.chown(data_dir, SYSTEM_USER, SYSTEM_USER)
    return data_dir, data_dir


def _remember(data_dir: Path) -> Path | None:
    pid_dir = os.environ.get(PID_DIR_ENV)
    if not pid_dir:
        return None
    pid_file = data_dir / "postmaster.pid"
    try:
        pid = pid_file.read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        return None
    record = Path(pid_dir) / f"postgres-{pid}"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(f"{data_dir}\n{pid}\n")
    return record


_running_servers: dict[int, PostgresServer] = {}


@atexit.register
def _stop_forgotten_servers() -> None:
    for server in list(_running_servers.values()):
        with contextlib.suppress(Exception):
            server.stop()


def start_postgres(base_dir: Path, database: str = DEFAULT_DATABASE) -> PostgresServer:
    """Start a throwaway PostgreSQL on 127.0.0.1 (free port) with an empty ``database``.

    With ``RECOVERY_TEST_POSTGRES_URL`` set, create ``database`` on that server instead.
    Call ``stop()`` when done (an atexit hook stops forgotten servers of a normal exit).
    """
    external = os.environ.get(URL_ENV)
    if external:
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        name = f"{database}_{worker}" if worker else database  # xdist workers share the server
        url = create_database(external, name)
        return PostgresServer(url=url, port=make_url(url).port or 5432)

    bin_dir = find_postgres_bin()
    if bin_dir is None:
        raise PostgresError(
            "PostgreSQL not found under /usr/lib/postgresql/*/bin "
            "(run scripts/install-system-deps, or set RECOVERY_TEST_POSTGRES_URL)"
        )
    data_dir, remove_dir = _make_data_dir(base_dir)
    try:
        initdb = _run_pg(
            bin_dir / "initdb",
            "-D",
            data_dir,
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--no-locale",
            "--encoding=UTF8",
            "--no-sync",
            "--no-instructions",
        )
        if initdb.returncode != 0:
            raise PostgresError(f"initdb failed:\n{initdb.stdout}{initdb.stderr}")
        log_file = data_dir / "server.log"
        for _attempt in range(3):  # the free port can be taken before the postmaster binds it
            port = _free_port()
            options = " ".join(
                [
                    "-c listen_addresses=127.0.0.1",
                    f"-p {port}",
                    f"-k {shlex.quote(str(data_dir))}",
                    "-c fsync=off",
                    "-c synchronous_commit=off",
                    "-c full_page_writes=off",
                    "-c max_connections=200",
                    # Analyze a table within a second of it changing by a tenth (the default
                    # naptime is a minute): tests and benchmarks fill tables from empty within
                    # seconds, and the planner kept plans made for near-empty tables - a
                    # sequential scan of 1,600 charges per decision in the chaos replay.
                    "-c autovacuum_naptime=1",
                ]
            )
            started = _run_pg(
                bin_dir / "pg_ctl",
                "-D",
                data_dir,
                "-l",
                log_file,
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            )
            if started.returncode == 0:
                break
            log = log_file.read_text(errors="replace") if log_file.exists() else ""
            if "could not bind" not in log and "already in use" not in log:
                raise PostgresError(f"pg_ctl start failed:\n{started.stdout}{started.stderr}{log}")
        else:
            raise PostgresError(f"pg_ctl start failed 3 times (ports in use?):\n{log}")
        server = PostgresServer(
            url=postgres_url(database, port),
            port=port,
            data_dir=data_dir,
            bin_dir=bin_dir,
            _remove_dir=remove_dir,
            _registry_file=_remember(data_dir),
        )
        _running_servers[id(server)] = server
        create_database(server.url, database)
        return server
    except BaseException:
        # Leave nothing behind: a postmaster that came up (slow start, createdb failed, ^C).
        if (data_dir / "postmaster.pid").exists():
            _run_pg(bin_dir / "pg_ctl", "-D", data_dir, "-m", "immediate", "-w", "stop")
        for running in [s for s in _running_servers.values() if s.data_dir == data_dir]:
            _running_servers.pop(id(running), None)
            if running._registry_file is not None:
                running._registry_file.unlink(missing_ok=True)
        shutil.rmtree(remove_dir, ignore_errors=True)
        raise


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def skip_or_fail(reason: str) -> NoReturn:
    """``pytest.skip`` locally; ``pytest.fail`` in CI (env ``CI`` set), where nothing may skip."""
    import pytest

    if in_ci():
        pytest.fail(f"{reason} (CI is set: failing instead of skipping)", pytrace=False)
    pytest.skip(reason)


def postgres_or_skip(
    tmp_path_factory: pytest.TempPathFactory, database: str = DEFAULT_DATABASE
) -> PostgresServer:
    """For a session fixture: a started server (caller stops it), or skip (fail in CI).

    Example::

        @pytest.fixture(scope="session")
        def postgres(tmp_path_factory):
            server = postgres_or_skip(tmp_path_factory)
            yield server
            server.stop()
    """
    import pytest

    if not os.environ.get(URL_ENV) and find_postgres_bin() is None:
        skip_or_fail(
            "PostgreSQL binaries not found under /usr/lib/postgresql/*/bin: "
            "run scripts/install-system-deps or set RECOVERY_TEST_POSTGRES_URL"
        )
    try:
        return start_postgres(tmp_path_factory.mktemp("postgres"), database)
    except PostgresError as error:
        # Installed but not startable is a broken machine, not a missing optional part.
        pytest.fail(str(error), pytrace=False)


def stop_data_dir(data_dir: Path) -> None:
    """Stop the server of ``data_dir`` (if running) and delete the directory."""
    if not (data_dir / "PG_VERSION").is_file():
        raise PostgresError(f"not a PostgreSQL data directory: {data_dir}")
    bin_dir = find_postgres_bin()
    if bin_dir is not None and (data_dir / "postmaster.pid").exists():
        _run_pg(bin_dir / "pg_ctl", "-D", str(data_dir), "-m", "immediate", "-w", "stop")
    pid_dir = os.environ.get(PID_DIR_ENV)
    if pid_dir:
        for record in Path(pid_dir).glob("postgres-*"):
            if record.read_text().splitlines()[:1] == [str(data_dir)]:
                record.unlink(missing_ok=True)
    shutil.rmtree(data_dir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.postgres")
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="start a server; print its URL and data directory")
    start.add_argument("--base-dir", type=Path, required=True)
    start.add_argument("--database", default=DEFAULT_DATABASE)
    stop = commands.add_parser("stop", help="stop the server of a data directory and delete it")
    stop.add_argument("data_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            server = start_postgres(args.base_dir, args.database)
            _running_servers.pop(id(server), None)  # outlive this process
            print(server.url)
            print(server.data_dir or "")
        else:
            stop_data_dir(args.data_dir)
    except PostgresError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
