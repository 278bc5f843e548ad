"""Aggregated salience over 1000 demo training texts with the frozen demo model (target: within
10 minutes on 2 CPU cores), and what it finds.

Run: .venv/bin/python bench/bench_salience.py  -> bench/results/salience.{json,md} + bench/results/salience/
"""

from __future__ import annotations

import time

import numpy as np
from common import RESULTS, ROOT, write

from slicewise.core import contracts as c
from training.backbone import load_tokenizer
from training.config import load_config
from training.salience import aggregate, explain, label_association, write_report
from training.train import load_checkpoint, prepare_data

cfg = load_config()
bundle = c.Bundle.load(ROOT / ".slicewise" / "bundle")
_, trained = load_checkpoint(
    next((ROOT / ".slicewise" / "checkpoints").glob(f"*-{bundle.manifest.version}.pt"))
)
prep = prepare_data(cfg, progress=False, embed=False)
tr, te = prep.splits["train"], prep.splits["test"]
rows = np.random.default_rng(0).permutation(len(tr))[:1000]
tok = load_tokenizer(cfg.backbone)
t0 = time.perf_counter()
sal = explain(
    trained.model,
    tok,
    [tr.texts[i] for i in rows],
    cfg.backbone.max_length,
    n_steps=16,
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
)
total_s = time.perf_counter() - t0
write_report(report, RESULTS / "salience")
top = {
    lab: ", ".join(r["token"] for r in rows_[:8])
    for lab, rows_ in report["top_tokens_by_label"].items()
}
flags = "; ".join(
    f"`{f['token']}` ({f['label']}: {f['reasons'][0].split(' (')[0]})"
    for f in report["shortcuts"][:8]
)
md = (
    f"""1000 training texts, integrated gradients (16 steps) + gradient × input, frozen demo model
({bundle.manifest.model_kind}): **{total_s:.0f}s** in all ({explain_s:.0f}s attributions).

| predicted label | top salient tokens |
|---|---|
"""
    + "\n".join(f"| {k} | {v} |" for k, v in top.items())
    + f"""

Flagged as possible shortcuts: {flags or "none"}.
Mean correlation of IG and gradient × input per text: {report["ig_vs_grad_x_input_correlation"]:.2f}.
HTML report: `bench/results/salience/salience.html`."""
)
write("salience", {"seconds": total_s, "explain_seconds": explain_s, "report": report}, md)
