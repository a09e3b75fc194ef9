"""Run the Alembic migrations from code (CLI, tests, the demo)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from recovery.resources import MIGRATIONS


def alembic_config(database_url: str) -> Config:
    """The same configuration as alembic.ini (which stays in the repository for the `alembic`
    command), built in code so an installed package needs no ini file."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["database_url"] = database_url
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)  # the instance folder
    command.upgrade(alembic_config(database_url), revision)
