"""The `slicewise` command line: one console script, subcommands from each package.

`training.cli` contributes train / evaluate / export / label / salience / commentary / retrain,
`monitoring.cli` contributes monitor / webhook / demo-traffic, and `slicewise.demo` the
`demo-run` orchestration behind `make run`. Sub-apps import their heavy dependencies inside
the commands, so `slicewise --help` stays fast.
"""

from __future__ import annotations

import typer

from monitoring.cli import app as monitoring_app
from slicewise.demo import app as demo_app
from training.cli import app as training_app

app = typer.Typer(
    name="slicewise",
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


if __name__ == "__main__":
    main()
