"""Length-bucketed batches vs one padded batch (issue 19, serving): raw ONNX Runtime on the
demo's int8 encoder, random test tweets, the service's layout (single-threaded calls), batch
sizes the adaptive batcher forms under load. Bucketing is `service.runtime.length_buckets`.
Interleaved rounds; texts per CPU second (the machine is shared, so CPU time is the steadier
measure) and per wall second.

Run: .venv/bin/python bench/bench_buckets.py [--encoder FILE] -> bench/results/buckets.{json,md}
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from common import write

from service.runtime import length_buckets
from training.backbone import encoder_onnx, load_tokenizer
from training.config import load_config
from training.data import load_dataset, split_dataset

parser = argparse.ArgumentParser()
parser.add_argument("--encoder", type=Path, default=None, help="an exported int8 encoder")
parser.add_argument("--rounds", type=int, default=5)
args = parser.parse_args()
cfg = load_config()
path = args.encoder or encoder_onnx(cfg.backbone, Path(tempfile.mkdtemp()), int8=True)
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
tok = load_tokenizer(cfg.backbone)
texts = split_dataset(load_dataset(cfg), cfg.dataset.split).test["text"].tolist()
ids = [tok(t, truncation=True, max_length=cfg.backbone.max_length)["input_ids"] for t in texts]
rng = np.random.default_rng(0)


def feeds(batch: list[int], bucketed: bool) -> list[dict[str, np.ndarray]]:
    lengths = np.array([len(ids[i]) for i in batch])
    groups = length_buckets(lengths) if bucketed else [np.arange(len(batch))]
    out = []
    for g in groups:
        width = int(lengths[g].max())
        x = np.zeros((len(g), width), dtype=np.int64)
        for r, i in enumerate(g):
            x[r, : lengths[i]] = ids[batch[i]]
        out.append({"input_ids": x, "attention_mask": (x != 0).astype(np.int64)})
    return out


rows = {}
for size in (8, 16, 32, 64):
    batches = [rng.integers(0, len(texts), size).tolist() for _ in range(max(20, 640 // size))]
    prepared = {
        mode: [feeds(b, mode == "bucketed") for b in batches] for mode in ("padded", "bucketed")
    }
    padded_tokens = sum(f["input_ids"].size for fs in prepared["padded"] for f in fs)
    bucket_tokens = sum(f["input_ids"].size for fs in prepared["bucketed"] for f in fs)
    calls = sum(len(fs) for fs in prepared["bucketed"]) / len(batches)
    runs: dict[str, dict[str, list[float]]] = {m: {"cpu": [], "wall": []} for m in prepared}
    for _ in range(args.rounds):
        for mode, all_feeds in prepared.items():
            t, c = time.perf_counter(), time.process_time()
            for fs in all_feeds:
                for f in fs:
                    sess.run(None, f)
            runs[mode]["wall"].append(size * len(batches) / (time.perf_counter() - t))
            runs[mode]["cpu"].append(size * len(batches) / (time.process_time() - c))
    med = {m: {k: statistics.median(v) for k, v in r.items()} for m, r in runs.items()}
    rows[size] = {
        "median": med,
        "runs": runs,
        "token_ratio": bucket_tokens / padded_tokens,
        "calls_per_batch": calls,
    }
    print(size, rows[size]["median"], rows[size]["token_ratio"], flush=True)

md = "\n".join(
    [
        "| batch | padded tokens kept | ORT calls per batch | padded: texts/CPU s | bucketed: texts/CPU s | **gain (CPU)** | gain (wall) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {s} | {r['token_ratio']:.0%} | {r['calls_per_batch']:.2f} | {r['median']['padded']['cpu']:.0f} | {r['median']['bucketed']['cpu']:.0f} | **{r['median']['bucketed']['cpu'] / r['median']['padded']['cpu'] - 1:+.1%}** | {r['median']['bucketed']['wall'] / r['median']['padded']['wall'] - 1:+.1%} |"
            for s, r in rows.items()
        ),
        "",
        f"Raw ONNX Runtime, int8 MiniLM encoder, one intra-op thread (the service's layout), random demo test tweets, {args.rounds} interleaved rounds, medians. Shared machine.",
    ]
)
write("buckets", {"encoder": str(path), "rows": rows}, md)
