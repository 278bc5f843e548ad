"""The `slicewise` command line: one console script, subcommands from each package.

`slicewise.cli.training` holds train / evaluate / export / label / salience / commentary /
retrain, `slicewise.cli.monitoring` monitor / webhook / demo-traffic, and `slicewise.demo` the
`demo-run` orchestration behind `make run`. The commands import their heavy dependencies
inside, so `slicewise --help` stays fast.

Errors: every command runs under one handler (`Commands.invoke`): a `SlicewiseError` (bad
config, data, bundle, ...) prints `error: <message>` on stderr and exits with code 2; any other
exception is a bug and keeps its traceback. Bad option values (`--mode frozn`) are rejected by
the option's type before the command starts, also with exit code 2.
"""

from __future__ import annotations

from typing import Any

import click
import typer
from typer.core import TyperGroup

from slicewise.cli.monitoring import app as monitoring_app
from slicewise.cli.training import app as training_app
from slicewise.core.errors import SlicewiseError
from slicewise.demo import app as demo_app


class Commands(TyperGroup):
    """The command group: the one place that turns a `SlicewiseError` into exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the chosen subcommand; a `SlicewiseError` becomes `error: ...` and exit code 2."""
        try:
            return super().invoke(ctx)
        except SlicewiseError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    name="slicewise",
    cls=Commands,
    help="Slice-aware text classification: train, export, serve and monitor per slice.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
app.add_typer(training_app)
app.add_typer(monitoring_app)
app.add_typer(demo_app)


def main() -> None:
    """Console-script entry point."""
    app()
