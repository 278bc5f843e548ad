"""Quality on the demo: baseline vs SBL vs MoA per slice, frozen MiniLM, 3 seeds (test split).

Run: .venv/bin/python bench/bench_quality.py  -> bench/results/quality.{json,md,png}
"""

from __future__ import annotations

import shutil
import time

from common import RESULTS, write

from training.config import load_config
from training.evaluate import evaluate_project, markdown_table
from training.train import prepare_data

cfg = load_config()
t0 = time.perf_counter()
prepared = prepare_data(cfg)
embed_s = time.perf_counter() - t0
t1 = time.perf_counter()
result = evaluate_project(
    cfg, ["baseline", "sbl", "moa"], [0, 1, 2], RESULTS / "quality_run", prepared=prepared
)
heads_s = time.perf_counter() - t1
shutil.move(RESULTS / "quality_run" / "evaluation.png", RESULTS / "quality.png")
shutil.rmtree(RESULTS / "quality_run")
s = result["summary"]
base = s["baseline"]
lines = [
    markdown_table(result),
    "",
    "| kind | overall macro-F1 | Δ overall vs baseline (points) | mean monitored-slice macro-F1 | Δ monitored vs baseline (points) |",
    "|---|---:|---:|---:|---:|",
]
for kind, row in s.items():
    lines.append(
        f"| {kind} | {row['overall_macro_f1']:.4f} | {100 * (row['overall_macro_f1'] - base['overall_macro_f1']):+.2f} | "
        f"{row['monitored_macro_f1']:.4f} | {100 * (row['monitored_macro_f1'] - base['monitored_macro_f1']):+.2f} |"
    )
lines.append(
    f"\nMonitored slices: {', '.join(cfg.monitored_slices)}. Heads: {cfg.train.model_dump(include={'batch_size', 'lr', 'temperature', 'lambda_ind', 'lambda_pred', 'dropout', 'moa_attention_dim'})}. "
    f"9 heads trained in {heads_s:.0f}s (data load + embeddings {embed_s:.0f}s, cached after the first run)."
)
write(
    "quality",
    {"result": result, "heads_seconds": heads_s, "prepare_seconds": embed_s},
    "\n".join(lines),
)
