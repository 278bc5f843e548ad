"""The naive comparison service: the same model, one request at a time, no batching (a
Starlette app under uvicorn with a lock around the model call). The model runs in PyTorch eager
(fp32), or, given an ONNX file, in ONNX Runtime on that file (e.g. the bundle's int8 model: the
naive row beside slicewise int8).

Run by bench_service.py: python bench/naive_service.py CHECKPOINT PORT [MODEL.onnx]
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import numpy as np
import torch
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from training.backbone import load_tokenizer
from training.export import OnnxRunner, rules_fn
from training.train import load_checkpoint

cfg, trained = load_checkpoint(sys.argv[1])
model, tok = trained.model.eval(), load_tokenizer(cfg.backbone)
lock = asyncio.Lock()
# a head that routes on rules (train.membership: rules) takes the texts' exact membership too
rules = rules_fn(cfg) if model.head.uses_rules else None
runner = None
if len(sys.argv) > 3:  # ONNX Runtime on the given file, one request at a time
    runner = OnnxRunner.open(Path(sys.argv[3]), tok, cfg.backbone.max_length, rules)


def run_model(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, slice membership) for one request's texts."""
    if runner is not None:
        out = runner.run(texts)
        return out["probabilities"], out["slice_membership"]
    enc = tok(
        texts,
        padding=True,
        truncation=True,
        max_length=cfg.backbone.max_length,
        return_tensors="pt",
    )
    slice_rules = None if rules is None else torch.from_numpy(rules(texts))
    with torch.inference_mode():
        probs, member, _ = model(enc["input_ids"], enc["attention_mask"], slice_rules)
    return probs.numpy(), member.numpy()


async def predict(request: Request) -> JSONResponse:
    texts = (await request.json())["texts"]
    async with lock:  # one request at a time
        probs, member = run_model(texts)
    return JSONResponse(
        {
            "predictions": [
                {"label": cfg.labels[int(p.argmax())], "slices": m.tolist()}
                for p, m in zip(probs, member, strict=True)
            ]
        }
    )


uvicorn.run(
    Starlette(routes=[Route("/predict", predict, methods=["POST"])]),
    host="127.0.0.1",
    port=int(sys.argv[2]),
    log_level="warning",
)
