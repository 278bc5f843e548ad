"""`slicewise demo-run` (what `make run` does): train + export the demo model if there is no
bundle yet, then start Redis, the service on :3000, the drift monitor on :9101 and, when they are
installed, Prometheus (:9090), Alertmanager (:9093) and the retrain webhook (:9102), so an alert
on a slice leads to a retrain and, if the gate allows, a hot swap.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from slicewise.alerting import INSTALL_LINE, AlertingError, AlertingStack, missing_binaries
from slicewise.core.redis_server import LocalRedis, RedisServerError
from slicewise.processes import BentoServer, spawn_monitor

app = typer.Typer()

CURL = """curl -s -X POST http://127.0.0.1:{port}/predict -H 'Content-Type: application/json' \\
     -d '{{"texts": ["I would not fly with them again.", "Is my flight delayed?"]}}'"""


def ensure_bundle(bundle_dir: Path, config: Path | None) -> Path:
    """Train and export the demo model unless `bundle_dir` already holds a bundle."""
    from slicewise.core.contracts import Bundle, BundleError

    try:
        Bundle.load(bundle_dir)
        typer.echo(f"using the existing bundle {bundle_dir} (delete it to retrain)")
        return bundle_dir
    except BundleError:
        pass
    from training.config import load_config
    from training.export import train_and_export

    cfg = load_config(config)
    typer.echo(
        f"no bundle at {bundle_dir}: training the {cfg.name} demo ({cfg.train.mode} {cfg.backbone.name})"
    )
    train_and_export(cfg, out_dir=bundle_dir)
    return bundle_dir


@app.command("demo-run")
def demo_run(
    config: Annotated[
        Path | None, typer.Option(help="Project YAML (default: the tweets demo).")
    ] = None,
    bundle: Annotated[
        Path, typer.Option(help="Bundle folder to serve (trained when missing).")
    ] = Path(".slicewise/bundle"),
    port: Annotated[int, typer.Option(help="Service port.")] = 3000,
    monitor_port: Annotated[int, typer.Option(help="Monitor /metrics port.")] = 9101,
    redis_port: Annotated[int, typer.Option(help="Port of the local redis-server.")] = 6379,
    prometheus_port: Annotated[int, typer.Option(help="Prometheus port.")] = 9090,
    alertmanager_port: Annotated[int, typer.Option(help="Alertmanager port.")] = 9093,
    webhook_port: Annotated[int, typer.Option(help="Retrain webhook port.")] = 9102,
    alert_for: Annotated[
        str | None,
        typer.Option(
            help="Demo only: every alert rule's `for:` in Prometheus' copy of the rules "
            "(e.g. 30s, so a drift alert fires within a minute); the shipped rules keep theirs."
        ),
    ] = None,
) -> None:
    """Train (if needed), then serve and monitor the demo model until Ctrl-C.

    Example: `slicewise demo-run --port 3000`, then `slicewise demo-traffic --shift-slice negation`.
    """
    ensure_bundle(bundle, config)
    Path(".slicewise").mkdir(exist_ok=True)  # logs
    # `kill` (SIGTERM) stops everything like Ctrl-C does: the service runs in its own session and
    # would outlive this process otherwise
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        redis_srv = LocalRedis(port=redis_port).start()
    except RedisServerError:
        redis_srv = LocalRedis().start()  # 6379 taken: any free port
    server = BentoServer(
        {
            "SLICEWISE_MODEL_DIR": str(bundle.resolve()),
            "REDIS_URL": redis_srv.url,
            "SLICEWISE_LOG_TEXT": "1",
        },
        port=port,
        log_file=Path(".slicewise/service.log"),
    )
    monitor, alerting = None, None
    try:
        typer.echo("starting the service (log: .slicewise/service.log) ...")
        server.start()
        monitor = spawn_monitor(
            bundle.resolve(),
            redis_srv.url,
            monitor_port,
            Path(".slicewise/monitor.log"),
            interval=30,
        )
        watch = ""
        if missing := missing_binaries():
            watch = (
                f"\nskipping Prometheus, Alertmanager and the retrain webhook: "
                f"{', '.join(missing)} not installed ({INSTALL_LINE})\n"
            )
        else:
            stack = AlertingStack(
                Path(".slicewise/alerting"),
                service=f"127.0.0.1:{port}",
                monitor=f"127.0.0.1:{monitor_port}",
                redis_url=redis_srv.url,
                config=config,
                production=bundle,
                report_dir=Path(".slicewise/reports"),
                alert_for=alert_for,
                ports={
                    "prometheus": prometheus_port,
                    "alertmanager": alertmanager_port,
                    "webhook": webhook_port,
                },
            )
            try:
                alerting = stack.start()
                watch = (
                    f"\nalerts: {alerting.prometheus_url}/alerts (Prometheus), "
                    f"{alerting.alertmanager_url} (Alertmanager); retrains: .slicewise/alerting/"
                    "webhook.log and .slicewise/reports/retrain-*.json\n"
                )
            except AlertingError as exc:  # a port taken, say: serving goes on without alerting
                watch = f"\nnot alerting: {exc}\n"
        typer.echo(
            f"\nslicewise is serving on http://127.0.0.1:{port} (Redis {redis_srv.url}, "
            f"monitor metrics on :{monitor_port}/metrics, log .slicewise/monitor.log). "
            f"Try:\n\n{CURL.format(port=port)}\n"
            f"{watch}\n"
            "Replay traffic with a shift: slicewise demo-traffic --shift-slice negation\n"
            "Ctrl-C stops everything."
        )
        while server.proc is not None and server.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        if alerting is not None:
            alerting.stop()
        if monitor is not None:
            os.killpg(monitor.pid, signal.SIGTERM)
            monitor.wait(timeout=10)
        server.stop()
        redis_srv.stop()


def replay_reference_split(
    cfg: Any,
    *,
    url: str,
    count: int,
    shift_slice: str | None = None,
    shift: float = 0.8,
    feedback_share: float = 0.0,
    concurrency: int = 8,
    batch: int = 4,
    seed: int = 0,
) -> Any:
    """`slicewise demo-traffic`: replay the config's reference split against the service.

    The reference split is held out from training and is not what the promotion gate judges
    (the test split) or what picks thresholds (validation), so feedback on the replayed texts
    can train a retrained candidate without inflating its gate scores; unshifted, the replay
    follows the monitor's reference profile.

    Args:
        cfg: project config (`training.config.ProjectConfig`) whose reference split is replayed.
        url: base URL of the service.
        count: texts to send.
        shift_slice: over-sample the members of this slice (None: the split's own mix).
        shift: share of the traffic drawn from `shift_slice`.
        feedback_share: share of predictions that get their true label as feedback.
        concurrency: concurrent requests.
        batch: texts per request.
        seed: sampling seed.

    Returns:
        The replay's counts (`monitoring.demo_traffic.ReplayResult`: sent, ok, failed, ...).

    Raises:
        SliceError: `shift_slice` is not a slice of the config.
    """
    import asyncio
    import os
    import random

    from tqdm.auto import tqdm

    from monitoring.demo_traffic import replay, shifted_sample
    from training.data import load_dataset, split_dataset
    from training.slices import SliceError, slice_membership

    held_out = split_dataset(load_dataset(cfg), cfg.dataset.split).reference
    texts = held_out["text"].tolist()
    truth = dict(zip(held_out["text"], held_out["label"], strict=False))
    in_slice = [False] * len(texts)
    if shift_slice:
        if shift_slice not in cfg.slice_names:
            raise SliceError(f"unknown slice {shift_slice!r}; slices: {cfg.slice_names}")
        in_slice = slice_membership(texts, cfg)[:, cfg.slice_names.index(shift_slice)].tolist()
    sample = shifted_sample(texts, in_slice, count, shift if shift_slice else 0.0, seed)
    rng = random.Random(seed)
    give = (
        (lambda t: truth.get(t) if rng.random() < feedback_share else None)
        if feedback_share
        else None
    )
    with tqdm(total=count, desc="demo traffic", unit="text") as bar:
        return asyncio.run(
            replay(
                url,
                sample,
                batch,
                concurrency,
                token=os.environ.get("SLICEWISE_API_TOKEN"),
                feedback=give,
                progress=bar.update,
            )
        )
