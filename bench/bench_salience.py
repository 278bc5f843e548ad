"""Aggregated salience over demo training texts (default 1000) with the frozen demo model, and
what it finds: top words by predicted label, gold label and outcome, shortcut flags, IG's
completeness error (steps doubled per batch until it is small) and peak memory.

Run: .venv/bin/python bench/bench_salience.py [--texts 1000] [--max-steps 128]
  -> bench/results/salience.{json,md} + bench/results/salience/
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
from common import RESULTS, ROOT, write

from slicewise.core import contracts as c
from training.backbone import load_tokenizer
from training.config import load_config
from training.salience import aggregate, explain, label_association, write_report
from training.train import load_checkpoint, prepare_data

parser = argparse.ArgumentParser()
parser.add_argument("--texts", type=int, default=1000, help="training texts to explain")
parser.add_argument("--max-steps", type=int, default=128, help="most IG steps per batch")
args = parser.parse_args()
cfg = load_config()
bundle = c.Bundle.load(ROOT / ".slicewise" / "bundle")
_, trained = load_checkpoint(
    next((ROOT / ".slicewise" / "checkpoints").glob(f"*-{bundle.manifest.version}.pt"))
)
prep = prepare_data(cfg, progress=False, embed=False)
tr, te = prep.splits["train"], prep.splits["test"]
rows = np.random.default_rng(0).permutation(len(tr))[: args.texts]
tok = load_tokenizer(cfg.backbone)
t0 = time.perf_counter()
sal = explain(
    trained.model,
    tok,
    [tr.texts[i] for i in rows],
    cfg.backbone.max_length,
    n_steps=16,
    max_steps=args.max_steps,
    progress=False,
    slice_rules=tr.membership[rows],
)
explain_s = time.perf_counter() - t0
report = aggregate(
    sal,
    cfg,
    tr.membership[rows],
    train_assoc=label_association(tr.texts, tr.labels, tok, 3),
    eval_assoc=label_association(te.texts, te.labels, tok, 3),
    gold=tr.labels[rows],
)
total_s = time.perf_counter() - t0
write_report(report, RESULTS / "salience")
top = {
    lab: ", ".join(r["token"] for r in rows_[:8])
    for lab, rows_ in report["top_tokens_by_label"].items()
}
by_outcome = {
    k: ", ".join(r["token"] for r in rows_[:8])
    for k, rows_ in report["top_tokens_by_outcome"].items()
}
completeness = report["ig_completeness"]
peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
flags = "; ".join(
    f"`{f['token']}` ({f['label']}: {f['reasons'][0].split(' (')[0]})"
    for f in report["shortcuts"][:8]
)
md = (
    f"""{len(rows)} training texts, integrated gradients (16 steps, doubled per batch of 16 until the
mean relative completeness error is ≤ 0.05, at most {args.max_steps}) + gradient × input, frozen
demo model ({bundle.manifest.model_kind}): **{total_s:.0f}s** in all ({explain_s:.0f}s
attributions), peak memory {peak_gb:.1f} GB. IG completeness error: mean
{completeness["mean_relative_error"]:.3f}, median {completeness["median_relative_error"]:.3f};
steps used per text: {completeness["steps"]}. The model's accuracy on these texts:
{report["accuracy"]:.3f}.

| predicted label | top salient tokens |
|---|---|
"""
    + "\n".join(f"| {k} | {v} |" for k, v in top.items())
    + """

| outcome | top salient tokens |
|---|---|
"""
    + "\n".join(f"| {k} | {v} |" for k, v in by_outcome.items())
    + f"""

Flagged as possible shortcuts: {flags or "none"}.
Mean correlation of IG and gradient × input per text: {report["ig_vs_grad_x_input_correlation"]:.2f}.
HTML report: `bench/results/salience/salience.html`."""
)
write(
    "salience",
    {"seconds": total_s, "explain_seconds": explain_s, "peak_rss_gb": peak_gb, "report": report},
    md,
)
