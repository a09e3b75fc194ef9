"""The migrations build exactly the schema the models describe, on both engines: what
`alembic check` says in CI, caught by the suite too (a model column without its migration, or a
migration's index the comparison would want dropped)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

import recovery.models  # noqa: F401 - registers every table
from recovery.db import Base
from recovery.migrate import include_object


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "include_object": include_object}
            )
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == []
