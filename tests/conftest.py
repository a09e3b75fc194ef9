"""Shared fixtures: a migrated database on SQLite and on a real PostgreSQL, an app, a clock.

The schema is built by running the Alembic migrations (not create_all), once per session per
engine. Each test gets clean tables: SQLite copies a migrated template file, PostgreSQL
truncates every table after the test.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from recovery.adapters.clock import FrozenClock
from recovery.app import create_app
from recovery.config import Settings
from recovery.db import Base
from recovery.migrate import upgrade
from recovery.runtime import Runtime
from recovery.services.registry import build_runtime

IN_CI = bool(os.environ.get("CI"))
WEBHOOK_SECRET = "whsec_test_secret"
API_KEY = "test-api-key"
START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


DRILLS = Path(__file__).resolve().parent / "drills"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/drills is a drill: `make check` leaves drills out."""
    for item in items:
        if DRILLS in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.drill)


def skip_or_fail(reason: str) -> None:
    """Locally a missing binary skips with a reason; in CI it is a failure."""
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.support.postgres import postgres_or_skip

    server = postgres_or_skip(tmp_path_factory)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: Any) -> str:
    url: str = postgres_server.create_database("recovery_tests")
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


def _truncate_all(url: str) -> None:
    engine = create_engine(url)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A freshly migrated, empty database - each test runs once per engine."""
    if request.param == "sqlite":
        path = tmp_path / "recovery.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
    else:
        url: str = request.getfixturevalue("postgres_url")
        _truncate_all(url)
        yield url
        _truncate_all(url)


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    """SQLite only, for tests about behaviour that does not depend on the engine."""
    path = tmp_path / "recovery.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


def make_settings(database_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "env": "test",
        "instance_path": tmp_path,
        "database_url": database_url,
        "stripe_webhook_secrets": (WEBHOOK_SECRET,),
        "api_keys": (API_KEY,),
        "secret_key": "test-secret-key-" + "x" * 32,
        "public_url": "http://recovery.test",
        # Provider calls in the test's own thread, in order: the in-memory Stripe fake is not
        # thread-safe. The crash drill runs the default pool.
        "worker_threads": 1,
        "worker_loops": 1,  # likewise one claim/decide/record loop (tests/test_worker_loops.py)
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def fake_gateway(clock: FrozenClock) -> Any:
    from recovery.adapters.stripe_fake import FakeStripeGateway

    return FakeStripeGateway(clock=clock)


@pytest.fixture
def runtime(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any
) -> Iterator[Runtime]:
    rt = build_runtime(make_settings(database_url, tmp_path), clock=clock, gateway=fake_gateway)
    yield rt
    rt.db.dispose()


@pytest.fixture
def app(runtime: Runtime) -> Any:
    app = create_app(runtime=runtime)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()
