"""Where the files the service reads at run time are: the templates and the Alembic migrations.

The repository keeps `templates/` and `migrations/` at its top level (the agreed layout); an
installed wheel carries them inside the package (setup.py maps them there). Look inside the
package first, then beside it, so a checkout and an installation both work.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def _shipped(name: str) -> Path:
    inside = PACKAGE / name
    return inside if inside.is_dir() else PACKAGE.parent / name


TEMPLATES = _shipped("templates")
MIGRATIONS = _shipped("migrations")
