"""`slicewise` subcommands of the monitoring package: monitor, webhook, demo-traffic.

Errors: `slicewise.cli.Commands` (exit code 2, one line).
"""

from __future__ import annotations

import enum
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from slicewise.cli.options import ConfigOpt, RedisOpt

app = typer.Typer()


class Launcher(enum.StrEnum):
    """Where the webhook's worker runs a queued retrain."""

    local = "local"
    kubernetes = "kubernetes"


@app.command()
def monitor(
    config: ConfigOpt = None,
    redis_url: RedisOpt = "redis://127.0.0.1:6379/0",
    bundle: Annotated[
        Path | None, typer.Option(help="Bundle folder with reference.parquet.")
    ] = None,
    tag: Annotated[
        str, typer.Option(help="Model-store tag when --bundle is not given.")
    ] = "slicewise-classifier:latest",
    window_size: Annotated[
        int | None, typer.Option(help="Last N predictions [config: monitor.window_size].")
    ] = None,
    window_minutes: Annotated[
        float | None,
        typer.Option(help="Or: predictions of the last T minutes [monitor.window_minutes]."),
    ] = None,
    min_rows: Annotated[
        int | None,
        typer.Option(help="Fewer rows in a slice = insufficient data [monitor.min_rows]."),
    ] = None,
    drift_share: Annotated[
        float | None,
        typer.Option(
            help="Share of drifted columns that marks a slice drifted [monitor.drift_share]."
        ),
    ] = None,
    interval: Annotated[
        float | None, typer.Option(help="Seconds between passes [monitor.interval_seconds].")
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="One pass, print the summary, exit.")
    ] = False,
    port: Annotated[
        int | None, typer.Option(help="Serve /metrics on this port, 0 = do not [monitor.port].")
    ] = None,
    report_dir: Annotated[
        Path | None,
        typer.Option(help="Folder for each pass's JSON + Evidently HTML [monitor.report_dir]."),
    ] = None,
) -> None:
    """Per-slice drift and accuracy of the logged predictions against the reference profile.

    Settings come from the config's `monitor` section; an option given here overrides it
    (validated by the same rules). Example:
    `slicewise monitor --bundle .slicewise/bundle --interval 30` (serves :9101/metrics).
    """
    import json

    from monitoring.monitor import start_monitor
    from training.config import load_config, override

    settings = override(
        load_config(config).monitor,
        "command line",
        window_size=window_size,
        window_minutes=window_minutes,
        min_rows=min_rows,
        drift_share=drift_share,
        interval_seconds=interval,
        port=port,
        report_dir=report_dir,
    )
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    mon = start_monitor(settings, redis_url, str(bundle) if bundle else None, tag)
    if not once:
        mon.run_forever()
        return
    summary = mon.run_once()
    keys = (
        "window_rows",
        "drifted_slices",
        "traffic_shifted_slices",
        "explained_drift",
        "explained_traffic_shift",
        "learned_membership_slices",
        "insufficient_data",
        "accuracy",
        "estimated_accuracy",
    )
    typer.echo(json.dumps({k: summary[k] for k in keys}, indent=2))


@app.command()
def webhook(
    redis_url: RedisOpt = "redis://127.0.0.1:6379/0",
    token: Annotated[
        str | None,
        typer.Option(envvar="SLICEWISE_WEBHOOK_TOKEN", help="Bearer token Alertmanager sends."),
    ] = None,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 9102,
    dedup_ttl: Annotated[int, typer.Option(help="Seconds a groupKey stays deduplicated.")] = 3600,
    run_retrains: Annotated[
        bool, typer.Option(help="Run queued retrains here (else a Job does).")
    ] = False,
    config: Annotated[
        Path | None, typer.Option(help="Project config for the retrains this process runs.")
    ] = None,
    production: Annotated[
        Path | None,
        typer.Option(help="Production bundle folder for those retrains when Redis names none."),
    ] = None,
    report_dir: Annotated[
        Path | None, typer.Option(help="Where those retrains write their run reports.")
    ] = None,
    launcher: Annotated[
        Launcher,
        typer.Option(
            help="local: run `slicewise retrain` here; kubernetes: create a Job from the "
            "slicewise-retrain CronJob through the API (in-cluster service account)."
        ),
    ] = Launcher.local,
) -> None:
    """Receive Alertmanager webhooks; queue (and optionally run) retraining.

    Example: `SLICEWISE_WEBHOOK_TOKEN=s3cret slicewise webhook --run-retrains --port 9102`.
    """
    from monitoring.webhook import serve_webhook

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    serve_webhook(
        redis_url=redis_url,
        token=token,
        host=host,
        port=port,
        dedup_ttl=dedup_ttl,
        run_retrains=run_retrains,
        kubernetes=launcher is Launcher.kubernetes,
        config=str(config) if config else None,
        production=str(production) if production else None,
        report_dir=str(report_dir) if report_dir else None,
    )


@app.command("demo-traffic")
def demo_traffic(
    url: Annotated[str, typer.Option(help="Base URL of the service.")] = "http://127.0.0.1:3000",
    config: Annotated[
        Path | None,
        typer.Option(help="Project config whose reference split is replayed (default: demo)."),
    ] = None,
    count: Annotated[int, typer.Option(help="Texts to send.")] = 2000,
    shift_slice: Annotated[
        str | None, typer.Option(help="Over-sample the members of this slice.")
    ] = None,
    shift: Annotated[float, typer.Option(help="Share of traffic drawn from --shift-slice.")] = 0.8,
    feedback_share: Annotated[
        float, typer.Option(help="Share of predictions that get a true label as feedback.")
    ] = 0.0,
    concurrency: Annotated[int, typer.Option(help="Concurrent requests.")] = 8,
    batch: Annotated[int, typer.Option(help="Texts per request.")] = 4,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
) -> None:
    """Replay held-out data against the service, optionally shifted into one slice.

    Example: `slicewise demo-traffic --count 3000 --shift-slice negation --shift 0.9`.
    """
    from slicewise.demo import replay_reference_split
    from training.config import load_config

    res = replay_reference_split(
        load_config(config),
        url=url,
        count=count,
        shift_slice=shift_slice,
        shift=shift,
        feedback_share=feedback_share,
        concurrency=concurrency,
        batch=batch,
        seed=seed,
    )
    typer.echo(
        f"sent {res.sent} texts in {res.seconds:.1f}s: {res.ok} ok, {res.failed} failed, {res.feedback} feedback"
    )
    if res.failed:
        sys.exit(1)
