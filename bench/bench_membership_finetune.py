"""Finetune mode, learned vs rule membership: baseline / SBL / MoA on a subsample of the demo.

MiniLM and the head trained end to end on `TRAIN_ROWS` stratified training tweets for
`EPOCHS` epochs, one seed, early stopping on `VAL_ROWS` validation tweets; scored on the whole
test split (overall, each monitored slice, mean over monitored slices). The baseline's
combiner never reads the membership, so baseline × rules is baseline × learned by construction
(tests/model/test_heads.py checks it) and is trained once. Each model's result is written as
soon as it is done, so a run cut short still leaves what finished.

Run: .venv/bin/python bench/bench_membership_finetune.py [--train-rows 6000] [--epochs 2]
  -> bench/results/membership_finetune.{json,md}
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import write

from training.backbone import load_tokenizer
from training.config import load_config
from training.evaluate import monitored_mean, slice_metrics
from training.finetune import finetune
from training.train import PreparedData, prepare_data

RUNS = [("baseline", "learned"), ("sbl", "learned"), ("sbl", "rules"), ("moa", "learned")]
RUNS.append(("moa", "rules"))


def stratified(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """`n` row indices with the label shares of `labels`."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    if n >= len(idx):
        return idx
    keep, _ = train_test_split(idx, train_size=n, stratify=labels, random_state=seed)
    return np.sort(keep)


@torch.inference_mode()
def predict(model: torch.nn.Module, tokenizer, texts, membership, max_length: int) -> np.ndarray:
    """Predicted class per text (the model routes on `membership` when it uses rules)."""
    model.eval()
    preds = []
    for s in range(0, len(texts), 128):
        enc = tokenizer(
            texts[s : s + 128],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        rules = torch.from_numpy(membership[s : s + 128].astype(np.float32))
        probs, _, _ = model(enc["input_ids"], enc["attention_mask"], rules)
        preds.append(probs.argmax(1).numpy())
    return np.concatenate(preds)


def table(rows: dict, monitored: list[str]) -> str:
    """Markdown: one row per (kind, membership), macro-F1 and accuracy per column."""
    cols = ["overall", *monitored]
    head = "| kind | membership | " + " | ".join(f"{c} F1 / acc" for c in cols)
    lines = [
        head + " | mean monitored F1 / acc | epochs | s / epoch |",
        "|---|---|" + "---:|" * (len(cols) + 3),
    ]
    for r in rows.values():
        m = r["test"]
        cells = [f"{m[c]['macro_f1']:.4f} / {m[c]['accuracy']:.4f}" for c in cols]
        cells.append(f"{r['monitored_macro_f1']:.4f} / {r['monitored_accuracy']:.4f}")
        lines.append(
            f"| {r['kind']} | {r['membership']} | "
            + " | ".join(cells)
            + f" | {r['epochs']} | {r['seconds_per_epoch']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Train the runs one after another and rewrite the result files after each."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-rows", type=int, default=6000)
    ap.add_argument("--val-rows", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--test-rows", type=int, default=0, help="0: the whole test split")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config()
    cfg.train.mode = "finetune"
    cfg.train.finetune_epochs = args.epochs
    full = prepare_data(cfg, progress=False, embed=False)
    tr = full.splits["train"].subset(stratified(full.splits["train"].labels, args.train_rows, 0))
    va = full.splits["validation"].subset(
        stratified(full.splits["validation"].labels, args.val_rows, 0)
    )
    test = full.splits["test"]
    if args.test_rows:
        test = test.subset(stratified(test.labels, args.test_rows, 0))
    prepared = PreparedData(cfg, {**full.splits, "train": tr, "validation": va}, full.frames, "")
    tokenizer = load_tokenizer(cfg.backbone)
    rows: dict[str, dict] = {}
    for kind, membership in RUNS:
        run_cfg = cfg.model_copy(deep=True)
        run_cfg.train.membership = membership  # type: ignore[assignment]
        t0 = time.perf_counter()
        trained = finetune(run_cfg, kind, prepared, seed=0, progress=True)  # type: ignore[arg-type]
        train_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        pred = predict(
            trained.model, tokenizer, test.texts, test.membership, cfg.backbone.max_length
        )
        metrics = slice_metrics(test.labels, pred, test.membership, cfg.slice_names, cfg.labels)
        rows[f"{kind}/{membership}"] = {
            "kind": kind,
            "membership": membership,
            "test": metrics,
            "monitored_macro_f1": monitored_mean(metrics, cfg.monitored_slices),
            "monitored_accuracy": monitored_mean(metrics, cfg.monitored_slices, "accuracy"),
            "val_macro_f1": trained.val_macro_f1,
            "best_epoch": trained.best_epoch,
            "epochs": args.epochs,
            "train_seconds": train_s,
            "seconds_per_epoch": train_s / args.epochs,
            "test_predict_seconds": time.perf_counter() - t1,
        }
        md = (
            f"Finetune mode (MiniLM + head end to end), {len(tr)} training tweets (stratified "
            f"subsample), {args.epochs} epochs, seed 0, early stopping on {len(va)} validation "
            f"tweets, test split ({len(test)} tweets). Baseline × rules equals baseline × learned "
            "by construction (its combiner never reads membership). s / epoch includes the "
            f"validation pass; torch on {args.threads} threads, on a machine shared by 7 "
            "engineers (times are noisy).\n\n" + table(rows, cfg.monitored_slices)
        )
        write(
            "membership_finetune",
            {
                "train_rows": len(tr),
                "val_rows": len(va),
                "epochs": args.epochs,
                "max_length": cfg.backbone.max_length,
                "runs": rows,
            },
            md,
        )


if __name__ == "__main__":
    main()
