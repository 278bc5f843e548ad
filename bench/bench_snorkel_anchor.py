"""External anchor: Snorkel's SliceAwareClassifier vs our SBL on the binary demo
(negative vs positive), same frozen MiniLM embeddings, same slices, same splits (the demo's
splits without the neutral rows), 3 seeds. Snorkel is a benchmark-only dependency.

Snorkel gets the same representation (an identity base architecture over the embeddings, head
dim 384) and its number of epochs is picked on validation like ours (early stopping).

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


def snorkel_loader(split: EncodedSplit, name: str, model: SliceAwareClassifier, shuffle: bool):
    ds = DictDataset(
        name="demo",
        split=name,
        X_dict={"input_data": torch.from_numpy(split.embeddings)},
        Y_dict={"task": torch.from_numpy(split.labels)},
    )
    S = np.rec.fromarrays(
        [split.membership[:, j].astype(int) for j in range(len(names))], names=names
    )
    return model.make_slice_dataloader(ds, S, shuffle=shuffle, batch_size=256)


def snorkel_preds(model: SliceAwareClassifier, split: EncodedSplit, name: str) -> np.ndarray:
    out = model.predict(snorkel_loader(split, name, model, False), return_preds=True)
    return np.asarray(out["preds"]["task"])


def snorkel_run(seed: int) -> np.ndarray:
    best = (-1.0, None)
    for epochs in (5, 15, 30):  # chosen on validation, like our early stopping
        torch.manual_seed(seed)
        model = SliceAwareClassifier(
            torch.nn.Identity(), head_dim=tr.embeddings.shape[1], slice_names=names
        )
        Trainer(n_epochs=epochs, lr=1e-3, progress_bar=False, seed=seed).fit(
            model, [snorkel_loader(tr, "train", model, True)]
        )

        f1 = slice_metrics(
            va.labels, snorkel_preds(model, va, "valid"), va.membership, names, bcfg.labels
        )["overall"]["macro_f1"]
        if f1 > best[0]:
            best = (f1, snorkel_preds(model, te, "test"))
    return best[1]


rows = {"snorkel SliceAwareClassifier": [], "slicewise SBL": [], "slicewise baseline": []}
for seed in (0, 1, 2):
    rows["snorkel SliceAwareClassifier"].append(
        slice_metrics(te.labels, snorkel_run(seed), te.membership, names, bcfg.labels)
    )
    for kind, label in (("sbl", "slicewise SBL"), ("baseline", "slicewise baseline")):
        head = train_head(bcfg, kind, tr, va, seed=seed, progress=False).head
        rows[label].append(head_slice_metrics(bcfg, head, te))

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
    f"(n = {len(tr)} train / {len(te)} test rows)."
)
write("snorkel_anchor", {"summary": summary, "runs": rows}, "\n".join(lines))
