"""PostgreSQL: the cursor whose description builds its columns on first read (pg_cursor.py)
describes results exactly as psycopg's own, through SQLAlchemy and directly."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import text

from recovery.db import Database
from recovery.pg_cursor import DescribingCursor

pytestmark = pytest.mark.postgres


def _conninfo(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def test_a_description_read_lists_the_same_columns_as_psycopgs(postgres_url: str) -> None:
    query = "SELECT 1 AS one, 'two'::text AS two, '2026-12-05'::date AS three"
    with (
        psycopg.connect(_conninfo(postgres_url)) as plain,
        psycopg.connect(_conninfo(postgres_url), cursor_factory=DescribingCursor) as lazy,
    ):
        expected = plain.execute(query).description
        cursor = lazy.execute(query)
        described = cursor.description
        assert described is not None and expected is not None
        assert len(described) == 3
        assert [c.name for c in described] == ["one", "two", "three"]
        assert [c.type_code for c in described] == [c.type_code for c in expected]
        assert described[1].name == "two" and described[-1].name == "three"
        assert cursor.fetchone() == plain.execute(query).fetchone()
        assert lazy.execute("CREATE TEMP TABLE t (a int)").description is None


def test_a_description_read_after_the_cursor_moved_on_is_an_error(postgres_url: str) -> None:
    with psycopg.connect(_conninfo(postgres_url), cursor_factory=DescribingCursor) as conn:
        cursor = conn.cursor()
        first = cursor.execute("SELECT 1 AS a").description
        cursor.execute("SELECT 2 AS b")
        assert first is not None
        with pytest.raises(RuntimeError, match="moved on"):
            first[0]


def test_sqlalchemy_results_keep_their_column_names(postgres_url: str) -> None:
    db = Database(postgres_url)
    try:
        with db.transaction() as session:
            for _ in range(3):  # the first compiles and reads the columns; the rest reuse it
                result = session.execute(text("SELECT 7 AS seven, 'x' AS ex"))
                assert list(result.keys()) == ["seven", "ex"]
                assert result.one()._asdict() == {"seven": 7, "ex": "x"}
    finally:
        db.dispose()
