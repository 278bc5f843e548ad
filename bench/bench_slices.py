"""Which demo slices to monitor: where is the frozen baseline measurably worse than overall?

The frozen-MiniLM baseline head (3 seeds) is evaluated per candidate slice on the VALIDATION
split (the choice must not peek at test, where bench_quality.py reports). A slice is
"measurably worse" when the 95% bootstrap interval of (slice macro-F1 − overall macro-F1),
resampling validation rows with the seed-averaged gap, lies entirely below zero, and it has at
least MIN_ROWS validation rows. The test-split gap is reported alongside as a check.

Run: .venv/bin/python bench/bench_slices.py  -> bench/results/slices.{json,md}
"""

from __future__ import annotations

import time

import numpy as np
from common import write

from training.config import load_config, parse_config
from training.evaluate import slice_metrics
from training.train import predict_head, prepare_data, train_head

SEEDS = (0, 1, 2)
BOOT = 1000
MIN_ROWS = 100
# Candidates beyond the config's own slices (declarative: the same rules a user would write).
EXTRA = [
    {"name": "mention", "description": "mentions a user", "regex": r"@\w+"},
    {"name": "hashtag", "description": "has a hashtag", "regex": r"#\w+"},
    {"name": "exclamation", "description": "has an exclamation mark", "regex": "!"},
    {"name": "emoticon", "description": "has an emoticon", "regex": r"[:;]-?[()DPp/]|<3"},
    {"name": "all_caps", "description": "a shouted word", "regex": r"\b[A-Z]{3,}\b"},
    {
        "name": "contrast",
        "description": "contrast word",
        "keywords": ["but", "however", "though", "although", "yet"],
    },
    {"name": "number", "description": "has a digit", "regex": r"\d"},
    {"name": "retweet", "description": "a retweet", "regex": r"\bRT\b"},
]


def macro_f1(y: np.ndarray, p: np.ndarray, c: int) -> float:
    """Macro-F1 over all `c` classes (absent class -> 0, like `slice_metrics`), via counts."""
    tp = np.bincount(y[y == p], minlength=c)
    pred = np.bincount(p, minlength=c)
    true = np.bincount(y, minlength=c)
    denom = pred + true
    return float(np.mean(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)))


def bootstrap_gap(y, preds, member, labels, rng) -> tuple[float, float, float]:
    """Seed-averaged (slice − overall) macro-F1 gap and its 95% bootstrap interval."""
    c = len(labels)

    def gap(idx: np.ndarray) -> float:
        yo, m = y[idx], member[idx]
        return float(
            np.mean([macro_f1(yo[m], p[idx][m], c) - macro_f1(yo, p[idx], c) for p in preds])
        )

    point = gap(np.arange(len(y)))
    boots = [gap(rng.integers(0, len(y), len(y))) for _ in range(BOOT)]
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return point, float(lo), float(hi)


base = load_config()
data = base.model_dump(mode="json")
data["slices"] = data["slices"] + EXTRA
cfg = parse_config(data, "tweets.yaml + candidates")
t0 = time.perf_counter()
prep = prepare_data(cfg, progress=False)
tr, va, te = (prep.splits[s] for s in ("train", "validation", "test"))
val_preds, test_preds = [], []
for seed in SEEDS:
    head = train_head(cfg, "baseline", tr, va, seed=seed, progress=False).head
    val_preds.append(predict_head(head, va.embeddings)["probabilities"].argmax(1))
    test_preds.append(predict_head(head, te.embeddings)["probabilities"].argmax(1))
    print(f"baseline seed {seed} trained ({time.perf_counter() - t0:.0f}s)", flush=True)
rng = np.random.default_rng(0)
rows = {}
for j, name in enumerate(cfg.slice_names):
    point, lo, hi = bootstrap_gap(va.labels, val_preds, va.membership[:, j], cfg.labels, rng)
    test_gap = np.mean(
        [
            (m := slice_metrics(te.labels, p, te.membership, cfg.slice_names, cfg.labels))[name][
                "macro_f1"
            ]
            - m["overall"]["macro_f1"]
            for p in test_preds
        ]
    )
    n_val = int(va.membership[:, j].sum())
    rows[name] = {
        "train_rows": int(tr.membership[:, j].sum()),
        "validation_rows": n_val,
        "test_rows": int(te.membership[:, j].sum()),
        "val_gap": point,
        "val_gap_ci95": [lo, hi],
        "test_gap": float(test_gap),
        "measurably_worse": bool(hi < 0 and n_val >= MIN_ROWS),
        "in_config": name in base.slice_names,
        "monitored_in_config": name in base.monitored_slices,
    }
    print(name, rows[name], flush=True)

overall_val = np.mean(
    [
        slice_metrics(va.labels, p, va.membership, cfg.slice_names, cfg.labels)["overall"][
            "macro_f1"
        ]
        for p in val_preds
    ]
)
lines = [
    f"Frozen-MiniLM baseline head, {len(SEEDS)} seeds; overall validation macro-F1 "
    f"{overall_val:.4f}. Gap = slice macro-F1 − overall macro-F1 (points); 95% CI from "
    f"{BOOT} bootstrap resamples of the validation rows. Measurably worse = CI below 0 and "
    f"≥ {MIN_ROWS} validation rows.",
    "",
    "| slice | rows (train / val / test) | val gap (points) | 95% CI | test gap (points) | measurably worse | monitored in tweets.yaml |",
    "|---|---:|---:|---|---:|:---:|:---:|",
]
for name, r in sorted(rows.items(), key=lambda kv: kv[1]["val_gap"]):
    lines.append(
        f"| {name}{'' if r['in_config'] else ' (candidate)'} | {r['train_rows']} / "
        f"{r['validation_rows']} / {r['test_rows']} | {100 * r['val_gap']:+.2f} | "
        f"[{100 * r['val_gap_ci95'][0]:+.2f}, {100 * r['val_gap_ci95'][1]:+.2f}] | "
        f"{100 * r['test_gap']:+.2f} | {'yes' if r['measurably_worse'] else 'no'} | "
        f"{'yes' if r['monitored_in_config'] else ('no' if r['in_config'] else '—')} |"
    )
write(
    "slices",
    {
        "overall_validation_macro_f1": float(overall_val),
        "seeds": list(SEEDS),
        "bootstrap": BOOT,
        "min_rows": MIN_ROWS,
        "slices": rows,
        "seconds": time.perf_counter() - t0,
    },
    "\n".join(lines),
)
