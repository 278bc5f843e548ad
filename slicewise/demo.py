"""`slicewise demo-run` (what `make run` does): train + export the demo model if there is no
bundle yet, then start Redis, the service on :3000 and the drift monitor on :9101.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from slicewise.core.redis_server import LocalRedis, RedisServerError
from slicewise.processes import BentoServer

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
) -> None:
    """Train (if needed), then serve and monitor the demo model until Ctrl-C.

    Example: `slicewise demo-run --port 3000`, then `slicewise demo-traffic --shift-slice negation`.
    """
    ensure_bundle(bundle, config)
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
    monitor = None
    try:
        typer.echo("starting the service (log: .slicewise/service.log) ...")
        server.start()
        monitor = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "slicewise.cli",
                "monitor",
                "--bundle",
                str(bundle),
                "--redis-url",
                redis_srv.url,
                "--interval",
                "30",
                "--port",
                str(monitor_port),
            ]
        )
        typer.echo(
            f"\nslicewise is serving on http://127.0.0.1:{port} (Redis {redis_srv.url}, "
            f"monitor metrics on :{monitor_port}/metrics). Try:\n\n{CURL.format(port=port)}\n\n"
            f"Replay traffic with a shift: slicewise demo-traffic --shift-slice negation\n"
            "Ctrl-C stops everything."
        )
        while server.proc is not None and server.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        if monitor is not None:
            monitor.terminate()
        server.stop()
        redis_srv.stop()
