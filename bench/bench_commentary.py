"""Commentaries vs unweighted training on the demo (frozen MiniLM), 3 seeds, test split.

One commentary is learned (through SBL inner runs, seed 0) and then used for: SBL heads (the
kind it was learned with) and MoA heads — a reused commentary on a fresh model of another kind.
Also reported: optimisation steps until the validation loss reaches the unweighted model's best.

Run: .venv/bin/python bench/bench_commentary.py  -> bench/results/commentary.{json,md}
"""

from __future__ import annotations

import time

import numpy as np
from common import write

from training.commentary import learn_commentary
from training.config import load_config
from training.evaluate import head_slice_metrics, monitored_mean
from training.train import prepare_data, train_head

cfg = load_config()
prep = prepare_data(cfg, progress=False)
tr, va, te = (prep.splits[s] for s in ("train", "validation", "test"))
t0 = time.perf_counter()
com = learn_commentary(cfg, prep, "sbl", seed=0, progress=False)
learn_s = time.perf_counter() - t0
rows: dict[str, list[dict]] = {}
for kind in ("sbl", "moa"):
    for weighted in (False, True):
        name = f"{kind} {'+ commentary' + (' (reused)' if kind == 'moa' else '') if weighted else 'unweighted'}"
        rows[name] = []
        for seed in (0, 1, 2):
            res = train_head(
                cfg,
                kind,
                tr,
                va,
                seed=seed,
                sample_weight=com.weights if weighted else None,
                progress=False,
            )  # type: ignore[arg-type]
            m = head_slice_metrics(cfg, res.head, te)
            rows[name].append(
                {
                    "overall": m["overall"]["macro_f1"],
                    "monitored": monitored_mean(m, cfg.monitored_slices),
                    "history": res.history,
                }
            )


def steps_to(history: list[dict], target: float) -> float:
    return next((h["step"] for h in history if h["val_loss"] <= target), float("nan"))


lines = [
    "| run (3 seeds, test split) | overall macro-F1 | mean monitored-slice macro-F1 | steps to the unweighted best val loss |",
    "|---|---:|---:|---:|",
]
for name, runs in rows.items():
    kind = name.split()[0]
    base = rows[f"{kind} unweighted"]
    steps = [
        steps_to(r["history"], min(h["val_loss"] for h in b["history"]))
        for r, b in zip(runs, base, strict=True)
    ]
    ov, mo = [r["overall"] for r in runs], [r["monitored"] for r in runs]
    reached = [s for s in steps if s == s]
    lines.append(
        f"| {name} | {np.mean(ov):.4f} ± {np.std(ov):.4f} | {np.mean(mo):.4f} ± {np.std(mo):.4f} | "
        f"{(f'{np.median(reached):.0f} (median; reached {len(reached)}/3)') if reached else 'not reached'} |"
    )
w = com.weights
groups = (
    [("all", w)]
    + [(f"label {lab}", w[tr.labels == i]) for i, lab in enumerate(cfg.labels)]
    + [(f"slice {s}", w[tr.membership[:, j]]) for j, s in enumerate(cfg.slice_names)]
)
lines += ["", "| learned weights | mean | 10th pct | 90th pct |", "|---|---:|---:|---:|"]
lines += [
    f"| {g} | {v.mean():.3f} | {np.percentile(v, 10):.3f} | {np.percentile(v, 90):.3f} |"
    for g, v in groups
]
lines.append(
    f"\nCommentary learned in {learn_s:.0f}s ({cfg.commentary.outer_steps} outer × {cfg.commentary.inner_steps} inner steps)."
)
write(
    "commentary",
    {
        "runs": {
            k: [{x: y for x, y in r.items() if x != "history"} for r in v] for k, v in rows.items()
        },
        "learn_seconds": learn_s,
    },
    "\n".join(lines),
)
