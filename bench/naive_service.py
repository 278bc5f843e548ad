"""The naive comparison service: the same model in PyTorch eager, one request at a time, no
batching (a Starlette app under uvicorn with a lock around the model call).

Run by bench_service.py: python bench/naive_service.py CHECKPOINT PORT
"""

from __future__ import annotations

import asyncio
import sys

import torch
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
from training.backbone import load_tokenizer
from training.train import load_checkpoint

cfg, trained = load_checkpoint(sys.argv[1])
model, tok = trained.model.eval(), load_tokenizer(cfg.backbone)
lock = asyncio.Lock()


async def predict(request: Request) -> JSONResponse:
    texts = (await request.json())["texts"]
    async with lock:  # one request at a time
        enc = tok(
            texts,
            padding=True,
            truncation=True,
            max_length=cfg.backbone.max_length,
            return_tensors="pt",
        )
        with torch.inference_mode():
            probs, member, _ = model(enc["input_ids"], enc["attention_mask"])
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
