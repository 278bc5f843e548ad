"""Drift monitor: correctness over 10 seeds (drift injected into one slice) and speed on a
100k-prediction window, compared in the same run with one Evidently DataDriftPreset report per
slice.

Current windows are bootstrap samples of the demo model's outputs on the test split (ONNX
Runtime, the served model); drift is injected into one slice by drawing its rows that belong to
no other slice only from texts whose true label is `negative` (a label shift the model's outputs
reflect); rows shared with other slices are drawn as usual, so the other slices are untouched.
Needs the demo bundle (`slicewise export`).

Run: .venv/bin/python bench/bench_drift.py  -> bench/results/drift.{json,md}
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pandas as pd
from common import ROOT, write

from monitoring.drift import evidently_report, slice_drift, slice_masks
from slicewise import contracts as c
from training.backbone import load_tokenizer
from training.config import load_config
from training.export import OnnxRunner, reference_profile
from training.train import prepare_data

bundle = c.Bundle.load(ROOT / ".slicewise" / "bundle")
cfg = load_config()
m = bundle.manifest
reference = bundle.reference()
test = prepare_data(cfg, progress=False, embed=False).splits["test"]
outputs = OnnxRunner.open(bundle.model_file(), load_tokenizer(cfg.backbone), m.max_length).run(
    test.texts
)
pool = reference_profile(cfg, outputs, test.texts, test.labels, test.membership)
masks = slice_masks(pool, m)
WINDOW, MIN_ROWS, SEEDS = 5000, 50, range(10)


user_slices = np.stack([masks[s] for s in m.slice_names], axis=1)


def window(rng: np.random.Generator, target: str | None) -> pd.DataFrame:
    """A bootstrap window; with a target, the target slice's rows that belong to no other slice
    are drawn only from texts whose true label is `negative` (rows it shares with other slices
    are drawn as usual, so every other slice's rows keep their distribution)."""
    if target is None:
        return pool.iloc[rng.integers(0, len(pool), WINDOW)].reset_index(drop=True)
    j = m.slice_names.index(target)
    inside = masks[target]
    others = np.delete(user_slices, j, axis=1).any(axis=1)
    exclusive, shared = np.flatnonzero(inside & ~others), np.flatnonzero(inside & others)
    skewed = exclusive[pool[c.TRUE_LABEL_COLUMN].to_numpy()[exclusive] == "negative"]
    outside = np.flatnonzero(~inside)
    n_excl = round(WINDOW * len(exclusive) / len(pool))
    n_shared = round(WINDOW * len(shared) / len(pool))
    parts = [rng.choice(skewed, n_excl), rng.choice(outside, WINDOW - n_excl - n_shared)]
    if n_shared:
        parts.append(rng.choice(shared, n_shared))
    return pool.iloc[rng.permutation(np.concatenate(parts))].reset_index(drop=True)


detect, false_alarm, null_alarm, rows = [], [], [], []
for target in m.slice_names:
    for seed in SEEDS:
        res = slice_drift(reference, window(np.random.default_rng(seed), target), m, MIN_ROWS)
        detect.append(res[target].drift_detected)
        for name in m.slice_names:
            if name != target:
                overlap = float((masks[target] & masks[name]).sum() / max(1, masks[name].sum()))
                false_alarm.append(res[name].drift_detected)
                rows.append(
                    {
                        "target": target,
                        "other": name,
                        "overlap": overlap,
                        "flagged": res[name].drift_detected,
                    }
                )
for seed in SEEDS:
    res = slice_drift(reference, window(np.random.default_rng(100 + seed), None), m, MIN_ROWS)
    null_alarm += [r.drift_detected for r in res.values()]
table = pd.DataFrame(rows)
low_overlap = table[table.overlap < 0.2]

# speed: one pass over 100k rows vs one Evidently report per slice
big = pool.iloc[np.random.default_rng(0).integers(0, len(pool), 100_000)].reset_index(drop=True)
ours, theirs = [], []
for _ in range(3):
    t0 = time.perf_counter()
    slice_drift(reference, big, m, MIN_ROWS)
    ours.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    big_masks, ref_masks = slice_masks(big, m), slice_masks(reference, m)
    for name in big_masks:
        evidently_report(reference[ref_masks[name]], big[big_masks[name]], m)
    theirs.append(time.perf_counter() - t0)
speed = {"slicewise_s": statistics.median(ours), "evidently_loop_s": statistics.median(theirs)}
md = f"""| measure (10 seeds × {len(m.slice_names)} target slices, window {WINDOW}) | rate |
|---|---:|
| detection rate on the shifted slice | {np.mean(detect):.1%} |
| false alarms on untouched slices (all) | {np.mean(false_alarm):.1%} |
| false alarms on untouched slices overlapping the shifted one < 20% | {low_overlap.flagged.mean():.1%} |
| false alarms with no drift injected (every slice, 10 seeds) | {np.mean(null_alarm):.1%} |

| one monitor pass, 100k predictions, {len(m.slice_names) + 1} slices incl. `all` | median seconds |
|---|---:|
| slicewise (`monitoring.drift.slice_drift`, Evidently's stat tests) | {speed["slicewise_s"]:.2f} |
| plain loop: one Evidently `DataDriftPreset` report per slice | {speed["evidently_loop_s"]:.2f} |

Drift goes only into the shifted slice's rows that no other slice contains, so every other slice's
rows keep their distribution (only their share of the window moves slightly); drift.json has each
pair's overlap and verdict."""
write(
    "drift",
    {
        "detection_rate": float(np.mean(detect)),
        "false_alarm_rate": float(np.mean(false_alarm)),
        "false_alarm_rate_low_overlap": float(low_overlap.flagged.mean()),
        "null_false_alarm_rate": float(np.mean(null_alarm)),
        "pairs": rows,
        "speed": speed,
    },
    md,
)
