"""Torch eager vs ONNX Runtime fp32 (fused) vs int8 on the demo model, batch 1 and 32.

Engines run interleaved in blocks of 10 calls on the same inputs (order rotating; each block
starts with one untimed call) and medians are reported. Alternating engines call by call made
torch eager look ~4x slower at batch 1 than it serves (bench_service's naive service): each
engine's thread pool still spins after its call and slows the next engine down.

The int8 quality loss is measured here on the test split and on the validation split (a second
sample): both files through ONNX Runtime. (The bundle's eval.json has the served int8 file only.)
Needs the demo bundle: `slicewise export` (or `make run` once).

Run: .venv/bin/python bench/bench_onnx.py  -> bench/results/onnx.{json,md}
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from common import ROOT, write

from slicewise.core import contracts as c
from training.config import load_config
from training.data import load_dataset, split_dataset
from training.evaluate import monitored_mean, slice_metrics
from training.export import OnnxRunner
from training.train import load_checkpoint, prepare_data

bundle = c.Bundle.load(ROOT / ".slicewise" / "bundle")
cfg = load_config()
ckpt = next((ROOT / ".slicewise" / "checkpoints").glob(f"*-{bundle.manifest.version}.pt"))
_, trained = load_checkpoint(ckpt)
model = trained.model.eval()
texts = split_dataset(load_dataset(cfg), cfg.dataset.split).test["text"].tolist()
fp32 = OnnxRunner.open(
    bundle.path / c.MODEL_ONNX, None, cfg.backbone.max_length
)  # tokenised here below
int8 = OnnxRunner.open(bundle.path / c.MODEL_INT8_ONNX, None, cfg.backbone.max_length)
from training.backbone import load_tokenizer  # noqa: E402

tok = load_tokenizer(cfg.backbone)
rng = np.random.default_rng(0)


def batches(size: int, n: int) -> list[dict[str, np.ndarray]]:
    out = []
    for _ in range(n):
        chosen = [texts[i] for i in rng.choice(len(texts), size, replace=False)]
        enc = tok(
            chosen,
            padding=True,
            truncation=True,
            max_length=cfg.backbone.max_length,
            return_tensors="np",
        )
        out.append({k: enc[k].astype(np.int64) for k in c.INPUT_NAMES})
    return out


def run_torch(feeds):
    with torch.inference_mode():
        model(torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"]))


engines = {
    "torch eager": run_torch,
    "onnx fp32": lambda f: fp32.session.run(None, f),
    "onnx int8": lambda f: int8.session.run(None, f),
}
results = {}
BLOCK = 10  # calls in a row per engine: its thread pool is warm, the others' have gone quiet
for size, n in ((1, 200), (32, 40)):
    data = batches(size, n)
    times = {name: [] for name in engines}
    for start in range(0, n, BLOCK):
        names = list(engines)
        k = (start // BLOCK) % len(names)
        for name in names[k:] + names[:k]:  # rotate the order: no engine always goes first
            engines[name](data[start])  # one untimed call: wakes this engine's threads
            for feeds in data[start : start + BLOCK]:
                t0 = time.perf_counter()
                engines[name](feeds)
                times[name].append(time.perf_counter() - t0)
    results[size] = {name: statistics.median(v) * 1000 for name, v in times.items()}

mon = bundle.manifest.monitored_slices
splits = prepare_data(cfg, progress=False, embed=False).splits
quality: dict[str, dict] = {}
for split in ("test", "validation"):
    data = splits[split]
    quality[split] = {}
    for name, path in (("slices", c.MODEL_ONNX), ("int8_slices", c.MODEL_INT8_ONNX)):
        out = OnnxRunner.open(bundle.path / path, tok, cfg.backbone.max_length).run(data.texts)
        quality[split][name] = slice_metrics(
            data.labels,
            out["probabilities"].argmax(1),
            data.membership,
            cfg.slice_names,
            cfg.labels,
        )
ev = quality["test"]
lines = [
    "| batch | torch eager (ms) | ONNX fp32 (ms) | ONNX int8 (ms) | fp32 vs torch | int8 speed-up vs fp32 |",
    "|---:|---:|---:|---:|---:|---:|",
]
for size, r in results.items():
    lines.append(
        f"| {size} | {r['torch eager']:.2f} | {r['onnx fp32']:.2f} | {r['onnx int8']:.2f} | "
        f"{r['torch eager'] / r['onnx fp32']:.2f}× faster | {r['onnx fp32'] / r['onnx int8']:.2f}× |"
    )
lines += [
    "",
    "| int8 quality: macro-F1 loss vs fp32 (points) | "
    + " | ".join(f"{split} (fp32 → int8)" for split in quality)
    + " |",
    "|---|---:|---:|",
]
for s in ["overall", *mon]:
    cells = [
        f"{100 * (q['slices'][s]['macro_f1'] - q['int8_slices'][s]['macro_f1']):+.2f} "
        f"({q['slices'][s]['macro_f1']:.4f} → {q['int8_slices'][s]['macro_f1']:.4f})"
        for q in quality.values()
    ]
    lines.append(f"| {s} | " + " | ".join(cells) + " |")
lines.append(
    f"\nMedian latency of the model call (pre-tokenised inputs, length-padded per batch), interleaved runs; "
    f"fused ops in model.onnx: {bundle.manifest.evaluation.get('fused_ops')}."
)
write(
    "onnx",
    {
        "latency_ms": results,
        "quality": {
            split: {
                kind: {s: q[kind][s]["macro_f1"] for s in ["overall", *mon]}
                for kind in ("slices", "int8_slices")
            }
            for split, q in quality.items()
        },
        "monitored_mean_fp32": monitored_mean(ev["slices"], mon),
        "monitored_mean_int8": monitored_mean(ev["int8_slices"], mon),
    },
    "\n".join(lines),
)
