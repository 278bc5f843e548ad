"""Every consumer of a model that routes on rules (`train.membership: rules`) feeds it the texts'
exact slice membership: salience (torch, integrated gradients) and the naive comparison service
of bench_service.py (torch eager and ONNX Runtime), on the tiny model."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from slicewise.core import contracts as c
from slicewise.core.redis_server import free_port
from training.backbone import load_tokenizer
from training.export import export_bundle, rules_fn
from training.salience import SalienceError, explain
from training.train import train_model

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["not good at all", "is it ok?", "fine", "i do not know, is it?", "a long plain text here"]


@pytest.fixture(scope="module")
def rules_model(tiny_config, tiny_prepared, tmp_path_factory):
    """An SBL head routing on rules (tiny BERT), checkpointed and exported."""
    work = tmp_path_factory.mktemp("rules-consumers")
    cfg = tiny_config.model_copy(deep=True)
    cfg.train.membership = "rules"
    cfg.train.checkpoint_dir = work / "checkpoints"  # not the shared tiny one: other tests
    # take the newest checkpoint there
    trained = train_model(cfg, "sbl", seed=0, prepared=tiny_prepared, progress=False)
    out = work / "bundle"
    bundle = export_bundle(cfg, trained, tiny_prepared, out, register=False, progress=False)
    assert trained.model.head.uses_rules and trained.checkpoint is not None
    return cfg, trained, bundle


def _torch(trained, cfg, texts: list[str], rules: np.ndarray) -> np.ndarray:
    tok = load_tokenizer(cfg.backbone)
    enc = tok(texts, padding=True, truncation=True, max_length=16, return_tensors="pt")
    with torch.inference_mode():
        probs, _, _ = trained.model(enc["input_ids"], enc["attention_mask"], torch.tensor(rules))
    return probs.numpy()


def test_salience_feeds_the_rules_and_explains_the_served_prediction(rules_model) -> None:
    cfg, trained, _ = rules_model
    tok = load_tokenizer(cfg.backbone)
    exact = rules_fn(cfg)(TEXTS)
    with pytest.raises(SalienceError, match=r"routes on rule membership.*slice_rules"):
        explain(trained.model, tok, TEXTS, 16, n_steps=4, progress=False)
    with pytest.raises(SalienceError, match=r"shape \(5, 2\); expected \(5, 3\)"):
        explain(trained.model, tok, TEXTS, 16, slice_rules=exact[:, :2], progress=False)
    sal = explain(
        trained.model, tok, TEXTS, 16, n_steps=8, batch_size=2, slice_rules=exact, progress=False
    )
    # the class explained is the one the model predicts with these rules
    np.testing.assert_array_equal(sal.predicted, _torch(trained, cfg, TEXTS, exact).argmax(1))
    assert [len(t) for t in sal.tokens] == [len(x.split()) for x in TEXTS]
    assert all(np.isfinite(v).all() for v in sal.ig)
    # the rules reach the model inside IG too: other membership, other attributions
    flipped = explain(
        trained.model, tok, TEXTS, 16, n_steps=8, slice_rules=1 - exact, progress=False
    )
    assert any(
        not np.allclose(a, b) for a, b in zip(sal.ig, flipped.ig, strict=True)
    ) or not np.array_equal(sal.predicted, flipped.predicted)


@pytest.mark.parametrize("onnx", [False, True])
def test_naive_service_feeds_the_rules(rules_model, onnx: bool) -> None:
    cfg, trained, bundle = rules_model
    port = free_port()
    cmd = [sys.executable, str(ROOT / "bench" / "naive_service.py"), str(trained.checkpoint)]
    cmd += [str(port)] + ([str(bundle.path / c.MODEL_ONNX)] if onnx else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                r = httpx.post(f"http://127.0.0.1:{port}/predict", json={"texts": TEXTS})
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read().decode() if proc.stdout else ""
                    pytest.fail(f"naive service did not start: {out[-2000:]}")
                time.sleep(0.5)
        assert r.status_code == 200, r.text
        want = _torch(trained, cfg, TEXTS, rules_fn(cfg)(TEXTS)).argmax(1)
        got = [cfg.labels.index(p["label"]) for p in r.json()["predictions"]]
        assert got == want.tolist()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
