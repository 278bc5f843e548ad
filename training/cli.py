"""`slicewise` subcommands implemented by the training package.

Each command only parses options and calls an importable function; torch is imported inside.
"""

from __future__ import annotations

import typer

app = typer.Typer()
