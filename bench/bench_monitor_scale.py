"""One monitor pass at scale (issue 19): 100k → 1M logged predictions × the demo's 6 slices +
`all`, read from a real Redis stream, cost per phase (read + parse, drift per slice with
attribution, feedback and estimated accuracy). Target: ≤ 5 s at 1M.

The log holds records drawn from the demo bundle's reference profile (bootstrap), with a shift
injected into the `question` slice (its rows drawn only from predicted-negative ones), and 2%
of them with feedback. The Evidently HTML report is not part of the pass timed here (it is
written from a sample of the window: see monitoring/monitor.py).

Run: .venv/bin/python bench/bench_monitor_scale.py [--bundle DIR] -> bench/results/monitor_scale.{json,md}
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import redis
from common import ROOT, write

from monitoring.accuracy import estimated_accuracy, feedback_accuracy
from monitoring.drift import slice_drift, slice_masks
from monitoring.monitor import Monitor
from monitoring.window import read_feedback, read_window
from slicewise.core import contracts as c
from slicewise.core.redis_server import LocalRedis
from slicewise.core.settings import MonitorConfig

parser = argparse.ArgumentParser()
parser.add_argument("--bundle", type=Path, default=None)
parser.add_argument("--sizes", default="100000,300000,1000000")
parser.add_argument("--shifted-slice", default="question")
args = parser.parse_args()


def find_bundle() -> Path:
    if args.bundle:
        return args.bundle
    local = ROOT / ".slicewise" / "bundle"
    if local.exists():
        return local
    shared = sorted(Path("/work/cache").glob("demo-bundle-*"))
    return shared[-1] if shared else synthetic_bundle()


def synthetic_bundle() -> Path:
    """No demo bundle here: a stand-in with the demo's labels, slices and reference texts, the
    slice scores from the slice rules (0.9 in, 0.1 out, plus noise) and Dirichlet class
    probabilities. Enough for the cost of a pass (no model file is read)."""
    import tempfile

    import pandas as pd

    from training.config import load_config
    from training.slices import slice_membership
    from training.train import prepare_data

    cfg = load_config()
    refsplit = prepare_data(cfg, progress=False, embed=False).splits["reference"]
    texts = refsplit.texts
    rng = np.random.default_rng(1)
    probs = rng.dirichlet([2, 1, 2], len(texts))
    member = slice_membership(texts, cfg)
    cols = {c.prob_column(lab): probs[:, i] for i, lab in enumerate(cfg.labels)}
    cols[c.PREDICTED_LABEL_COLUMN] = [cfg.labels[i] for i in probs.argmax(1)]
    cols[c.CONFIDENCE_COLUMN] = probs.max(1)
    for j, name in enumerate(cfg.slice_names):
        cols[c.slice_score_column(name)] = np.clip(
            0.1 + 0.8 * member[:, j] + rng.normal(0, 0.05, len(texts)), 0, 1
        )
        cols[c.slice_fn_column(name)] = member[:, j].astype(np.int8)
    cols[c.TEXT_LENGTH_COLUMN] = np.array([len(t) for t in texts], dtype=np.int64)
    cols[c.TRUE_LABEL_COLUMN] = [cfg.labels[i] for i in refsplit.labels]
    folder = Path(tempfile.mkdtemp(prefix="slicewise-synthetic-bundle-"))
    pd.DataFrame(cols).to_parquet(folder / c.REFERENCE_PARQUET, index=False)
    (folder / c.MODEL_ONNX).write_bytes(b"")
    (folder / c.TOKENIZER_DIR).mkdir()
    manifest = c.Manifest(
        version=c.new_version(),
        created_at=c.utc_now_iso(),
        labels=cfg.labels,
        slices=[c.SliceInfo(name=s.name, monitored=s.monitored) for s in cfg.slices],
        max_length=cfg.backbone.max_length,
        backbone="synthetic stand-in (no model)",
    )
    (folder / c.MANIFEST_JSON).write_text(manifest.model_dump_json())
    return folder


bundle = c.Bundle.load(find_bundle())
m = bundle.manifest
ref = bundle.reference()
sizes = [int(s) for s in args.sizes.split(",")]
rng = np.random.default_rng(0)
shift = slice_masks(ref, m)[args.shifted_slice]
negative = (ref[c.PREDICTED_LABEL_COLUMN] == m.labels[0]).to_numpy()
pool_rows = np.flatnonzero(~shift | negative)  # the shifted slice keeps only negative rows


def fields_of(i: int, n: int) -> dict[str, str]:
    row = ref.iloc[i]
    return c.PredictionRecord(
        model_version=m.version,
        label=row[c.PREDICTED_LABEL_COLUMN],
        confidence=float(row[c.CONFIDENCE_COLUMN]),
        probabilities={lab: float(row[c.prob_column(lab)]) for lab in m.labels},
        slices={s: float(row[c.slice_score_column(s)]) for s in m.slice_names},
        text_length=int(row[c.TEXT_LENGTH_COLUMN]),
        id=f"p{n}",
    ).to_fields()


templates = [fields_of(int(i), 0) for i in range(len(ref))]


def cpu_now() -> tuple[float, float]:
    """(wall, CPU of this process + the Redis server): CPU seconds do not grow with the load
    other users put on this shared machine, wall seconds do."""
    info = client.info("cpu")
    return time.perf_counter(), time.process_time() + info["used_cpu_user"] + info["used_cpu_sys"]


def since(start: tuple[float, float]) -> tuple[float, float]:
    now = cpu_now()
    return now[0] - start[0], now[1] - start[1]


def report() -> None:
    """Write what has been measured so far (each size adds a row)."""
    names = list(results[0]["phases"])
    md = "\n".join(
        [
            f"| rows in the window ({len(m.slice_names)} slices + all) | "
            + " | ".join(names)
            + " | **whole pass (`Monitor.run_once`)** | drifted |",
            "|---:|" + "---:|" * (len(names) + 1) + "---|",
            *(
                f"| {r['rows']:,} | "
                + " | ".join(f"{r['cpu_seconds'][k]:.2f} ({r['phases'][k]:.1f})" for k in names)
                + f" | **{r['run_once_cpu_seconds']:.2f}** ({r['run_once_seconds']:.1f}) | {', '.join(r['drifted']) or '—'} |"
                for r in results
            ),
            "",
            "CPU seconds of the monitor process plus the Redis server (wall seconds in brackets: this machine was shared by several heavy jobs, so wall time mostly measures waiting for a core). One pass each, real Redis.",
            f" Shift injected into `{args.shifted_slice}`.",
        ]
    )
    md += f" Bundle: {bundle.manifest.backbone if 'synthetic' in bundle.manifest.backbone else bundle.path}."
    write("monitor_scale", {"bundle": str(bundle.path), "results": results}, md)


rds = LocalRedis().start()
client = redis.Redis.from_url(rds.url)
results = []
written = 0
try:
    for size in sizes:
        pipe = client.pipeline(transaction=False)
        for n in range(written, size):
            f = dict(templates[int(pool_rows[rng.integers(len(pool_rows))])])
            f["id"], f["ts"] = f"p{n}", repr(time.time())
            pipe.xadd(c.PREDICTIONS_STREAM, f)
            if n % 50 == 0:
                pipe.xadd(c.FEEDBACK_STREAM, {"id": f"p{n}", "label": f["label"]})
            if len(pipe) >= 5000:
                pipe.execute()
        pipe.execute()
        written = size
        settings = MonitorConfig(window_size=size, report_dir=None)
        monitor = Monitor(bundle, client, settings)
        phases, cpu = {}, {}
        clock = cpu_now()
        current = read_window(client, m, size)
        phases["read + parse window"], cpu["read + parse window"] = since(clock)
        clock = cpu_now()
        drift = slice_drift(ref, current, m, settings.min_rows, settings.drift_share)
        phases["drift, 7 slices + attribution"], cpu["drift, 7 slices + attribution"] = since(clock)
        clock = cpu_now()
        fb = read_feedback(client)
        feedback_accuracy(current, fb, m, settings.min_rows)
        estimated_accuracy(current, m, monitor.calibrator, settings.min_rows)
        phases["feedback + accuracy"], cpu["feedback + accuracy"] = since(clock)
        clock = cpu_now()
        summary = monitor.run_once()
        whole, whole_cpu = since(clock)
        results.append(
            {
                "rows": size,
                "phases": phases,
                "cpu_seconds": cpu,
                "run_once_seconds": whole,
                "run_once_cpu_seconds": whole_cpu,
                "drifted": summary["drifted_slices"],
                "explained": summary["explained_drift"],
                "verdicts": {d.slice: d.drift_detected for d in drift.values()},
            }
        )
        print(results[-1], flush=True)
        report()
finally:
    rds.stop()
