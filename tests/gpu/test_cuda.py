"""CUDA paths: device-correct training code, the fp16 export, and (`gpu`-marked, skipped without
a CUDA GPU) ONNX Runtime's CUDA provider against torch on CUDA, finetuning on CUDA, and the
real service on the CUDA provider.

The CPU-side checks run everywhere: the loss and heads run on PyTorch's `meta` device, where a
tensor created without `device=` (on the CPU) fails to mix, exactly as it would on CUDA.
"""

from __future__ import annotations

import shutil

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from slicewise.core import contracts as c
from slicewise.processes import BentoServer
from training.backbone import load_tokenizer
from training.commentary import CommentaryNet
from training.export import OnnxRunner, convert_fp16
from training.model import SliceAwareHead, head_loss
from training.train import load_checkpoint

FRESH = ["never seen before: not bad at all", "what?", "x", "great great great love it a lot " * 3]
CUDA = ("CUDAExecutionProvider", "CPUExecutionProvider")


@pytest.mark.parametrize("kind", ["baseline", "sbl", "moa"])
@pytest.mark.parametrize("soft", [False, True])
def test_loss_and_heads_create_tensors_on_the_inputs_device(kind, soft) -> None:
    dev = torch.device("meta")
    head = SliceAwareHead(8, 3, 2, kind, 0.1, 1.0, 4).to(dev).train()
    y = torch.tensor([0, 1, 2, 0, 1], device=dev)
    target = torch.full((5, 3), 1 / 3, device=dev) if soft else y
    member = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0]], device=dev)
    for weight in (None, torch.ones(5, device=dev)):
        out = head(torch.ones(5, 8, device=dev))
        loss = head_loss(out, target, member, 1.0, 1.0, weight, kind != "baseline")
        assert loss.device == dev and loss.shape == ()
    comm = CommentaryNet(8, 3, 2).to(dev)
    assert comm(torch.ones(5, 8, device=dev), y, member, 0.5).device == dev


def test_weighted_loss_is_unchanged_by_the_device_safe_class_counts() -> None:
    """The class-balance normalisation (now index_add, was bincount) gives the same weights."""
    torch.manual_seed(0)
    head = SliceAwareHead(8, 3, 2, "sbl", 0.0, 1.0, 4).eval()
    y = torch.tensor([0, 0, 1, 2, 2, 2])
    member = torch.randint(0, 2, (6, 2))
    w = torch.tensor([1.0, 3.0, 2.0, 1.0, 1.0, 4.0])
    out = head(torch.randn(6, 8))
    # by hand: within each class the weights are scaled to mean 1
    norm = torch.tensor([0.5, 1.5, 1.0, 0.5, 0.5, 2.0])
    ce = torch.nn.functional.cross_entropy(out.logits, y, reduction="none")
    got = head_loss(out, y, member, 0.0, 0.0, w)
    torch.testing.assert_close(got, (norm * ce).mean())


def test_fp16_copy_keeps_io_types_and_matches_fp32(tiny_bundle, tiny_config, tmp_path) -> None:
    convert_fp16(tiny_bundle / c.MODEL_ONNX, tmp_path / c.MODEL_FP16_ONNX)
    model = onnx.load(str(tmp_path / c.MODEL_FP16_ONNX))
    kinds = {i.data_type for i in model.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in kinds and onnx.TensorProto.FLOAT not in kinds
    io = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]}
    assert io == {
        **dict.fromkeys(c.INPUT_NAMES, onnx.TensorProto.INT64),
        **dict.fromkeys(c.OUTPUT_NAMES, onnx.TensorProto.FLOAT),
    }
    tok = load_tokenizer(tiny_config.backbone)
    fp32 = OnnxRunner.open(tiny_bundle / c.MODEL_ONNX, tok, 16).run(FRESH)
    fp16 = OnnxRunner.open(tmp_path / c.MODEL_FP16_ONNX, tok, 16).run(FRESH)
    for name in c.OUTPUT_NAMES:
        np.testing.assert_allclose(fp16[name], fp32[name], atol=5e-3)
    assert c.Bundle.load(tiny_bundle).model_file(prefer_fp16=True).name == c.MODEL_ONNX


@pytest.mark.gpu
def test_cuda_export_parity_fp32_and_fp16(tiny_bundle, tiny_config, tmp_path) -> None:
    ckpt = sorted(tiny_config.train.checkpoint_dir.glob("tiny-moa-*.pt"))[-1]
    model = load_checkpoint(ckpt)[1].model.to("cuda").eval()
    tok = load_tokenizer(tiny_config.backbone)
    enc = tok(FRESH, padding=True, truncation=True, max_length=16, return_tensors="pt")
    with torch.inference_mode():
        want = [
            t.cpu().numpy() for t in model(enc["input_ids"].cuda(), enc["attention_mask"].cuda())
        ]
    convert_fp16(tiny_bundle / c.MODEL_ONNX, tmp_path / c.MODEL_FP16_ONNX)
    for path, tol in ((tiny_bundle / c.MODEL_ONNX, 1e-3), (tmp_path / c.MODEL_FP16_ONNX, 2e-2)):
        runner = OnnxRunner.open(path, tok, 16, providers=CUDA)
        assert runner.session.get_providers()[0] == "CUDAExecutionProvider"
        got = runner.run(FRESH, batch_size=len(FRESH))
        for name, w in zip(c.OUTPUT_NAMES, want, strict=True):
            np.testing.assert_allclose(got[name], w, atol=tol, err_msg=f"{path.name} {name}")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_finetune_reports_each_epoch_on_the_device(tiny_config, tiny_prepared, device) -> None:
    from training.finetune import finetune

    epochs: list[tuple[int, float, float]] = []
    trained = finetune(
        tiny_config,
        "moa",
        tiny_prepared,
        progress=False,
        device=device,
        on_epoch=lambda *e: epochs.append(e),
    )
    assert [e for e, _, _ in epochs] == list(range(len(epochs))) and epochs
    assert len(epochs) <= tiny_config.train.finetune_epochs and all(s > 0 for _, s, _ in epochs)
    assert max(f1 for _, _, f1 in epochs) == pytest.approx(trained.val_macro_f1)
    assert next(trained.model.parameters()).device.type == "cpu"


@pytest.mark.gpu
@pytest.mark.integration
def test_service_serves_on_the_cuda_provider(
    tiny_bundle, bentoml_home, redis_url, tmp_path
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    convert_fp16(bundle / c.MODEL_ONNX, bundle / c.MODEL_FP16_ONNX)
    env = {
        "SLICEWISE_MODEL_DIR": str(bundle),
        "REDIS_URL": redis_url,
        "BENTOML_HOME": str(bentoml_home),
    }
    with BentoServer(env, log_file=tmp_path / "serve.log") as server:
        r = httpx.post(server.url + "/predict", json={"texts": FRESH}, timeout=30)
        assert r.status_code == 200
        metrics = httpx.get(server.url + "/metrics", timeout=10).text
    info = [
        line for line in metrics.splitlines() if line.startswith(c.MetricNames.MODEL_INFO + "{")
    ]
    assert any(
        'provider="CUDAExecutionProvider"' in line and line.endswith(" 1.0") for line in info
    ), info
    probs = [
        [p["probabilities"][lab] for lab in c.Bundle.load(bundle).manifest.labels]
        for p in r.json()["predictions"]
    ]
    tok = load_tokenizer_for(bundle)
    want = OnnxRunner.open(bundle / c.MODEL_ONNX, tok, 16).run(FRESH)["probabilities"]
    np.testing.assert_allclose(probs, want, atol=2e-2)
    assert ort.get_device() == "GPU"


def load_tokenizer_for(bundle):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(bundle / c.TOKENIZER_DIR))
