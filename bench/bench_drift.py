"""Drift monitor: correctness over 10 seeds in two scenarios and speed on a 100k-prediction
window, compared in the same run with one Evidently DataDriftPreset report per slice.

Current windows are bootstrap samples of the demo model's outputs on the test split (ONNX
Runtime, the served model), with slices cut by exact membership as the service logs it. Two
ways to shift one slice:

1. label shift: all of the slice's rows are drawn from texts whose true label is `negative` (a
   shift the model's outputs reflect; the slice keeps its share of the window);
2. traffic share (the README demo: `demo-traffic --shift-slice negation --shift 0.9`): a share
   0.2 / 0.4 / 0.6 / 0.9 of the window is drawn from the slice's members, the rest from all
   traffic; no text changes, the mix does.

Rows the shifted slice shares with other slices move too, so the monitor's attribution step
(monitoring/drift.py) has to tell the shifted slice from its neighbours; false alarms are counted
before and after it. Detection = the slice is reported drifted or traffic-shifted; a false alarm
= another user slice reported drifted.
Needs the demo bundle (`slicewise export`).

Run: .venv/bin/python bench/bench_drift.py  -> bench/results/drift.{json,md}
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pandas as pd
from common import ROOT, write

from monitoring.drift import evidently_report, slice_drift, slice_masks, traffic_shift_threshold
from slicewise.core import contracts as c
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


def window(rng: np.random.Generator, target: str | None) -> pd.DataFrame:
    """A bootstrap window; with a target, every row of the target slice is drawn from texts whose
    true label is `negative` (the slice keeps its share of the window)."""
    if target is None:
        return pool.iloc[rng.integers(0, len(pool), WINDOW)].reset_index(drop=True)
    inside = masks[target]
    negative = pool[c.TRUE_LABEL_COLUMN].to_numpy() == "negative"
    n_in = round(WINDOW * inside.mean())
    parts = [
        rng.choice(np.flatnonzero(inside & negative), n_in),
        rng.choice(np.flatnonzero(~inside), WINDOW - n_in),
    ]
    return pool.iloc[rng.permutation(np.concatenate(parts))].reset_index(drop=True)


detect, false_alarm, raw_alarm, null_alarm, rows = [], [], [], [], []
for target in m.slice_names:
    for seed in SEEDS:
        res = slice_drift(reference, window(np.random.default_rng(seed), target), m, MIN_ROWS)
        detect.append(res[target].drift_detected)
        for name in m.slice_names:
            if name != target:
                overlap = float((masks[target] & masks[name]).sum() / max(1, masks[name].sum()))
                false_alarm.append(res[name].drift_detected)
                raw_alarm.append(res[name].drifted_columns)
                rows.append(
                    {
                        "target": target,
                        "other": name,
                        "overlap": overlap,
                        "flagged": res[name].drift_detected,
                        "drifted_before_attribution": res[name].drifted_columns,
                        "explained_by": res[name].explained_by,
                    }
                )
for seed in SEEDS:
    res = slice_drift(reference, window(np.random.default_rng(100 + seed), None), m, MIN_ROWS)
    null_alarm += [r.drift_detected or r.traffic_shifted for r in res.values()]


def share_window(rng: np.random.Generator, target: str, share: float) -> pd.DataFrame:
    """What `demo-traffic --shift-slice target --shift share` sends: each row is a slice member
    with probability `share`, else any text."""
    members = np.flatnonzero(masks[target])
    take = np.where(
        rng.random(WINDOW) < share,
        rng.choice(members, WINDOW),
        rng.integers(0, len(pool), WINDOW),
    )
    return pool.iloc[take].reset_index(drop=True)


SHARES = (0.2, 0.4, 0.6, 0.9)
traffic_rows = []
for target in m.slice_names:
    for share in SHARES:
        for seed in SEEDS:
            res = slice_drift(
                reference, share_window(np.random.default_rng(seed), target, share), m, MIN_ROWS
            )
            others = [n for n in m.slice_names if n != target]
            traffic_rows.append(
                {
                    "target": target,
                    "share": share,
                    "seed": seed,
                    "share_moved": res[target].current_share - res[target].reference_share,
                    "detected": res[target].drift_detected or res[target].traffic_shifted,
                    "target_drifted": res[target].drift_detected,
                    "target_traffic_shifted": res[target].traffic_shifted,
                    "false_alarms": [n for n in others if res[n].drift_detected],
                    "before_attribution": [n for n in others if res[n].drifted_columns],
                    "others_traffic_shifted": [n for n in others if res[n].traffic_shifted],
                    "others_share_moved": [n for n in others if res[n].share_moved],
                }
            )
traffic = pd.DataFrame(traffic_rows)
n_other = len(m.slice_names) - 1
by_share = {
    share: {
        "detection_rate": float(g["detected"].mean()),
        "target_drifted_rate": float(g["target_drifted"].mean()),
        "false_alarm_rate": float(g["false_alarms"].map(len).sum() / (len(g) * n_other)),
        "false_alarm_rate_before_attribution": float(
            g["before_attribution"].map(len).sum() / (len(g) * n_other)
        ),
        "others_traffic_shifted_rate": float(
            g["others_traffic_shifted"].map(len).sum() / (len(g) * n_other)
        ),
        "others_share_moved_rate": float(
            g["others_share_moved"].map(len).sum() / (len(g) * n_other)
        ),
        "mean_share_moved": float(g["share_moved"].mean()),
    }
    for share, g in traffic.groupby("share")
}
per_target = {
    target: {
        "share_moved_at_0.2": float(g.loc[g["share"] == 0.2, "share_moved"].mean()),
        "detection_rate": float(g["detected"].mean()),
        "false_alarms": sorted({n for row in g["false_alarms"] for n in row}),
    }
    for target, g in traffic.groupby("target")
}
table = pd.DataFrame(rows)

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
        evidently_report(reference[ref_masks[name]], big[big_masks[name]], m, name)
    theirs.append(time.perf_counter() - t0)
speed = {"slicewise_s": statistics.median(ours), "evidently_loop_s": statistics.median(theirs)}
share_table = "\n".join(
    f"| {share:.1f} | {v['mean_share_moved']:+.2f} | {v['detection_rate']:.1%} "
    f"| {v['target_drifted_rate']:.1%} | {v['false_alarm_rate']:.1%} "
    f"| {v['false_alarm_rate_before_attribution']:.1%} | {v['others_traffic_shifted_rate']:.1%} "
    f"| {v['others_share_moved_rate']:.1%} |"
    for share, v in by_share.items()
)
md = f"""Label shift (every row of one slice drawn from `negative` texts; the slice keeps its share):

| measure (10 seeds × {len(m.slice_names)} target slices, window {WINDOW}) | rate |
|---|---:|
| detection rate on the shifted slice | {np.mean(detect):.1%} |
| false alarms on untouched slices | {np.mean(false_alarm):.1%} |
| untouched slices whose own columns drifted (before attribution) | {np.mean(raw_alarm):.1%} |
| false alarms with no shift injected (every slice incl. `all`, drift or traffic shift, 10 seeds) | {np.mean(null_alarm):.1%} |

Traffic share (the README demo: a share of the window drawn from one slice's members; 10 seeds ×
{len(m.slice_names)} target slices per row; traffic-shift threshold {traffic_shift_threshold():.2f}, read from the
`SliceTrafficShift` alert rule):

| share drawn from the slice | target's share moved (mean) | detected (drift or traffic shift) | target drifted | false alarms (other slices drifted) | before attribution | other slices traffic-shifted | before attribution |
|---:|---:|---:|---:|---:|---:|---:|---:|
{share_table}

| one monitor pass, 100k predictions, {len(m.slice_names) + 1} slices incl. `all` | median seconds |
|---|---:|
| slicewise (`monitoring.drift.slice_drift`, Evidently's stat tests) | {speed["slicewise_s"]:.2f} |
| plain loop: one Evidently `DataDriftPreset` report per slice, on the same columns | {speed["evidently_loop_s"]:.2f} |

An untouched slice that drifts only through the rows it shares with the shifted slice is
reported as `explained_by` it, not as drifted. In the traffic-share scenario the other slices'
shares move too (a negation-heavy window has fewer short texts): a share that moved only with
the target's (unchanged inside the target and outside it) is reported as explained by it, not
traffic-shifted; the last two columns count the other slices traffic-shifted after and before
that attribution. drift.json has every run's verdicts."""
write(
    "drift",
    {
        "detection_rate": float(np.mean(detect)),
        "false_alarm_rate": float(np.mean(false_alarm)),
        "false_alarm_rate_before_attribution": float(np.mean(raw_alarm)),
        "null_false_alarm_rate": float(np.mean(null_alarm)),
        "traffic_share": {"by_share": by_share, "per_target": per_target, "runs": traffic_rows},
        "pairs": rows,
        "speed": speed,
    },
    md,
)
