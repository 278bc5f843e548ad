"""Options more than one command takes, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Project YAML. Default: the built-in tweets demo."),
]
RedisOpt = Annotated[
    str, typer.Option(envvar="REDIS_URL", help="Redis holding the prediction log.")
]
