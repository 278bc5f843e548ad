"""Whole demo training in frozen mode, from nothing cached: embed ~38k tweets once, then train
baseline, SBL and MoA heads (target: all within 15 minutes on 2 cores; a head under 30 s).

Run: .venv/bin/python bench/bench_train_speed.py  -> bench/results/train_speed.{json,md}
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import write

from training.config import KINDS, load_config
from training.train import prepare_data, train_head

cfg = load_config()
cfg.train.cache_dir = Path(tempfile.mkdtemp(prefix="slicewise-cold-cache-"))  # nothing cached
t0 = time.perf_counter()
prep = prepare_data(cfg, progress=False)
embed_s = time.perf_counter() - t0
heads = {}
for kind in KINDS:
    t = time.perf_counter()
    res = train_head(cfg, kind, prep.splits["train"], prep.splits["validation"], progress=False)  # type: ignore[arg-type]
    heads[kind] = {
        "seconds": time.perf_counter() - t,
        "epochs": len(res.history),
        "best_epoch": res.best_epoch,
    }
total = time.perf_counter() - t0
n = sum(len(s) for s in prep.splits.values())
md = (
    "| step | seconds |\n|---|---:|\n"
    + f"| load + split + slice + embed {n} texts (cold cache) | {embed_s:.0f} |\n"
    + "".join(
        f"| {k} head ({v['epochs']} epochs, early stopping) | {v['seconds']:.1f} |\n"
        for k, v in heads.items()
    )
    + f"| **whole demo training** | **{total:.0f}** ({total / 60:.1f} min) |"
)
write(
    "train_speed",
    {"embed_seconds": embed_s, "heads": heads, "total_seconds": total, "texts": n},
    md,
)
