"""The user's journey on the real demo: shift the `negation` slice of the demo traffic, then time
how long until the drift alert fires, the retrain the webhook started ends, and the service
answers with the new model version. Writes bench/results/scenario.{json,md} with the outcome
and the per-slice gate table.

Real parts throughout: the demo bundle served by `bentoml serve`, the embedded Redis, the
monitor, Prometheus with the project's rules (every `for:` shortened to --alert-for in its copy),
Alertmanager with the project's routing, `slicewise webhook --run-retrains` running
`slicewise retrain` on the tweets config.

    make run            # once: trains and exports the demo bundle to .slicewise/bundle
    python bench/bench_scenario.py              # or --bundle DIR
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis
from common import ROOT, write

from slicewise.alerting import AlertingStack
from slicewise.core import contracts as c
from slicewise.core.redis_server import LocalRedis, free_port
from slicewise.processes import BentoServer, spawn_monitor

# The rules with action="retrain" (monitoring/prometheus/rules.yml).
RETRAIN_ALERTS = ("SliceDriftDetected", "SliceAccuracyDrop")


def wait_for(predicate, timeout: float, what: str, step: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(step)
    raise TimeoutError(f"no {what} after {timeout:.0f}s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--bundle",
        type=Path,
        default=ROOT / ".slicewise" / "bundle",
        help="the demo bundle to serve as production (default: what `make run` exported)",
    )
    ap.add_argument("--count", type=int, default=3000, help="shifted texts to send")
    ap.add_argument("--feedback-share", type=float, default=0.2)
    ap.add_argument("--alert-for", default="30s", help="`for:` of every rule in the copy")
    ap.add_argument("--monitor-interval", type=float, default=10.0)
    ap.add_argument("--timeout", type=float, default=3600.0)
    args = ap.parse_args()
    if not (args.bundle / "manifest.json").is_file():
        ap.error(f"no bundle at {args.bundle} (run `make run` once, or pass --bundle DIR)")

    work = Path(tempfile.mkdtemp(prefix="slicewise-scenario-"))
    bundle = Path(shutil.copytree(args.bundle, work / "bundle"))
    env = {"BENTOML_HOME": str(work / "bentoml"), "HF_HUB_OFFLINE": "1"}
    os.environ.update(env)
    rds = LocalRedis().start()
    service = BentoServer(
        {
            **env,
            "SLICEWISE_MODEL_DIR": str(bundle),
            "REDIS_URL": rds.url,
            "SLICEWISE_LOG_TEXT": "1",
            "SLICEWISE_HOTSWAP_INTERVAL": "2",
        },
        log_file=work / "service.log",
    ).start(timeout=600)
    monitor_port = free_port()
    monitor = spawn_monitor(
        bundle,
        rds.url,
        monitor_port,
        work / "monitor.log",
        interval=args.monitor_interval,
        window_size=2000,
        report_dir=work / "reports",
        env=env,
    )
    alerting = AlertingStack(
        work / "alerting",
        service=f"127.0.0.1:{service.port}",
        monitor=f"127.0.0.1:{monitor_port}",
        redis_url=rds.url,
        production=bundle,
        alert_for=args.alert_for,
        interval="5s",
        group_wait="5s",
        group_interval="30s",
        env=env,
    ).start()
    client = redis.Redis.from_url(rds.url)
    production = c.Bundle.load(bundle).manifest.version
    result: dict = {"settings": vars(args) | {"bundle": str(args.bundle)}, "production": production}
    try:
        t0 = time.monotonic()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "slicewise.cli",
                "demo-traffic",
                "--url",
                service.url,
                "--count",
                str(args.count),
                "--shift-slice",
                "negation",
                "--shift",
                "0.9",
                "--feedback-share",
                str(args.feedback_share),
            ],
            check=True,
            cwd=ROOT,
        )
        result["traffic_sent_s"] = time.monotonic() - t0

        # With exact membership a one-slice shift is a traffic shift (the other slices' drift is
        # explained by it), and with feedback on it the accuracy drop may be the first alert
        # that asks for a retrain: wait for whichever fires first.
        def retrain_alerts() -> list[str]:
            return sorted(f"{n}:{s}" for n in RETRAIN_ALERTS for s in alerting.firing(n))

        wait_for(retrain_alerts, args.timeout, "retrain alert")
        result["alert_fired_s"] = time.monotonic() - t0
        result["alerting_slices"] = retrain_alerts()
        raw = wait_for(lambda: client.lrange(c.RETRAIN_RUNS_KEY, 0, 0), args.timeout, "retrain")
        run = json.loads(raw[0])
        result["retrain_done_s"] = time.monotonic() - t0
        result["run"] = {
            k: run[k]
            for k in ("outcome", "candidate_version", "decision", "data", "error", "reason")
        }
        result["gate"] = {
            name: {
                "production": run["production_metrics"].get(name, {}).get("macro_f1"),
                "candidate": run["candidate_metrics"].get(name, {}).get("macro_f1"),
                "delta": delta,
            }
            for name, delta in run["decision"].get("deltas", {}).items()
        }
        if run["outcome"] == "promoted":

            def served() -> bool:
                r = httpx.post(service.url + "/predict", json={"texts": ["ok"]}, timeout=30)
                return r.json()["model_version"] == run["candidate_version"]

            wait_for(served, 300, "the new version served")
            result["new_version_served_s"] = time.monotonic() - t0
    finally:
        alerting.stop()
        monitor.terminate()
        monitor.wait(timeout=30)
        service.stop()
        rds.stop()

    rows = "\n".join(
        f"| {name} | {g['production']:.4f} | {g['candidate']:.4f} | {g['delta']:+.4f} |"
        for name, g in result.get("gate", {}).items()
    )
    times = " → ".join(
        f"{label} {result[key]:.0f} s"
        for key, label in [
            ("alert_fired_s", "alert firing"),
            ("retrain_done_s", "retrain done"),
            ("new_version_served_s", "new version served"),
        ]
        if key in result
    )
    md = (
        f"Scenario on the demo ({args.count} texts, 90% from `negation`, {args.feedback_share:.0%} "
        f"with feedback; rules' `for:` {args.alert_for} in Prometheus' copy, monitor every "
        f"{args.monitor_interval:.0f} s): from the start of the shift, {times}. Alerting slices: "
        f"{', '.join(result.get('alerting_slices', []))}. Outcome: **{result.get('run', {}).get('outcome')}** "
        f"({'; '.join(result.get('run', {}).get('decision', {}).get('reasons', []))}); data "
        f"{result.get('run', {}).get('data')}.\n\n"
        "| gate: macro-F1 | production | candidate | Δ |\n|---|---|---|---|\n" + rows
    )
    write("scenario", result, md)


if __name__ == "__main__":
    main()
