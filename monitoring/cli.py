"""`slicewise` subcommands implemented by the monitoring package (monitor, webhook, demo-traffic)."""

from __future__ import annotations

import typer

app = typer.Typer()
