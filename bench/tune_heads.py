"""Hyper-parameter sweep for the demo heads, scored on the VALIDATION split (never test).

Usage: python bench/tune_heads.py  -> bench/results/tune_heads.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.config import KINDS, load_config
from training.evaluate import head_slice_metrics, monitored_mean
from training.train import prepare_data, train_head

GRID = {
    "bs512": {"batch_size": 512, "lr": 2e-3},
    "bs512_tau0.2": {"batch_size": 512, "lr": 2e-3, "temperature": 0.2},
    "bs512_tau0.1": {"batch_size": 512, "lr": 2e-3, "temperature": 0.1},
    "bs512_tau0.1_drop0.3": {"batch_size": 512, "lr": 2e-3, "temperature": 0.1, "dropout": 0.3},
    "bs512_tau0.05": {"batch_size": 512, "lr": 2e-3, "temperature": 0.05},
}

cfg = load_config()
prep = prepare_data(cfg, progress=False)
tr, va = prep.splits["train"], prep.splits["validation"]
out = {}
for name, over in GRID.items():
    for kind in KINDS:
        if kind == "baseline" and name != "bs512":
            continue  # the temperature does not touch the baseline
        c2 = cfg.model_copy(deep=True)
        for k, v in over.items():
            setattr(c2.train, k, v)
        t0 = time.perf_counter()
        res = train_head(c2, kind, tr, va, seed=0, progress=False)
        secs = time.perf_counter() - t0
        m = head_slice_metrics(cfg, res.head, va)
        out[f"{name}/{kind}"] = {
            "overall": m["overall"]["macro_f1"],
            "monitored": monitored_mean(m, cfg.monitored_slices),
            "seconds": secs,
            "best_epoch": res.best_epoch,
        }
        print(name, kind, json.dumps(out[f"{name}/{kind}"]), flush=True)
Path("bench/results/tune_heads.json").write_text(json.dumps(out, indent=2))
