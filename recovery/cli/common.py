"""What every command needs: the runtime, built from the environment, or a clear error."""

from __future__ import annotations

import click

from recovery.config import ConfigError, Settings
from recovery.runtime import Runtime
from recovery.services.registry import build_runtime


def runtime_from_env() -> Runtime:
    try:
        return build_runtime(Settings.from_env())
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
