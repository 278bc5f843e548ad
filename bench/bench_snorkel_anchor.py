"""External anchor: Snorkel's SliceAwareClassifier vs our SBL on the binary demo
(negative vs positive), same frozen MiniLM embeddings, same slices, same splits (the demo's
splits without the neutral rows), 3 seeds. Snorkel is a benchmark-only dependency.

Snorkel gets the same representation (an identity base architecture over the embeddings, head
dim 384) and the same tuning budget as ours: per seed, both pick from the same grid of
learning rate × batch size (`GRID`) by validation macro-F1, and the number of epochs on
validation too (ours: early stopping, evaluated every epoch; Snorkel: evaluated every 5 epochs
up to 30, training continued in 5-epoch `Trainer.fit` calls, which restart Adam's moments).
Our heads' other settings (temperature, dropout) were tuned earlier on validation
(bench/tune_heads.py); Snorkel's slice model has no counterparts for them.

Run: .venv/bin/python bench/bench_snorkel_anchor.py  -> bench/results/snorkel_anchor.{json,md}
"""

from __future__ import annotations

import numpy as np
import torch
from common import write
from snorkel.classification import DictDataset, Trainer
from snorkel.slicing import SliceAwareClassifier

from training.config import load_config
from training.evaluate import head_slice_metrics, monitored_mean, slice_metrics
from training.train import EncodedSplit, prepare_data, train_head

GRID = [(lr, bs) for lr in (1e-3, 3e-3) for bs in (256, 512)]  # shared tuning budget
EPOCH_STEPS, MAX_EPOCHS = 5, 30
cfg = load_config()
prep = prepare_data(cfg, progress=False)
keep = [cfg.labels.index("negative"), cfg.labels.index("positive")]


def binary(split: EncodedSplit) -> EncodedSplit:
    idx = np.flatnonzero(np.isin(split.labels, keep))
    out = split.subset(idx)
    out.labels = (out.labels == keep[1]).astype(np.int64)
    return out


tr, va, te = (binary(prep.splits[s]) for s in ("train", "validation", "test"))
bcfg = cfg.model_copy(deep=True)
bcfg.labels = ["negative", "positive"]
names = cfg.slice_names


def snorkel_loader(
    split: EncodedSplit,
    name: str,
    model: SliceAwareClassifier,
    shuffle: bool,
    batch_size: int = 256,
):
    ds = DictDataset(
        name="demo",
        split=name,
        X_dict={"input_data": torch.from_numpy(split.embeddings)},
        Y_dict={"task": torch.from_numpy(split.labels)},
    )
    S = np.rec.fromarrays(
        [split.membership[:, j].astype(int) for j in range(len(names))], names=names
    )
    return model.make_slice_dataloader(ds, S, shuffle=shuffle, batch_size=batch_size)


def snorkel_preds(model: SliceAwareClassifier, split: EncodedSplit, name: str) -> np.ndarray:
    out = model.predict(snorkel_loader(split, name, model, False), return_preds=True)
    return np.asarray(out["preds"]["task"])


def snorkel_run(seed: int) -> tuple[np.ndarray, dict]:
    """Test predictions of the validation-best (lr, batch size, epochs) for one seed."""
    best: tuple[float, np.ndarray | None, dict] = (-1.0, None, {})
    for lr, bs in GRID:
        torch.manual_seed(seed)
        model = SliceAwareClassifier(
            torch.nn.Identity(), head_dim=tr.embeddings.shape[1], slice_names=names
        )
        loader = snorkel_loader(tr, "train", model, True, bs)
        for done in range(EPOCH_STEPS, MAX_EPOCHS + 1, EPOCH_STEPS):
            Trainer(n_epochs=EPOCH_STEPS, lr=lr, progress_bar=False, seed=seed + done).fit(
                model, [loader]
            )
            f1 = slice_metrics(
                va.labels, snorkel_preds(model, va, "valid"), va.membership, names, bcfg.labels
            )["overall"]["macro_f1"]
            if f1 > best[0]:
                best = (
                    f1,
                    snorkel_preds(model, te, "test"),
                    {"lr": lr, "batch_size": bs, "epochs": done},
                )
    assert best[1] is not None
    return best[1], best[2]


def ours_run(kind: str, seed: int) -> tuple[object, dict]:
    """The validation-best head over the same grid (epochs by early stopping)."""
    best: tuple[float, object, dict] = (-1.0, None, {})
    for lr, bs in GRID:
        c2 = bcfg.model_copy(deep=True)
        c2.train.lr, c2.train.batch_size = lr, bs
        head = train_head(c2, kind, tr, va, seed=seed, progress=False).head
        f1 = head_slice_metrics(bcfg, head, va)["overall"]["macro_f1"]
        if f1 > best[0]:
            best = (f1, head, {"lr": lr, "batch_size": bs})
    return best[1], best[2]


rows: dict[str, list] = {
    "snorkel SliceAwareClassifier": [],
    "slicewise SBL": [],
    "slicewise baseline": [],
}
chosen: dict[str, list[dict]] = {k: [] for k in rows}
for seed in (0, 1, 2):
    preds, picked = snorkel_run(seed)
    rows["snorkel SliceAwareClassifier"].append(
        slice_metrics(te.labels, preds, te.membership, names, bcfg.labels)
    )
    chosen["snorkel SliceAwareClassifier"].append(picked)
    for kind, label in (("sbl", "slicewise SBL"), ("baseline", "slicewise baseline")):
        head, picked = ours_run(kind, seed)
        rows[label].append(head_slice_metrics(bcfg, head, te))
        chosen[label].append(picked)

mon = cfg.monitored_slices
summary = {
    k: {
        "overall_macro_f1": float(np.mean([r["overall"]["macro_f1"] for r in v])),
        "monitored_macro_f1": float(np.mean([monitored_mean(r, mon) for r in v])),
        "monitored_std": float(np.std([monitored_mean(r, mon) for r in v])),
        **{s: float(np.mean([r[s]["macro_f1"] for r in v])) for s in mon},
    }
    for k, v in rows.items()
}
lines = [
    "| model (binary demo, test, 3 seeds) | overall macro-F1 | "
    + " | ".join(mon)
    + " | mean monitored |",
    "|---|---:|" + "---:|" * (len(mon) + 1),
]
for k, s in summary.items():
    lines.append(
        f"| {k} | {s['overall_macro_f1']:.4f} | "
        + " | ".join(f"{s[m]:.4f}" for m in mon)
        + f" | {s['monitored_macro_f1']:.4f} ± {s['monitored_std']:.4f} |"
    )
ours, theirs = (
    summary["slicewise SBL"]["monitored_macro_f1"],
    summary["snorkel SliceAwareClassifier"]["monitored_macro_f1"],
)
lines.append(
    f"\nslicewise SBL − Snorkel on mean monitored-slice macro-F1: **{100 * (ours - theirs):+.2f} points** "
    f"(n = {len(tr)} train / {len(te)} test rows). Same tuning budget: each picks, per seed, "
    f"from lr × batch size {GRID} on validation (settings picked: "
    + "; ".join(f"{k}: {v}" for k, v in chosen.items())
    + ")."
)
write("snorkel_anchor", {"summary": summary, "runs": rows, "chosen": chosen}, "\n".join(lines))
