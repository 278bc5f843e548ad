"""The README demo as written, on the demo bundle: what the next monitor pass reports.

Real parts: the bundle served by `bentoml serve` (rules evaluated in the service), the embedded
Redis holding the prediction log, `slicewise demo-traffic`'s replay (`replay_reference_split`), and one
`Monitor.run_once` pass with the config's `monitor` settings (window 5000) and its Prometheus
gauges. Two replays, one pass after each:

1. control: `demo-traffic --count 6000` (the reference split's own mix): nothing should be flagged;
2. the README demo: `demo-traffic --count 6000 --shift-slice negation --shift 0.9`: `negation`
   should be flagged (drift or traffic shift) and no other user slice; slices whose share or
   drift moved only with negation's are reported as explained by it.

Run: .venv/bin/python bench/bench_demo_shift.py [--bundle .slicewise/bundle]
-> bench/results/demo_shift.{json,md}
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import redis
from common import ROOT, write
from prometheus_client import generate_latest

from monitoring.exporter import MonitorMetrics
from monitoring.monitor import Monitor
from slicewise.core import contracts as c
from slicewise.core.redis_server import LocalRedis
from slicewise.demo import replay_reference_split
from slicewise.processes import BentoServer
from training.config import load_config

parser = argparse.ArgumentParser()
parser.add_argument("--bundle", default=str(ROOT / ".slicewise" / "bundle"))
parser.add_argument("--count", type=int, default=6000)
parser.add_argument("--shift", type=float, default=0.9)
parser.add_argument("--shift-slice", default="negation")
args = parser.parse_args()

cfg = load_config()
bundle = c.Bundle.load(args.bundle)
settings = cfg.monitor.model_copy(update={"report_dir": None})


def verdict(s: dict[str, Any]) -> str:
    """One slice's outcome in words."""
    parts = []
    if s["traffic_shifted"]:
        parts.append("traffic-shifted")
    elif s["traffic_explained_by"]:
        parts.append("share moved with " + ", ".join(s["traffic_explained_by"]))
    if s["drift_detected"]:
        parts.append("drifted")
    elif s["explained_by"]:
        parts.append("drift explained by " + ", ".join(s["explained_by"]))
    return "; ".join(parts) or "-"


def table(summary: dict[str, Any]) -> str:
    lines = [
        "| slice | membership | share ref → window | own columns drifted | verdict |",
        "|---|---|---|---:|---|",
    ]
    for s in summary["slices"]:
        lines.append(
            f"| {s['slice']} | {summary['membership'].get(s['slice'], '-')} | "
            f"{s['reference_share']:.2f} → {s['current_share']:.2f} | "
            f"{s['drifted_columns_share']:.0%} | {verdict(s)} |"
        )
    return "\n".join(lines)


KEYS = (
    "window_rows",
    "drifted_slices",
    "traffic_shifted_slices",
    "explained_drift",
    "explained_traffic_shift",
)
rds = LocalRedis().start()
server = BentoServer(
    {"SLICEWISE_MODEL_DIR": str(bundle.path), "REDIS_URL": rds.url},
    log_file=ROOT / ".slicewise" / "bench_demo_shift.log",
).start()
passes: dict[str, dict[str, Any]] = {}
try:
    client = redis.Redis.from_url(rds.url)
    metrics = MonitorMetrics()
    monitor = Monitor(bundle, client, settings, metrics)
    for name, shift_slice in (("control", None), ("shifted", args.shift_slice)):
        t0 = time.perf_counter()
        sent = replay_reference_split(
            cfg, url=server.url, count=args.count, shift_slice=shift_slice, shift=args.shift
        )
        replay_s = time.perf_counter() - t0
        summary = monitor.run_once()
        gauges = [
            line
            for line in generate_latest(metrics.registry).decode().splitlines()
            if line.startswith(c.MetricNames.SLICE_TRAFFIC_SHIFT_EXPLAINED + "{")
        ]
        passes[name] = {
            **{k: summary[k] for k in KEYS},
            "membership": summary.get("membership", {}),
            "slices": [{k: v for k, v in s.items() if k != "columns"} for s in summary["slices"]],
            "replay": {"sent": sent.sent, "ok": sent.ok, "seconds": replay_s},
            "explained_gauges": gauges,
        }
finally:
    server.stop()
    rds.stop()

user = bundle.manifest.slice_names
shifted = passes["shifted"]
flagged = sorted(set(shifted["drifted_slices"] + shifted["traffic_shifted_slices"]) & set(user))
ok = flagged == [args.shift_slice] and not (
    set(passes["control"]["drifted_slices"] + passes["control"]["traffic_shifted_slices"])
    & set(user)
)
gauges = ", ".join(
    g.split('slice="')[1].replace('"} ', " = ").replace(".0", "")
    for g in shifted["explained_gauges"]
)
md = f"""The README demo on bundle {bundle.manifest.version} ({
    bundle.manifest.model_kind
}): `bentoml
serve` with the embedded Redis, `demo-traffic --count {args.count}` (control), one monitor pass,
then `demo-traffic --count {args.count} --shift-slice {args.shift_slice} --shift {args.shift}`, one
monitor pass (config `monitor` settings: window {settings.window_size}, min_rows
{settings.min_rows}, drift share {settings.drift_share}).

**Control** (the reference split's own mix): drifted {passes["control"]["drifted_slices"]},
traffic-shifted {passes["control"]["traffic_shifted_slices"]}.

{table(passes["control"])}

**Shifted** ({args.shift:.0%} of the texts drawn from `{args.shift_slice}`): drifted
{shifted["drifted_slices"]}, traffic-shifted {shifted["traffic_shifted_slices"]}, share moved only
with another slice's {shifted["explained_traffic_shift"]}, drift explained
{shifted["explained_drift"]}.

{table(shifted)}

User slices flagged (drift or traffic shift) after the shift: {flagged}; must-show (only
`{args.shift_slice}`, nothing in the control pass): **{"met" if ok else "NOT met"}**.
`slicewise_slice_traffic_shift_explained` after the pass: {gauges} (SliceTrafficShift skips the
slices at 1).
"""
write("demo_shift", {"bundle_version": bundle.manifest.version, "passes": passes, "met": ok}, md)
