"""GPU benchmark (issue 18), one run of `bench/gpu.sh` on a CUDA machine:

1. finetune mode on the demo: one seed per kind (baseline / SBL / MoA), seconds per epoch
   (validation included) and test macro-F1 (overall and monitored slices);
2. the MoA model of (1) exported as a bundle, then served by the real service on ONNX
   Runtime's CUDA provider, fp32 and fp16, at concurrency 32 (one text a request), next to raw
   ONNX Runtime on the same file and the same GPU (pre-tokenised batches of 64), interleaved.

`--dry-run` runs the same code on the CPU in about two minutes, on a tiny BERT and a tiny
synthetic dataset (the tests' fixtures), so the script is checked where there is no GPU.
Writes bench/results/gpu.json + .md (`--dry-run`: gpu-dry-run.*).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from common import ROOT, write
from loadgen import load, raw_ort_throughput, tokenised_batches

from slicewise.core import contracts as c
from slicewise.core.redis_server import LocalRedis
from slicewise.processes import BentoServer
from training.backbone import load_tokenizer
from training.config import ProjectConfig, load_config, parse_config
from training.evaluate import slice_metrics
from training.export import convert_fp16, export_bundle
from training.finetune import finetune
from training.train import prepare_data

parser = argparse.ArgumentParser()
parser.add_argument("--dry-run", action="store_true", help="tiny model on the CPU, seconds")
parser.add_argument("--seconds", type=float, default=15.0, help="length of one load round")
parser.add_argument("--rounds", type=int, default=3)
parser.add_argument("--epochs", type=int, default=None, help="finetune epochs (config default)")
parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp one)")
args = parser.parse_args()


def tiny_config(work: Path) -> ProjectConfig:
    """The tests' tiny project: a 2-layer BERT (hidden 32) and 600 synthetic texts."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    sys.path.insert(0, str(ROOT))
    from tests.conftest import TINY_BERT, make_tiny_dataset, tiny_config_dict
    from training.backbone import default_backbone_path

    backbone = work / "tiny-bert"
    tok = AutoTokenizer.from_pretrained(str(default_backbone_path()))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tok.vocab_size, **TINY_BERT)).save_pretrained(backbone)
    tok.save_pretrained(backbone)
    make_tiny_dataset().to_csv(work / "data.csv", index=False)
    return parse_config(tiny_config_dict(backbone, work / "data.csv", work), "tiny")


def device_name() -> str:
    import onnxruntime as ort
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA GPU (CPU)"
    return f"{gpu}; torch {torch.__version__}; onnxruntime {ort.__version__} {ort.get_available_providers()}"


def finetune_kinds(cfg: ProjectConfig, prepared) -> tuple[dict, dict]:
    """Finetune one seed of each kind; per-epoch seconds, test metrics; the trained models."""
    import torch

    test = prepared.splits["test"]
    rows, models = {}, {}
    for kind in ("baseline", "sbl", "moa"):
        epochs: list[dict] = []
        t0 = time.perf_counter()
        trained = finetune(
            cfg,
            kind,
            prepared,
            seed=0,
            progress=False,
            on_epoch=lambda e, s, f1, out=epochs: out.append(
                {"epoch": e, "seconds": s, "val_f1": f1}
            ),
        )
        total = time.perf_counter() - t0
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = trained.model.to(device).eval()
        tok = load_tokenizer(cfg.backbone)
        preds = []
        with torch.inference_mode():
            for s in range(0, len(test.texts), 256):
                enc = tok(
                    test.texts[s : s + 256],
                    padding=True,
                    truncation=True,
                    max_length=cfg.backbone.max_length,
                    return_tensors="pt",
                )
                preds.append(
                    model(enc["input_ids"].to(device), enc["attention_mask"].to(device))[0]
                    .argmax(1)
                    .cpu()
                    .numpy()
                )
        trained.model.cpu()
        metrics = slice_metrics(
            test.labels, np.concatenate(preds), test.membership, cfg.slice_names, cfg.labels
        )
        monitored = [metrics[s]["macro_f1"] for s in cfg.monitored_slices if s in metrics]
        rows[kind] = {
            "epochs": epochs,
            "seconds_per_epoch": statistics.median(e["seconds"] for e in epochs),
            "total_seconds": total,
            "best_epoch": trained.best_epoch,
            "test_macro_f1": metrics["overall"]["macro_f1"],
            "test_monitored_macro_f1": float(np.mean(monitored)) if monitored else float("nan"),
        }
        models[kind] = trained
        print(kind, rows[kind], flush=True)
    return rows, models


def serve_round(
    bundle_dir: Path, redis_url: str, texts: list[str], seconds: float, log: Path
) -> dict:
    """One load round on a fresh `bentoml serve` of `bundle_dir`; also the provider it reports."""
    env = {"SLICEWISE_MODEL_DIR": str(bundle_dir), "REDIS_URL": redis_url}
    with BentoServer(env, log_file=log) as server:
        asyncio.run(load(server.url, texts, min(3.0, seconds)))  # warm-up
        out = asyncio.run(load(server.url, texts, seconds))
        metrics = httpx.get(server.url + "/metrics", timeout=10).text
    info = [
        ln
        for ln in metrics.splitlines()
        if ln.startswith(c.MetricNames.MODEL_INFO + "{") and ln.endswith(" 1.0")
    ]
    out["provider"] = info[0].split('provider="')[1].split('"')[0] if info else "unknown"
    return out


def main() -> None:
    import onnxruntime as ort

    work = args.work or Path(tempfile.mkdtemp(prefix="slicewise-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    cfg = tiny_config(work) if args.dry_run else load_config()
    if args.epochs:
        cfg = cfg.model_copy(
            update={"train": cfg.train.model_copy(update={"finetune_epochs": args.epochs})}
        )
    cfg = cfg.model_copy(
        update={
            "export": cfg.export.model_copy(
                update={"quantize": False, "fp16": True, "output_dir": work / "bundle"}
            )
        }
    )
    t0 = time.perf_counter()
    prepared = prepare_data(cfg, progress=False, embed=False)
    prep_s = time.perf_counter() - t0
    finetuned, models = finetune_kinds(cfg, prepared)

    bundle = export_bundle(
        cfg, models["moa"], prepared, work / "bundle-fp16", register=False, progress=False
    )
    if not (bundle.path / c.MODEL_FP16_ONNX).exists():
        convert_fp16(bundle.path / c.MODEL_ONNX, bundle.path / c.MODEL_FP16_ONNX)
    fp32_dir = work / "bundle-fp32"
    shutil.copytree(bundle.path, fp32_dir, ignore=shutil.ignore_patterns(c.MODEL_FP16_ONNX))
    variants = {
        "fp32": (fp32_dir, fp32_dir / c.MODEL_ONNX),
        "fp16": (bundle.path, bundle.path / c.MODEL_FP16_ONNX),
    }

    texts = prepared.splits["test"].texts
    tok = load_tokenizer(cfg.backbone)
    feeds = tokenised_batches(tok, texts, 64, cfg.backbone.max_length, 10 if args.dry_run else 60)
    providers = (
        ("CUDAExecutionProvider", "CPUExecutionProvider")
        if "CUDAExecutionProvider" in ort.get_available_providers()
        else ("CPUExecutionProvider",)
    )
    seconds = 3.0 if args.dry_run else args.seconds
    rounds = 1 if args.dry_run else args.rounds
    served: dict[str, list[dict]] = {k: [] for k in variants}
    raw: dict[str, list[float]] = {k: [] for k in variants}
    rds = LocalRedis().start()
    try:
        for _ in range(rounds):  # interleaved: each service, then raw ORT on its file
            for name, (folder, model_file) in variants.items():
                served[name].append(
                    serve_round(folder, rds.url, texts, seconds, work / f"serve-{name}.log")
                )
                raw[name].append(raw_ort_throughput(model_file, feeds, providers=providers))
                print(name, served[name][-1], f"raw {raw[name][-1]:.0f} texts/s", flush=True)
    finally:
        rds.stop()
    med = {
        k: {
            m: statistics.median(r[m] for r in v)
            for m in ("rps", "p50_ms", "p95_ms", "p99_ms", "errors")
        }
        | {"provider": v[0]["provider"]}
        for k, v in served.items()
    }
    raw_med = {k: statistics.median(v) for k, v in raw.items()}

    dev = device_name()
    lines = [
        f"Device: {dev}."
        + (
            " **Dry run** (tiny model, CPU): checks the script, not a GPU result."
            if args.dry_run
            else ""
        ),
        "",
        f"| finetune, 1 seed, {cfg.train.finetune_epochs} epochs max | s/epoch (median, incl. validation) | total s | best epoch | test macro-F1 | monitored slices macro-F1 |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {k} | {r['seconds_per_epoch']:.1f} | {r['total_seconds']:.0f} | {r['best_epoch']} | {r['test_macro_f1']:.4f} | {r['test_monitored_macro_f1']:.4f} |"
            for k, r in finetuned.items()
        ),
        "",
        f"| serving MoA, concurrency 32, 1 text/request, {rounds}×{seconds:.0f}s interleaved | provider | req/s | p50 ms | p95 ms | p99 ms | errors | raw ORT texts/s (batch 64) | service / raw |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {k} | {m['provider']} | {m['rps']:.0f} | {m['p50_ms']:.1f} | {m['p95_ms']:.1f} | {m['p99_ms']:.1f} | {m['errors']:.0f} | {raw_med[k]:.0f} | {m['rps'] / raw_med[k]:.1%} |"
            for k, m in med.items()
        ),
        "",
        f"Data prepared (load, split, slice; no embedding) in {prep_s:.1f} s. Raw ORT: pre-tokenised random test texts, one `session.run` at a time.",
    ]
    write(
        "gpu-dry-run" if args.dry_run else "gpu",
        {
            "device": dev,
            "dry_run": args.dry_run,
            "finetune": finetuned,
            "serving": served,
            "serving_median": med,
            "raw_ort_texts_per_s": raw,
            "raw_ort_median": raw_med,
            "prepare_seconds": prep_s,
        },
        "\n".join(lines),
    )


main()
