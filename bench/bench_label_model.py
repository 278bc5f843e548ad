"""Weak supervision: our triplet label model vs Snorkel's LabelModel (same label matrices),
and the Epoxy comparison on the demo (labels without / with extension, heads trained on them
vs on gold labels), plus the whole loop on 30k precomputed embeddings.

Run: .venv/bin/python bench/bench_label_model.py  -> bench/results/label_model.{json,md}
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from common import write
from snorkel.labeling.model import LabelModel

from training.config import load_config
from training.evaluate import head_slice_metrics
from training.train import EncodedSplit, prepare_data, train_head
from training.weak import ABSTAIN, TripletLabelModel, apply_lfs
from training.weak.epoxy import extend_votes, nearest_votes, prepare_embeddings, tune_thresholds
from training.weak.pipeline import interactive_loop


def synth(n: int, m: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.choice(3, n, p=[0.5, 0.3, 0.2])
    L = np.full((n, m), ABSTAIN)
    for j in range(m):
        c = j % 3
        fire = np.where(
            y == c, rng.random(n) < rng.uniform(0.2, 0.5), rng.random(n) < rng.uniform(0.01, 0.08)
        )
        L[fire, j] = c
    return L, y


def compare(L: np.ndarray, y: np.ndarray, rounds: int = 5) -> dict[str, float]:
    covered = (L != ABSTAIN).any(1)
    ours_t, snorkel_t = [], []
    for _ in range(rounds):  # interleaved
        t0 = time.perf_counter()
        ours = TripletLabelModel(3).fit(L)
        ours_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sn = LabelModel(cardinality=3, verbose=False)
        sn.fit(L, seed=0, progress_bar=False)  # Snorkel's defaults (100 epochs of SGD)
        snorkel_t.append(time.perf_counter() - t0)
    acc = lambda p: float((p[covered].argmax(1) == y[covered]).mean())  # noqa: E731
    return {
        "ours_s": statistics.median(ours_t),
        "snorkel_s": statistics.median(snorkel_t),
        "ours_acc": acc(ours.predict_proba(L)),
        "snorkel_acc": acc(sn.predict_proba(L)),
        "coverage": float(covered.mean()),
    }


L_syn, y_syn = synth(100_000, 20)
synthetic = compare(L_syn, y_syn)
cfg = load_config()
prep = prepare_data(cfg, progress=False)
tr, va, te = prep.splits["train"], prep.splits["validation"], prep.splits["test"]
L_tr, L_va = apply_lfs(tr.texts, cfg), apply_lfs(va.texts, cfg)
demo = compare(L_tr, tr.labels)

# Epoxy on the demo: extension tuned on validation, labels on train, heads evaluated on test
L_all = np.concatenate([L_tr, L_va])
emb_all = prepare_embeddings(np.concatenate([tr.embeddings, va.embeddings]))
gold_all = np.concatenate([tr.labels, va.labels])
dev = np.arange(len(tr), len(L_all))
t0 = time.perf_counter()
sim, vote = nearest_votes(L_all, emb_all)
thresholds = tune_thresholds(L_all, sim, vote, gold_all, dev, cfg.weak_supervision.threshold_grid)
L_ext = extend_votes(L_all, sim, vote, thresholds)[: len(tr)]
extend_s = time.perf_counter() - t0
rows = {}
for name, L in (("LFs only", L_tr), ("LFs + Epoxy extension", L_ext)):
    model = TripletLabelModel(3).fit(L)
    probs = model.predict_proba(L)
    cov = (L != ABSTAIN).any(1)
    head = train_head(
        cfg,
        "moa",
        EncodedSplit(tr.embeddings[cov], probs[cov].astype(np.float32), tr.membership[cov]),
        va,
        progress=False,
    ).head
    rows[name] = {
        "coverage": float(cov.mean()),
        "label_acc": float((probs[cov].argmax(1) == tr.labels[cov]).mean()),
        "head_test_macro_f1": head_slice_metrics(cfg, head, te)["overall"]["macro_f1"],
    }
gold_head = train_head(cfg, "moa", tr, va, progress=False).head
gold_f1 = head_slice_metrics(cfg, gold_head, te)["overall"]["macro_f1"]

# the whole loop on 30k precomputed embeddings (train + reference splits): extend with the tuned
# thresholds, fit, train the same slice-aware head (fast path: 64-d whitened PCA input, 6 epochs)
rf = prep.splits["reference"]
n = 30_000
emb30 = np.concatenate([tr.embeddings, rf.embeddings])[:n]
L30 = np.concatenate([L_tr, apply_lfs(rf.texts, cfg)])[:n]
mem30 = np.concatenate([tr.membership, rf.membership])[:n]
loop_runs = []
for _ in range(5):
    res = interactive_loop(cfg, L30, emb30, mem30, thresholds=thresholds, max_voters=2048, epochs=6)
    loop_runs.append(res.timings)
loop = {k: statistics.median(r[k] for r in loop_runs) for k in loop_runs[0]}
mean30, comps30 = res.projection
z_te = ((torch.from_numpy(te.embeddings) - mean30) @ comps30).numpy()
loop["n"] = len(emb30)
loop["coverage"] = res.labels.stats["coverage"]
loop["head_test_macro_f1"] = head_slice_metrics(cfg, res.head, te, z_te)["overall"]["macro_f1"]

md = f"""| label matrix | ours: fit (s) | Snorkel LabelModel: fit (s) | speed-up | ours: label acc | Snorkel: label acc |
|---|---:|---:|---:|---:|---:|
| synthetic, n = 100k, m = 20 | {synthetic["ours_s"]:.3f} | {synthetic["snorkel_s"]:.2f} | {synthetic["snorkel_s"] / synthetic["ours_s"]:.1f}× | {synthetic["ours_acc"]:.4f} | {synthetic["snorkel_acc"]:.4f} |
| demo LFs on the train split (n = {len(L_tr)}, m = {L_tr.shape[1]}) | {demo["ours_s"]:.3f} | {demo["snorkel_s"]:.2f} | {demo["snorkel_s"] / demo["ours_s"]:.1f}× | {demo["ours_acc"]:.4f} | {demo["snorkel_acc"]:.4f} |

Label accuracy = argmax of the probabilistic labels vs gold, on points with at least one vote; fit times are medians of 5 interleaved runs; Snorkel's `LabelModel` with its defaults (100 epochs).
"""
md_epoxy = (
    """| demo labels (train split) | coverage | label accuracy (covered) | MoA head on them: test macro-F1 |
|---|---:|---:|---:|
"""
    + "\n".join(
        f"| {k} | {v['coverage']:.3f} | {v['label_acc']:.3f} | {v['head_test_macro_f1']:.4f} |"
        for k, v in rows.items()
    )
    + f"""
| gold labels | 1.000 | 1.000 | {gold_f1:.4f} |

Extension thresholds tuned on validation: {dict(zip([x.name for x in cfg.labeling_functions], thresholds, strict=True))} (extension + tuning {extend_s:.1f}s).

Whole loop on {loop["n"]} precomputed embeddings — Epoxy extension with the thresholds above (bfloat16 search, ≤ 2048 voters per LF), label model fit, the same MoA slice-aware head trained 6 epochs on a 64-d whitened PCA projection (`training.weak.pipeline.interactive_loop`); median of 5: **{loop["total_s"]:.2f}s** wall ({loop["cpu_s"]:.2f} CPU-s) — PCA {loop["pca_s"]:.2f}s, extend {loop["extend_s"]:.2f}s, label model {loop["label_model_s"]:.3f}s, head {loop["head_s"]:.2f}s; coverage {loop["coverage"]:.3f}, that head's test macro-F1 {loop["head_test_macro_f1"]:.4f}."""
)
write("label_model", {"synthetic": synthetic, "demo": demo}, md)
write(
    "epoxy",
    {
        "labels": rows,
        "gold_head_macro_f1": gold_f1,
        "thresholds": thresholds,
        "extend_and_tune_s": extend_s,
        "loop_30k": loop,
        "loop_runs": loop_runs,
    },
    md_epoxy,
)
