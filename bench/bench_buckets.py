"""Length-bucketed batches vs one padded batch (issue 19, serving): raw ONNX Runtime on the
demo's int8 encoder, random test tweets, the service's layout (single-threaded calls), batch
sizes the adaptive batcher forms under load. Bucketing is `service.runtime.length_buckets`,
with groups of at least 8 rows and of at least 4 (its default: the better one here).
Interleaved rounds; texts per CPU second (the machine is shared, so CPU time is the steadier
measure) and per wall second.

Run: .venv/bin/python bench/bench_buckets.py [--encoder FILE] -> bench/results/buckets.{json,md}
"""

from __future__ import annotations

import argparse
import inspect
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


def feeds(batch: list[int], min_size: int | None) -> list[dict[str, np.ndarray]]:
    """One padded batch (`min_size` None), or `length_buckets` of at least `min_size` rows."""
    lengths = np.array([len(ids[i]) for i in batch])
    groups = [np.arange(len(batch))] if min_size is None else length_buckets(lengths, min_size)
    out = []
    for g in groups:
        width = int(lengths[g].max())
        x = np.zeros((len(g), width), dtype=np.int64)
        for r, i in enumerate(g):
            x[r, : lengths[i]] = ids[batch[i]]
        out.append({"input_ids": x, "attention_mask": (x != 0).astype(np.int64)})
    return out


MODES = {"padded": None, "buckets of >= 8": 8, "buckets of >= 4": 4}  # name: min_size
DEFAULT = f"buckets of >= {inspect.signature(length_buckets).parameters['min_size'].default}"

rows = {}
for size in (4, 8, 16, 32, 64):
    batches = [rng.integers(0, len(texts), size).tolist() for _ in range(max(20, 640 // size))]
    prepared = {mode: [feeds(b, m) for b in batches] for mode, m in MODES.items()}
    tokens = {m: sum(f["input_ids"].size for fs in p for f in fs) for m, p in prepared.items()}
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
        "token_ratio": {m: tokens[m] / tokens["padded"] for m in MODES},
        "calls_per_batch": {
            m: sum(len(fs) for fs in p) / len(batches) for m, p in prepared.items()
        },
    }
    print(size, rows[size]["median"], rows[size]["token_ratio"], flush=True)


def cell(r: dict, mode: str) -> str:
    gain = r["median"][mode]["cpu"] / r["median"]["padded"]["cpu"] - 1
    text = (
        f"{r['median'][mode]['cpu']:.0f} ({gain:+.1%}; {r['token_ratio'][mode]:.0%} of the "
        f"tokens, {r['calls_per_batch'][mode]:.2f} calls)"
    )
    return f"**{text}**" if mode == DEFAULT else text


bucketed = [m for m in MODES if m != "padded"]
md = "\n".join(
    [
        "| batch | padded: texts/CPU s | "
        + " | ".join(
            f"{m}{' (the default)' if m == DEFAULT else ''}: texts/CPU s" for m in bucketed
        )
        + " |",
        "|---:|---:|" + "---:|" * len(bucketed),
        *(
            f"| {s} | {r['median']['padded']['cpu']:.0f} | "
            + " | ".join(cell(r, m) for m in bucketed)
            + " |"
            for s, r in rows.items()
        ),
        "",
        "Raw ONNX Runtime, int8 MiniLM encoder, one intra-op thread (the service's layout), random "
        f"demo test tweets, {args.rounds} interleaved rounds, medians; in brackets the gain over "
        "one padded batch, the tokens run (padding included) and the ONNX Runtime calls per "
        "batch. Shared machine.",
    ]
)
write("buckets", {"encoder": str(path), "default": DEFAULT, "rows": rows}, md)
