"""Frozen-mode embedding through ONNX Runtime (issue 19), on the demo, 2 CPU cores:

1. speed: torch eager vs ONNX Runtime fp32 vs int8 on the same 1500 test tweets (interleaved
   repeats, median), then the whole frozen demo training from a cold cache as `make run` does
   it: load + split + slice, encoder export (once), embed ~38k texts with the configured
   runtime, train the exported head kind;
2. quality: MoA heads trained on int8 vs fp32 embeddings (3 seeds), both *served int8* (the
   int8 bundle runs the int8 encoder and the fp32 head, so served = head on int8 embeddings of
   the test split), overall and monitored-slice macro-F1.

Writes bench/results/embed.{json,md}. The project's embedding cache is only read (fp32
embeddings, when it holds them): a fresh temporary cache holds everything else.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from common import write

from training.backbone import _cache_key, embed_texts, encoder_onnx
from training.config import load_config
from training.evaluate import head_slice_metrics, monitored_mean
from training.train import EncodedSplit, prepare_data, train_head

parser = argparse.ArgumentParser()
parser.add_argument("--seeds", type=int, default=3)
parser.add_argument("--speed-texts", type=int, default=600)
parser.add_argument("--speed-rounds", type=int, default=1)
parser.add_argument(
    "--speed-only",
    action="store_true",
    help="only the runtime speed on --speed-texts texts (CPU seconds), with the whole-demo embedding "
    "time extrapolated from it: for a machine too loaded to embed 38k texts three times",
)
parser.add_argument("--cache", type=Path, default=None, help="reuse this cache's encoder export")
args = parser.parse_args()
cfg = load_config()
project_cache = cfg.train.cache_dir  # read-only here
cold = args.cache or Path(tempfile.mkdtemp(prefix="slicewise-cold-cache-"))


def runtime_speed(sample: list[str], cache: Path) -> dict[str, list[float]]:
    """Texts per CPU second of each embedding runtime on `sample`, interleaved rounds (the
    encoder export in `cache` is kept, the embeddings are deleted after each run)."""
    speed: dict[str, list[float]] = {"torch": [], "onnx": [], "onnx-int8": []}
    for _ in range(args.speed_rounds):
        for rt in speed:
            c = cfg.backbone.model_copy(update={"embed_runtime": rt})
            t = time.process_time()
            embed_texts(
                c,
                sample,
                cfg.train.embed_batch_size,
                cache_dir=None if rt == "torch" else cache,
                progress=False,
            )
            speed[rt].append(len(sample) / (time.process_time() - t))
            for f in cache.glob("emb-*.npy"):
                f.unlink()
    return speed


cfg.train.cache_dir = cold
runtime = cfg.backbone.embed_runtime

if args.speed_only:
    from training.data import load_dataset, split_dataset

    frames = split_dataset(load_dataset(cfg), cfg.dataset.split)
    n_all = sum(len(f) for f in (frames.train, frames.validation, frames.test, frames.reference))
    sample = frames.test["text"].tolist()[: args.speed_texts]
    c0 = time.process_time()
    encoder_onnx(cfg.backbone, cold, int8=True)
    export_cpu = time.process_time() - c0
    speed = runtime_speed(sample, cold)
    tps = {k: statistics.median(v) for k, v in speed.items()}
    est = {k: n_all / v for k, v in tps.items()}
    md = "\n".join(
        [
            f"| runtime | texts per CPU second ({len(sample)} test tweets, batch {cfg.train.embed_batch_size}) | vs torch | embed all {n_all} demo texts: CPU s (÷ 2 cores) |",
            "|---|---:|---:|---:|",
            *(
                f"| {k} | {v:.0f} | {v / tps['torch']:.2f}× | {est[k]:.0f} ({est[k] / 2:.0f}) |"
                for k, v in tps.items()
            ),
            "",
            f"Encoder export (once per backbone, fp32 + int8): {export_cpu:.0f} CPU s{' (already cached)' if export_cpu < 2 else ''}. "
            f"**Speed only, extrapolated**: this machine (2 cores) ran at a load of 25-35 from other users' jobs, so the whole cold-cache frozen training "
            "(load, split, slice, embed 38k, train the head) and the int8- vs fp32-trained head comparison of `bench/bench_embed.py` could not run here; "
            "`bench/bench_embed.py` without `--speed-only` measures both. Per-text CPU rates on the shared machine.",
        ]
    )
    write(
        "embed",
        {
            "speed_only": True,
            "texts_per_cpu_s": tps,
            "runs": speed,
            "estimated_cpu_s_all": est,
            "export_cpu_s": export_cpu,
            "texts": n_all,
        },
        md,
    )
    raise SystemExit(0)

# 1. whole frozen demo training, cold cache, as `slicewise train` runs it; wall and CPU seconds
# (the machine is shared: CPU seconds / 2 estimates the wall time on 2 idle cores)
stages: dict[str, dict[str, float]] = {}
clock = [time.perf_counter(), time.process_time()]


def stage(name: str) -> None:
    now = [time.perf_counter(), time.process_time()]
    stages[name] = {"wall": now[0] - clock[0], "cpu": now[1] - clock[1]}
    clock[:] = now


t0, c0 = time.perf_counter(), time.process_time()
encoder_onnx(cfg.backbone, cold, int8=runtime == "onnx-int8")
stage("export the encoder to ONNX (once per backbone)")
prep = prepare_data(cfg, progress=False)
stage(
    f"load + split + slice again, embed {sum(len(s) for s in prep.splits.values())} texts ({runtime})"
)
train_head(cfg, cfg.train.kind, prep.splits["train"], prep.splits["validation"], progress=False)  # type: ignore[arg-type]
stage(f"train the {cfg.train.kind} head")
total = {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}
print(stages, total, flush=True)

# 2. speed of the three runtimes on the same texts, interleaved
sample = prep.splits["test"].texts[: args.speed_texts]
speed = runtime_speed(sample, cold / "speed")
tps = {k: statistics.median(v) for k, v in speed.items()}
print(tps, flush=True)

# 3. quality: trained on int8 vs fp32 embeddings, served int8. fp32 embeddings: torch eager
# (ONNX Runtime fp32 gives the same to 1e-4, tests/unit/test_backbone.py), read from the shared
# project's embedding cache when it holds them (never written here), else computed in the cold
# cache.
emb = {"onnx-int8": prep}
shared = Path(project_cache)
cfg.backbone.embed_runtime = "torch"
cfg.train.cache_dir = (
    shared
    if shared.is_dir()
    and all(
        (shared / f"emb-{_cache_key(cfg.backbone, s.texts)}.npy").exists()
        for s in prep.splits.values()
    )
    else cold
)
print("fp32 embeddings from", cfg.train.cache_dir, flush=True)
emb["fp32"] = prepare_data(cfg, progress=False)
cfg.backbone.embed_runtime, cfg.train.cache_dir = runtime, cold
served = emb["onnx-int8"].splits["test"]
quality: dict[str, list[dict]] = {"onnx-int8": [], "fp32": []}
for seed in range(args.seeds):
    for rt, p in emb.items():
        res = train_head(
            cfg, "moa", p.splits["train"], p.splits["validation"], seed=seed, progress=False
        )
        m_int8 = head_slice_metrics(cfg, res.head, served)
        m_fp32 = head_slice_metrics(cfg, res.head, emb["fp32"].splits["test"])
        quality[rt].append(
            {
                "seed": seed,
                "served_int8_overall": m_int8["overall"]["macro_f1"],
                "served_int8_monitored": monitored_mean(m_int8, cfg.monitored_slices),
                "served_fp32_overall": m_fp32["overall"]["macro_f1"],
                "served_fp32_monitored": monitored_mean(m_fp32, cfg.monitored_slices),
            }
        )
        print(rt, quality[rt][-1], flush=True)
assert isinstance(served, EncodedSplit)


def mean(rt: str, key: str) -> tuple[float, float]:
    v = [r[key] for r in quality[rt]]
    return 100 * float(np.mean(v)), 100 * float(np.std(v))


names = {
    "onnx-int8": "int8 embeddings (ONNX Runtime)",
    "fp32": "fp32 embeddings (torch; = ORT fp32 to 1e-4)",
}
md = "\n".join(
    [
        "| frozen demo training, cold cache (as `slicewise train`; shared machine) | wall s | CPU s |",
        "|---|---:|---:|",
        *(f"| {k} | {v['wall']:.1f} | {v['cpu']:.1f} |" for k, v in stages.items()),
        f"| **total** | **{total['wall']:.0f}** ({total['wall'] / 60:.2f} min) | {total['cpu']:.0f} (÷ 2 cores: {total['cpu'] / 120:.2f} min) |",
        "",
        f"Embedding speed, same {len(sample)} test tweets, batch {cfg.train.embed_batch_size}, {args.speed_rounds} interleaved round(s) (texts per CPU second, median): "
        + ", ".join(f"{k} **{v:.0f}**" for k, v in tps.items())
        + f" (int8 {tps['onnx-int8'] / tps['torch']:.2f}× torch eager, fp32 {tps['onnx'] / tps['torch']:.2f}×).",
        "",
        "| MoA head trained on (3 seeds, mean ± std, macro-F1 points on test) | served int8: overall | served int8: monitored slices | served fp32: overall | served fp32: monitored slices |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {names[rt]} | "
            + " | ".join(
                "{:.2f} ± {:.2f}".format(*mean(rt, k))
                for k in (
                    "served_int8_overall",
                    "served_int8_monitored",
                    "served_fp32_overall",
                    "served_fp32_monitored",
                )
            )
            + " |"
            for rt in quality
        ),
    ]
)
write(
    "embed",
    {
        "stages": stages,
        "total_seconds": total,
        "runtime": runtime,
        "texts_per_s": tps,
        "speed_runs": speed,
        "quality": quality,
    },
    md,
)
